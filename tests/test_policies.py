"""Error policies: raise (the default), skip, retries, dead letters."""

import pytest
from helpers import fail_on, ignore, numbers

from flowdsl import Failure, StageError, sink, transform


@transform(on_error="skip")
def reciprocal(x):
    return 1 / x


def test_skip_drops_failing_items_and_counts_them(executor):
    report = (numbers(5) >> reciprocal >> ignore).run(executor=executor)
    stats = report["reciprocal"]
    assert (stats.items_in, stats.items_out, stats.errors) == (5, 4, 1)
    assert stats.items_out + stats.errors == stats.items_in


def test_skip_keeps_other_results(executor):
    assert (numbers(4) >> reciprocal).collect(executor=executor) == [1.0, 0.5, 1 / 3]


@transform(retries=2)
class Flaky:
    """Fails the first two attempts at every odd item, in each worker."""

    def local_init(self):
        self.attempts = {}

    def run(self, x):
        self.attempts[x] = self.attempts.get(x, 0) + 1
        if x % 2 and self.attempts[x] <= 2:
            raise ConnectionError(f"try again ({x})")
        return x


def test_retries_recover_transient_failures(executor):
    assert (numbers(10) >> Flaky()).collect(executor=executor) == list(range(10))


def test_retries_exhausted_raise(executor):
    with pytest.raises(StageError, match="ConnectionError"):
        (numbers(10) >> Flaky().options(retries=1)).collect(executor=executor)


@sink
class Letters:
    def __init__(self, path):
        self.path = path

    def run(self, failure):
        assert isinstance(failure, Failure)
        with open(self.path, "a") as f:
            f.write(
                f"{failure.stage}|{failure.item}|{failure.error}|"
                f"{type(failure.exception).__name__}\n"
            )


def test_dead_letter_stage_receives_failures(executor, tmp_path):
    path = tmp_path / "letters"
    stage = fail_on(bad=3).options(on_error=Letters(str(path)), workers=2)
    got = (numbers(8) >> stage).collect(executor=executor)
    assert got == [0, 1, 2, 4, 5, 6, 7]
    assert path.read_text().splitlines() == ["fail_on|3|ValueError: bad item 3|ValueError"]


def test_dead_letters_account_for_every_input(executor, tmp_path):
    stage = fail_on(bad=3).options(on_error=Letters(str(tmp_path / "l")))
    report = (numbers(8) >> stage >> ignore).run(executor=executor)
    stats = report["fail_on"]
    assert (stats.items_in, stats.items_out, stats.errors) == (8, 7, 1)
    assert report["Letters"].items_in == 1


@transform
def replacement(failure):
    return -failure.item


def test_a_dead_letter_transform_replaces_failed_items_downstream(executor):
    stage = fail_on(bad=3).options(on_error=replacement)
    got = (numbers(6) >> stage >> transform(lambda x: x * 10)).collect(executor=executor)
    assert sorted(got) == [-30, 0, 10, 20, 40, 50]
    report = (numbers(6) >> stage >> ignore).run(executor=executor)
    assert (
        report["fail_on"].errors,
        report["replacement"].items_out,
        report["ignore"].items_in,
    ) == (1, 1, 6)


@sink
class Appends:
    """Writes each item to a file, and fails on the ``bad`` ones."""

    def __init__(self, path, bad=()):
        self.path, self.bad = path, set(bad)

    def run(self, x):
        if x in self.bad:
            raise ValueError(f"bad item {x}")
        with open(self.path, "a") as f:
            f.write(f"{x}\n")


def test_a_failing_sink_goes_on_after_the_failed_item_and_names_it(executor, tmp_path):
    path, letters = tmp_path / "taken", tmp_path / "letters"
    stage = Appends(str(path), bad=(3, 4, 7)).options(on_error=Letters(str(letters)))
    report = (numbers(9) >> stage).run(executor=executor)
    assert path.read_text().split() == ["0", "1", "2", "5", "6", "8"]
    assert [line.split("|")[1] for line in letters.read_text().splitlines()] == ["3", "4", "7"]
    assert (report["Appends"].items_in, report["Appends"].errors) == (9, 3)


def test_a_sink_cannot_send_failures_to_a_transform():
    with pytest.raises(ValueError, match=r"sink 'ignore'.*use a sink for on_error"):
        ignore.options(on_error=replacement)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"on_error": "ignore"}, "on_error must be"),
        ({"on_error": numbers}, "on_error must be"),
        ({"retries": -1}, "retries must be"),
    ],
)
def test_invalid_policies(bad, message):
    with pytest.raises(ValueError, match=message):
        transform(lambda x: x).options(**bad)
