"""A 4-way fan-out in the decorator DSL: train four tiny numpy models on the same
stream of data, evaluate each after every file, and report the best.

``loader >> [a, b, c, d]`` broadcasts every file to the four branches, and
``merge(...)`` interleaves their results into one sink.  After minipipe's "Model
Training Pipeline with Keras" page, with a tiny numpy model in place of Keras; the
explicit-API version is ``examples/minipipe/model_search.py``.
"""

import os
from collections import defaultdict

# Every stage is a process of its own: one BLAS thread each avoids oversubscription.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from flowdsl import merge, sink, source, transform

N_COLS = 32


@source
def loader(n_files, rows_per_file, n_cols=N_COLS, eps=0.1, seed=0):
    """Each item emulates a file loaded from disk: features and binary targets."""
    rng = np.random.default_rng(seed)
    for _ in range(n_files):
        X = rng.standard_normal((rows_per_file, n_cols))
        maximum = X.max(1) - 2.0  # max of all features less 2 sigma
        interactions = (X * np.flip(X, 1)).mean(1)  # products of mirror columns
        noise = eps * rng.standard_normal(rows_per_file)
        y = (maximum + interactions + noise >= 0).astype(np.float64)
        yield X, y


def auc(y, p):
    """Area under the ROC curve, from the ranks of the scores."""
    ranks = np.empty(len(p))
    ranks[np.argsort(p)] = np.arange(1, len(p) + 1)
    n_pos = y.sum()
    n_neg = len(y) - n_pos
    return (ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


class TinyModel:
    """A logistic read-out of ``hidden`` random projections and their squares."""

    def __init__(self, hidden, seed=0):
        rng = np.random.default_rng(seed)
        self.W = rng.standard_normal((N_COLS, hidden)) / np.sqrt(N_COLS)
        self.w = np.zeros(2 * hidden)
        self.b = 0.0

    def features(self, X):
        Z = X @ self.W
        return np.hstack([Z, Z * Z - 1.0])

    def predict(self, X, H=None):
        H = self.features(X) if H is None else H
        return 1.0 / (1.0 + np.exp(-(H @ self.w + self.b)))

    def fit(self, X, y, lr=0.3, steps=10):
        H = self.features(X)
        for _ in range(steps):
            g = self.predict(X, H) - y
            self.w -= lr * H.T @ g / len(y)
            self.b -= lr * g.mean()


@transform
class Train:
    def __init__(self, hidden):
        self.hidden = hidden

    def local_init(self):
        self.model = TinyModel(self.hidden)  # built in the worker process

    def run(self, data):
        X, y = data
        self.model.fit(X, y)
        return self.model


@transform
def evaluate(model, test_set, name):
    X_test, y_test = test_set
    return name, auc(y_test, model.predict(X_test))


@sink
class Report:
    def local_init(self):
        self.aucs = defaultdict(list)

    def run(self, name_auc):
        name, test_auc = name_auc
        self.aucs[name].append(test_auc)

    def local_term(self):
        for name, aucs in self.aucs.items():
            print(f"{name:>10}: " + " ".join(f"{a:0.3f}" for a in aucs), flush=True)
        best = max(self.aucs, key=lambda name: self.aucs[name][-1])
        print(f"best architecture: {best}", flush=True)


if __name__ == "__main__":
    archs = {"numpy-4": 4, "numpy-16": 16, "numpy-64": 64, "numpy-256": 256}
    test_set = next(loader.func(n_files=1, rows_per_file=2000, seed=1))

    branches = [
        Train(hidden).options(name=f"train_{name}")
        >> evaluate(test_set, name).options(name=f"eval_{name}")
        for name, hidden in archs.items()
    ]
    flow = merge(loader(10, 1000) >> branches) >> Report()
    print(flow.diagram().source)
    print(flow.run())
