import pickle

import dill
import pytest
from helpers import inc, numbers, scale

import flowdsl
from flowdsl import Sink, Source, Transform, sink, source, transform
from flowdsl._stages import StageClass


def test_bare_decorator_makes_stage_named_after_function():
    assert isinstance(inc, Transform)
    assert inc.name == "inc"
    assert inc.workers == 1 and inc.ordered is True and inc.buffer is None
    assert inc.__name__ == "inc" and inc.__doc__ == inc.func.__doc__


def test_decorator_options():
    @transform(workers=4, name="sq", buffer=64, ordered=False)
    def square(x):
        return x * x

    assert (square.name, square.workers, square.buffer, square.ordered) == ("sq", 4, 64, False)
    assert square.func(3) == 9


def test_func_is_the_original_function_for_unit_tests():
    assert inc.func(1) == 2
    assert scale(factor=3).func(2, factor=3) == 6


def test_calling_configures_a_copy():
    bound = scale(factor=3)
    assert bound is not scale and bound.kwargs == {"factor": 3}
    assert scale.kwargs == {}
    assert numbers(5).args == (5,) and numbers.args == ()


@pytest.mark.parametrize(
    "call",
    [lambda: numbers(1, 2, 3), lambda: scale(nope=1), lambda: inc(1, 2)],
    ids=["source-too-many", "transform-bad-kw", "transform-too-many"],
)
def test_wrong_binding_raises_type_error_naming_stage(call):
    with pytest.raises(TypeError, match=r"'(numbers|scale|inc)'"):
        call()


def test_source_has_exactly_one_worker():
    with pytest.raises(ValueError, match="exactly one worker"):
        source(workers=2)(lambda: iter(()))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_workers_must_be_positive_int(bad):
    with pytest.raises(ValueError, match="workers must be an integer"):
        transform(workers=bad)(lambda x: x)


@pytest.mark.parametrize(
    ("option", "bad", "says"),
    [
        ("workers", "2", "workers must be an integer >= 1, got '2'"),
        ("buffer", 0, "buffer must be an integer >= 1, got 0"),
        ("buffer", True, "buffer must be an integer >= 1, got True"),
        ("retries", -1, "retries must be an integer >= 0, got -1"),
        ("concurrency", 0, "concurrency must be an integer >= 1, got 0"),
        ("restarts", 1.5, "restarts must be an integer >= 0, got 1.5"),
        ("max_items_per_worker", 0, "max_items_per_worker must be an integer >= 1"),
        ("batch", 0, "batch must be an integer >= 1, got 0"),
        ("timeout", "5", "timeout must be a number of seconds > 0, got '5'"),
        ("timeout", float("nan"), "timeout must be a number of seconds > 0, got nan"),
        ("ordered", "yes", "ordered must be True or False, got 'yes'"),
        ("check_types", 1, "check_types must be True or False, got 1"),
        ("on_error", "ignore", "on_error must be 'raise', 'skip' or a sink"),
    ],
)
@pytest.mark.parametrize("how", ["decorator", "options"])
def test_a_bad_option_is_a_graph_error_naming_the_stage_and_the_option(option, bad, says, how):
    """One kind of error, one form of message, whichever option and whichever
    way it was given."""
    with pytest.raises(flowdsl.GraphError) as caught:
        if how == "decorator":
            transform(**{option: bad})(inc.func)
        else:
            inc.options(**{option: bad})
    assert str(caught.value).startswith("transform 'inc': " + says)
    assert isinstance(caught.value, ValueError)  # what code catching ValueError relies on


def test_a_bad_value_is_reported_before_a_rule_between_options():
    """concurrency on a generator is refused too, but the value that can never
    work is the first thing to fix."""

    def pairs(x):
        yield x

    with pytest.raises(flowdsl.GraphError, match="timeout must be a number of seconds > 0"):
        transform(concurrency=2, timeout=0)(pairs)


def test_class_decorator_constructs_instance_in_driver():
    @sink
    class Collect:
        def __init__(self, window=10):
            self.window = window

        def local_init(self):
            self.seen = []

        def run(self, x):
            self.seen.append(x)

    assert isinstance(Collect, StageClass)
    stage = Collect(5)
    assert isinstance(stage, Sink) and stage.name == "Collect"
    assert stage.func.window == 5
    assert stage.hook("local_init") is not None and stage.hook("local_term") is None
    with pytest.raises(TypeError, match="'Collect'"):
        Collect(1, 2, 3)


def test_class_needs_run():
    with pytest.raises(TypeError, match="run"):

        @transform
        class NoRun:
            pass


def test_explicit_classes_accept_minipipe_arguments():
    t = Transform(
        lambda x: x,
        "t",
        upstreams=["s1"],
        downstreams=["s2"],
        ignore_exceptions=[KeyError],
        init_kwargs={"a": 1},
    )
    assert t.upstreams == ["s1"] and t.downstreams == ["s2"]
    assert t.ignore_exceptions == (KeyError,) and t.init_kwargs == {"a": 1}
    s = Source(iter([1]), "src")
    assert s.kind == "source" and s.name == "src"


def test_options_copy():
    four = inc.options(workers=4)
    assert four.workers == 4 and inc.workers == 1
    with pytest.raises(TypeError, match="unknown option"):
        inc.options(colour="red")


@pytest.mark.parametrize("module", [pickle, dill])
@pytest.mark.parametrize("stage", [inc, numbers, numbers(3), scale(factor=2)])
def test_stages_round_trip_through_pickle_and_dill(module, stage):
    back = module.loads(module.dumps(stage))
    assert back.name == stage.name and back.args == stage.args and back.kwargs == stage.kwargs
    if stage is inc or stage is numbers:
        assert back is stage  # module-level stages pickle by reference


def test_lambda_stage_round_trips_through_dill():
    stage = transform(lambda x: x + 41)
    assert dill.loads(dill.dumps(stage)).func(1) == 42


def test_public_reprs_name_public_home():
    assert Transform.__module__ == "flowdsl"
    assert repr(inc) == "Transform('inc')"
    assert flowdsl.StageError.__module__ == "flowdsl"


def test_builtins_can_be_decorated():
    shout = transform(str.upper)
    assert shout.func("a") == "A"
    assert sink(print).name == "print"


def test_options_accept_lists_for_ignore_exceptions():
    stage = inc.options(ignore_exceptions=[KeyError])
    assert stage.ignore_exceptions == (KeyError,)


def test_wrapping_a_module_function_leaves_it_picklable():
    import helpers

    stage = transform(helpers.plain_double)  # called, not used as a decorator
    assert helpers.plain_double.__qualname__ == "plain_double"
    assert pickle.loads(pickle.dumps(helpers.plain_double))(2) == 4
    assert pickle.loads(pickle.dumps(stage)).func(3) == 6
    assert helpers.inc.func.__qualname__ == "inc.func"  # decorated: found via the stage
