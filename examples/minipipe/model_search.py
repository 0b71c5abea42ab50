"""A 4-way fan-out on flowdsl's explicit API, after minipipe's "Model Training
Pipeline with Keras" page, with a tiny numpy model in place of Keras.

One Source loads "files" of data and sends a copy to each of four trainers (a
returned tuple is split by position over its four downstreams). Each trainer
fits its own model as the files arrive and passes the model on to its evaluator,
which scores it on a shared test set. All evaluators feed one Stream, so their
results merge into a single Sink, which reports the best architecture at the end.

The decorator-DSL version is ``examples/model_search.py``.
"""

import os
from collections import defaultdict

# Every stage is a process of its own: one BLAS thread each avoids oversubscription.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

import flowdsl as mp

N_COLS = 32


def gen_fake_data(n_files, rows_per_file, n_cols=N_COLS, eps=0.1, seed=0, copies=4):
    """Each iteration emulates a file loaded from disk; yields ``copies`` copies."""
    rng = np.random.default_rng(seed)
    for _ in range(n_files):
        X = rng.standard_normal((rows_per_file, n_cols))
        maximum = X.max(1) - 2.0  # max of all features less 2 sigma
        interactions = (X * np.flip(X, 1)).mean(1)  # products of mirror columns
        noise = eps * rng.standard_normal(rows_per_file)
        y = (maximum + interactions + noise >= 0).astype(np.float64)
        yield ((X, y),) * copies if copies > 1 else (X, y)


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


class train_numpy:
    def __init__(self, hidden, name):
        self.hidden = hidden
        self.name = name

    def local_init(self):
        self.model = TinyModel(self.hidden)  # built in the worker process

    def run(self, data):
        X, y = data
        self.model.fit(X, y)
        return self.model  # tells the evaluator to score this version


class eval_numpy:
    def __init__(self, X_test, y_test, name):
        self.X_test, self.y_test, self.name = X_test, y_test, name

    def local_init(self):
        self.epoch = 0

    def run(self, model):
        test_auc = auc(self.y_test, model.predict(self.X_test))
        print(f"[{self.name}]Epoch {self.epoch}: AUC = {test_auc:0.4f}", flush=True)
        self.epoch += 1
        return self.name, test_auc


class report_aucs:
    def local_init(self):
        self.auc_dict = defaultdict(list)

    def run(self, name_auc_tuple):
        name, test_auc = name_auc_tuple
        self.auc_dict[name].append(test_auc)

    def local_term(self):
        best = max(self.auc_dict, key=lambda name: self.auc_dict[name][-1])
        print(f"best architecture: {best} (AUC = {self.auc_dict[best][-1]:0.4f})", flush=True)


if __name__ == "__main__":
    archs = {"numpy-4": 4, "numpy-16": 16, "numpy-64": 64, "numpy-256": 256}
    loader = gen_fake_data(n_files=10, rows_per_file=1000, copies=len(archs))
    (X_test, y_test), *_ = next(gen_fake_data(n_files=1, rows_per_file=2000, seed=1))

    train_streams = [mp.Stream() for _ in archs]
    eval_streams = [mp.Stream() for _ in archs]
    s_report = mp.Stream()

    pipes = [mp.Source(loader, downstreams=train_streams, name="Loader")]
    pipes += [
        mp.Transform(
            train_numpy(hidden, name), upstreams=[s_tr], downstreams=[s_ev], name=f"Train{i}"
        )
        for i, ((name, hidden), s_tr, s_ev) in enumerate(
            zip(archs.items(), train_streams, eval_streams, strict=True)
        )
    ]
    pipes += [
        mp.Transform(
            eval_numpy(X_test, y_test, name),
            upstreams=[s_ev],
            downstreams=[s_report],
            name=f"Eval{i}",
        )
        for i, (name, s_ev) in enumerate(zip(archs, eval_streams, strict=True))
    ]
    pipes += [mp.Sink(report_aucs(), upstreams=[s_report], name="Report")]

    psys = mp.PipeSystem(pipes)
    psys.build(log_lvl="ERROR")  # no end-of-stream records
    print(psys.diagram().source)
    psys.run()
    psys.close()
