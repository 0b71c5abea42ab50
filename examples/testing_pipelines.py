"""A small pipeline and its tests, written with ``flowdsl.testing``.

The pipeline builds a word index of text files: which words occur in which file.

    read_documents ─> decode x2 ─> words ─> normalise ─> drop_stopwords ─> Index
                        └─ files that are not UTF-8 ─> reject

Run as a script, it indexes a few files, then runs the tests below with pytest.
``pytest examples/testing_pipelines.py`` runs the tests alone; copied into a
project as ``tests/test_<name>.py``, they run like any other test.  They need
``pip install "flowdsl[testing]" pytest``.  See docs/testing.md.
"""

import json
import string
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowdsl import FlowTimeout, StageError, WorkerDied, sink, source, transform
from flowdsl.testing import InjectedFault, assert_equivalent, inject_fault, run_inline
from flowdsl.testing.strategies import flows, streams

# -- the pipeline ------------------------------------------------------------------------

STOPWORDS = frozenset({"a", "an", "and", "in", "is", "of", "on", "the", "to"})


@source
def read_documents(folder):
    """(file name, bytes) for every .txt file of ``folder``."""
    for path in sorted(Path(folder).glob("*.txt")):
        yield path.name, path.read_bytes()


@transform(workers=2)
def decode(document):
    """(name, text); UnicodeDecodeError for a file that is not UTF-8."""
    name, data = document
    return name, data.decode("utf-8")


@transform
def words(document):
    """(name, word) for every word of the document."""
    name, text = document
    for word in text.split():
        yield name, word


@transform
def normalise(entry):
    """The word in lower case without surrounding punctuation; None if nothing is left."""
    name, word = entry
    word = word.strip(string.punctuation).lower()
    return (name, word) if word else None


@transform
def drop_stopwords(entry):
    return None if entry[1] in STOPWORDS else entry


@transform
def singular(entry):
    """A crude stemmer: "cats" -> "cat"."""
    name, word = entry
    return (name, word[:-1]) if len(word) > 3 and word.endswith("s") else entry


@sink
def reject(failure, path):
    """Dead letters: one line per file that failed, with the reason."""
    with open(path, "a") as f:
        f.write(f"{failure.item[0]}: {failure.error}\n")


@sink
class Index:
    """word -> names of the files it occurs in, written as JSON when the worker ends."""

    def __init__(self, path):
        self.path = path

    def local_init(self):
        self.files = defaultdict(set)

    def run(self, entry):
        name, word = entry
        self.files[word].add(name)

    def local_term(self):
        index = {word: sorted(names) for word, names in sorted(self.files.items())}
        Path(self.path).write_text(json.dumps(index, indent=1))


# The part without files and side effects: the easiest part to test.
WORDS = words >> normalise >> drop_stopwords >> singular


def index_flow(folder, index, rejects, *, workers=2):
    return (
        read_documents(folder)
        >> decode.options(workers=workers, on_error=reject(path=rejects))
        >> WORDS
        >> Index(index)
    )


DOCUMENTS = {
    "cats.txt": b"The cat sat on the mat.",
    "hats.txt": b"Hats, cats and bats!",
    "latin1.txt": "Café au lait".encode("latin-1"),
}


def write_documents(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in DOCUMENTS.items():
        (folder / name).write_bytes(data)
    return folder


# -- unit tests: stage.func and run_inline ------------------------------------------------


@pytest.fixture
def folder(tmp_path):
    return write_documents(tmp_path / "documents")


def test_normalise_lowercases_and_strips_punctuation():
    assert normalise.func(("a.txt", '"Hello,')) == ("a.txt", "hello")
    assert normalise.func(("a.txt", "--")) is None


def test_words_of_a_document():
    got = run_inline(WORDS, [("a.txt", "The cats, the hat.")])
    assert got == [("a.txt", "cat"), ("a.txt", "hat")]


def test_the_whole_flow(folder, tmp_path):
    report = index_flow(folder, tmp_path / "index.json", tmp_path / "rejects.txt").run(timeout=30)
    index = json.loads((tmp_path / "index.json").read_text())
    assert index == {
        "bat": ["hats.txt"],
        "cat": ["cats.txt", "hats.txt"],
        "hat": ["hats.txt"],
        "mat": ["cats.txt"],
        "sat": ["cats.txt"],
    }
    assert (
        (tmp_path / "rejects.txt")
        .read_text()
        .startswith("latin1.txt: UnicodeDecodeError: 'utf-8' codec can't decode")
    )
    assert report["decode"].errors == 1


# -- the parallel run against the serial reference ---------------------------------------

names = st.sampled_from(["a.txt", "b.txt", "c.txt"])
texts = st.text(st.sampled_from("ab AB,.-\n\xe9"), max_size=30)
documents = st.tuples(
    names, st.one_of(texts.map(str.encode), texts.map(lambda t: t.encode("latin-1")))
)
entries = st.tuples(names, st.sampled_from(["the", "Cats", "cat.", "hats!", "--", "a"]))


def test_decoded_words_match_the_serial_run_on_any_documents():
    # decode runs two workers; a non-UTF-8 document fails the run on both executors
    assert_equivalent(
        decode >> WORDS, streams(documents, long_size=200), max_examples=10, expect_failure=None
    )


def test_the_whole_flow_matches_the_serial_run(folder, tmp_path):
    # sinks are compared by the number of items they receive: 6 words, 1 reject
    assert_equivalent(index_flow(folder, tmp_path / "index.json", tmp_path / "rejects.txt"))


@settings(max_examples=10, deadline=None)
@given(
    flow=flows([normalise, drop_stopwords, singular]),
    items=streams(entries, max_size=20, long_size=200),
)
def test_the_stages_in_any_shape_match_the_serial_run(flow, items):
    assert_equivalent(flow, items)


# -- error handling: inject_fault ---------------------------------------------------------


def test_an_error_in_a_stage_stops_the_run(folder, tmp_path):
    flow = index_flow(folder, tmp_path / "index.json", tmp_path / "rejects.txt")
    with pytest.raises(StageError) as info:
        inject_fault(flow, "normalise", at=3).run(timeout=30)
    assert info.value.stage == "normalise"
    assert info.value.item == repr(("cats.txt", "on"))
    assert isinstance(info.value.__cause__, InjectedFault)


def test_a_failed_decode_goes_to_the_rejects(folder, tmp_path):
    rejects = tmp_path / "rejects.txt"
    flow = index_flow(folder, tmp_path / "index.json", rejects, workers=1)
    inject_fault(flow, "decode", at=0).run(timeout=30)
    lines = rejects.read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["cats.txt", "latin1.txt"]
    assert "InjectedFault" in lines[0]
    assert json.loads((tmp_path / "index.json").read_text())["hat"] == ["hats.txt"]


@pytest.mark.parametrize("workers", [1, 3])
def test_skipped_words_are_counted(folder, tmp_path, workers):
    flow = (
        read_documents(folder)
        >> decode.options(on_error="skip")
        >> words
        >> normalise.options(on_error="skip", workers=workers)
        >> Index(tmp_path / "index.json")
    )
    # item 1 of every worker fails; which words those are depends on the sharing out
    report = inject_fault(flow, "normalise", at=1, worker=None).run(timeout=30)
    stats = report["normalise"]
    assert 1 <= stats.errors <= workers
    assert stats.items_out + stats.errors == stats.items_in == 10


@pytest.mark.parametrize("kind, exitcode", [("kill", -9), ("exit", 70), ("segfault", -11)])
def test_a_dead_worker_stops_the_run(folder, tmp_path, kind, exitcode):
    flow = index_flow(folder, tmp_path / "index.json", tmp_path / "rejects.txt")
    with pytest.raises(WorkerDied) as info:
        inject_fault(flow, "Index", at=2, kind=kind).run(timeout=30)
    assert (info.value.stage, info.value.exitcode) == ("Index", exitcode)


def test_a_stuck_stage_runs_into_the_timeout(folder, tmp_path):
    flow = index_flow(folder, tmp_path / "index.json", tmp_path / "rejects.txt")
    with pytest.raises(FlowTimeout):
        inject_fault(flow, "words", at=0, kind="hang").run(timeout=0.5)


# -- as a script -----------------------------------------------------------------------


def main(root):
    folder = write_documents(root / "documents")
    index, rejects = root / "index.json", root / "rejects.txt"
    report = index_flow(folder, index, rejects).run()
    print(report)
    print("index:", json.dumps(json.loads(index.read_text())))
    print("rejected:", rejects.read_text(), end="")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp))
    print("\ntesting it:", flush=True)
    # in a fresh interpreter: pytest wants to import hypothesis (its plugin) itself
    tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
    sys.exit(subprocess.run(tests).returncode)
