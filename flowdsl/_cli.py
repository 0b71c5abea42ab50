"""The ``flowdsl`` command: run a flow defined in a module, or draw it.

``flowdsl run TARGET`` and ``python -m flowdsl run TARGET`` are the same command.
TARGET is ``package.module:attr`` or ``path/to/file.py:attr``; it names a flow, a
stage, or a function that takes no arguments and returns one.  ``docs/cli.md``
describes the whole interface.  The exit status is part of it, for scripts:

- 0: success;
- 1: the flow failed (a stage raised, a worker died, the graph is invalid), user
  code raised while the target was loaded, or a diagram could not be written;
- 2: usage error (bad arguments; TARGET not found, or not a flow);
- 124: the flow did not finish within ``--timeout`` (as ``timeout(1)``);
- 130: interrupted by Ctrl-C (128 + SIGINT, as shells report it);
- 141: stdout was closed early, e.g. piped into ``head`` (128 + SIGPIPE).

Terminal output is written to ``sys.stdout``/``sys.stderr`` directly: it is this
command's product, not a log record.  Log records go through ``logging``, which
the command configures (``--log-level``) because here flowdsl is the application.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from . import __version__
from ._diagram import render
from ._flow import Composable, Flow, as_flow
from .errors import FlowTimeout, GraphError, StageError, WorkerDied
from .executors import Executor, ProcessExecutor, execute

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

# extension of ``diagram -o`` -> Graphviz output format ("dot": the DOT source itself)
DIAGRAM_FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TARGET_HELP = (
    "the flow: MODULE:ATTR (e.g. myproject.flows:pipeline) or FILE.py:ATTR "
    "(e.g. flows.py:pipeline); ATTR may be dotted, and may name a function "
    "that takes no arguments and returns the flow"
)
EXIT_HELP = """exit status:
  0    success
  1    the flow failed (a stage raised, a worker died, invalid graph), the target's
       code raised while loading, or the diagram could not be written
  2    usage error: bad arguments, TARGET not found or not a flow
  124  the flow did not finish within --timeout
  130  interrupted (Ctrl-C)
  141  stdout closed early (e.g. piped into head)
"""


class UsageError(Exception):
    """The command line asks for something that does not exist or is not a flow."""


class CommandFailed(Exception):
    """The command could not do its job for a reason the message gives in full
    (user code raised while loading the target, a diagram cannot be rendered).
    The exception behind it, if any, is ``__cause__``."""


# -- entry point -------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level)
    try:
        return int(args.handler(args))
    except UsageError as exc:
        return _fail(EXIT_USAGE, str(exc))
    except FlowTimeout as exc:
        return _fail(EXIT_TIMEOUT, f"{exc} (--timeout)")
    except KeyboardInterrupt:
        return _fail(EXIT_INTERRUPTED, "interrupted")
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        return _fail(
            EXIT_FAILED, describe(exc, args.traceback), _traceback_of(exc) if args.traceback else ""
        )


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line: ``run`` and ``diagram``."""
    parser = argparse.ArgumentParser(
        prog="flowdsl",
        description="Run or draw a flowdsl flow defined in a Python module.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("target", metavar="TARGET", help=TARGET_HELP)
    common.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="WARNING",
        metavar="LEVEL",
        help="show log records from this level up, on "
        "stderr: DEBUG, INFO, WARNING (the default), ERROR or CRITICAL",
    )
    common.add_argument(
        "--traceback",
        action="store_true",
        help="on failure, also print the traceback (for a stage error, the one from the worker)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(commands, common)
    _add_diagram(commands, common)
    return parser


def _add_run(commands: Any, common: argparse.ArgumentParser) -> None:
    run = commands.add_parser(
        "run",
        parents=[common],
        help="run a flow",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a flow. The results of a flow that does not end in a sink are\n"
        "printed to stdout, one per line; the run report goes to stderr at the end.",
    )
    run.add_argument(
        "--executor",
        choices=("process", "serial"),
        default="process",
        help="process (the default): stages in worker processes; serial: "
        "everything in this process, deterministic",
    )
    run.add_argument(
        "--start-method",
        choices=("fork", "spawn", "forkserver"),
        help="how the process executor starts workers (default: "
        "$FLOWDSL_START_METHOD, else the platform's)",
    )
    run.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="stop the flow and exit with status 124 after this long",
    )
    run.add_argument("--progress", action="store_true", help="show live progress")
    run.add_argument(
        "--json",
        action="store_true",
        help='write JSON Lines to stdout: {"result": ...} per result, then {"report": ...}',
    )
    run.set_defaults(handler=run_command)


def _add_diagram(commands: Any, common: argparse.ArgumentParser) -> None:
    draw = commands.add_parser(
        "diagram",
        parents=[common],
        help="draw a flow",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Draw a flow. Without -o, print its DOT source to stdout.",
    )
    draw.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the drawing to FILE; its extension gives the format: "
        ".svg, .png, .pdf, or .dot/.gv for the DOT source",
    )
    draw.add_argument("--streams", action="store_true", help="also draw the queues between stages")
    draw.set_defaults(handler=diagram_command)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


# -- commands ----------------------------------------------------------------------


def run_command(args: argparse.Namespace) -> int:
    """``flowdsl run``: stream the results to stdout, then write the report."""
    if args.start_method and args.executor != "process":
        raise UsageError("--start-method applies to the process executor only")
    flow = as_flow(load_target(args.target))
    executor = make_executor(args.executor, args.start_method)
    with execute(
        flow, executor=executor, timeout=args.timeout, progress=args.progress, want_results=True
    ) as execution:
        for item in execution:
            _write(sys.stdout, _json_line("result", item) if args.json else _text(item))
    report = execution.report  # complete once the execution is closed
    if args.json:
        _write(sys.stdout, _json_line("report", report.to_dict()))
    else:
        _write(sys.stderr, repr(report))
    return EXIT_OK


def diagram_command(args: argparse.Namespace) -> int:
    """``flowdsl diagram``: the DOT source to stdout, or a drawing to ``-o FILE``."""
    if args.output is not None:
        diagram_format(args.output)  # a bad file name fails before any import
    source = load_target(args.target).diagram(draw_streams=args.streams).source
    if args.output is None:
        sys.stdout.write(source)
        sys.stdout.flush()
    else:
        save_diagram(source, args.output)
    return EXIT_OK


def save_diagram(source: str, output: str) -> None:
    """Write the DOT ``source`` to ``output``, rendered in the format its extension names."""
    fmt = diagram_format(output)
    data = source.encode("utf-8") if fmt == "dot" else _render(source, fmt, output)
    try:
        Path(output).write_bytes(data)
    except OSError as exc:
        raise CommandFailed(f"cannot write {output!r}: {exc.strerror or exc}") from None


def make_executor(name: str, start_method: str | None) -> Executor | str:
    """The executor for ``--executor`` and ``--start-method``."""
    return ProcessExecutor(start_method) if name == "process" else name


def diagram_format(output: str) -> str:
    """The Graphviz format for an output file name, from its extension."""
    fmt = DIAGRAM_FORMATS.get(Path(output).suffix.lower())
    if fmt is None:
        raise UsageError(
            f"cannot tell the format of {output!r} from its extension: use "
            f"{', '.join(DIAGRAM_FORMATS)}"
        )
    return fmt


def _render(source: str, fmt: str, output: str) -> bytes:
    data = render(source, fmt)
    if data is None:
        raise CommandFailed(
            f"cannot render {output!r}: {fmt} needs Graphviz's 'dot' program "
            f"(https://graphviz.org/download/), or for svg and png the graphviz-pure "
            f"renderer (pip install 'flowdsl[render]'), and neither worked; "
            f"write the DOT source instead with -o {Path(output).stem}.dot"
        )
    return data


# -- loading the target -------------------------------------------------------------


def load_target(target: str) -> Composable:
    """The flow named by ``target`` (``module:attr`` or ``file.py:attr``); a function
    found there is called with no arguments and must return the flow."""
    where, _, attr = target.rpartition(":")
    if not where or not all(part.isidentifier() for part in attr.split(".")):
        raise UsageError(
            f"TARGET must be MODULE:ATTR or FILE.py:ATTR, got {target!r} (for example "
            f"'myproject.flows:pipeline' or 'path/to/flows.py:pipeline')"
        )
    is_path = where.endswith(".py") or os.sep in where
    module = import_file(where) if is_path else import_module(where)
    return as_composable(attribute(module, attr), target)


def import_module(name: str) -> ModuleType:
    """Import ``name`` as ``python -m`` would: the current directory comes first."""
    _put_on_path(os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise UsageError(
                f"cannot find module {name!r}: no module {exc.name!r} in the current "
                f"directory or on sys.path. Check the spelling, run from the directory "
                f"that contains it (or add it to PYTHONPATH), or give a file instead: "
                f"path/to/{name.rpartition('.')[2]}.py:ATTR"
            ) from None
        raise _failed(f"importing module {name!r}", exc) from exc
    except (Exception, SystemExit) as exc:
        raise _failed(f"importing module {name!r}", exc) from exc


def import_file(where: str) -> ModuleType:
    """Import the file ``where`` as a module named after it, its directory first on
    ``sys.path``, so that worker processes started with spawn can import it too."""
    path = Path(where)
    if not path.is_file():
        raise UsageError(
            f"no file {where!r} (looked in {os.getcwd()}); give a path to a "
            f".py file, or a module name: MODULE:ATTR"
        )
    name = path.stem
    if name in sys.modules:
        return _already_imported(sys.modules[name], path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{where!r} is not a Python file: TARGET is FILE.py:ATTR")
    _put_on_path(str(path.resolve().parent))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        raise _failed(f"importing {where!r}", exc) from exc
    return module


def _already_imported(module: ModuleType, path: Path) -> ModuleType:
    loaded = getattr(module, "__file__", None)
    if loaded is not None and Path(loaded).resolve() == path.resolve():
        return module
    raise UsageError(
        f"cannot import {str(path)!r} as module {module.__name__!r}: another "
        f"module of that name is already imported ({loaded or 'built in'}); "
        f"rename the file"
    )


def attribute(module: ModuleType, attr: str) -> Any:
    """``module.attr`` for a dotted ``attr``, or a UsageError saying what is missing."""
    obj: Any = module
    found: list[str] = []
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(_missing(module, found, part)) from None
        found.append(part)
    return obj


def _missing(module: ModuleType, found: list[str], part: str) -> str:
    if found:
        return f"{module.__name__}:{'.'.join(found)} has no attribute {part!r}"
    flows = sorted(n for n, v in vars(module).items() if isinstance(v, Flow))
    hint = (
        f"; flows defined at its top level: {', '.join(flows)}"
        if flows
        else "; check the name after the colon"
    )
    return f"module {module.__name__!r} ({_origin(module)}) has no attribute {part!r}{hint}"


def as_composable(obj: Any, target: str) -> Composable:
    """``obj`` if it is a flow or a stage, else what calling it with no arguments returns."""
    if isinstance(obj, Composable):
        return obj
    if not callable(obj):
        raise UsageError(f"{target!r} is {_kind(obj)}, not a flow. {_WANTED}")
    try:
        inspect.signature(obj).bind()
    except TypeError as exc:
        raise UsageError(
            f"{target!r} cannot be called without arguments ({exc}). {_WANTED}"
        ) from None
    except ValueError:
        pass  # no signature to check (a builtin): calling it tells
    try:
        made = obj()
    except (Exception, SystemExit) as exc:
        raise _failed(f"calling {target!r}", exc) from exc
    if not isinstance(made, Composable):
        raise UsageError(f"{target!r} returned {_kind(made)}, not a flow. {_WANTED}")
    return made


_WANTED = (
    "TARGET must name a flow (stages joined with >>), a stage, or a function "
    "that takes no arguments and returns one."
)


def _kind(obj: Any) -> str:
    text = repr(obj)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} (of type {type(obj).__name__})"


def _origin(module: ModuleType) -> str:
    return getattr(module, "__file__", None) or "built in"


def _put_on_path(directory: str) -> None:
    if directory not in sys.path:
        sys.path.insert(0, directory)


def _failed(doing: str, exc: BaseException) -> CommandFailed:
    """User code raised while the target was loaded: say what, and where."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = (
        ""
        if isinstance(exc, SyntaxError) or not frames
        else (f" at {frames[-1].filename}:{frames[-1].lineno}")
    )
    return CommandFailed(f"{doing} raised {_one_line(exc)}{where}")


# -- output ----------------------------------------------------------------------------


def _text(item: Any) -> str:
    return item if isinstance(item, str) else repr(item)


def _json_line(key: str, value: Any) -> str:
    """One JSON Lines record; a value JSON cannot hold is written as its repr."""
    try:
        return json.dumps({key: value}, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps({key: repr(value)})


def _write(stream: Any, line: str) -> None:
    stream.write(line + "\n")
    stream.flush()  # a reader sees each result as soon as it arrives


def _silence_stdout() -> None:
    """Point stdout at /dev/null once its reader has gone, so that the interpreter's
    final flush does not complain."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level), format="%(levelname)s %(name)s%(where)s: %(message)s"
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_where)


def _where(record: logging.LogRecord) -> bool:
    """Name the stage worker that made ``record`` (`` numbers[0]``), if one did."""
    stage = getattr(record, "stage", None)
    record.where = "" if stage is None else f" {stage}[{getattr(record, 'worker', None)}]"
    return True


# -- failures --------------------------------------------------------------------------


def _fail(status: int, message: str, trace: str = "") -> int:
    sys.stderr.write(f"flowdsl: error: {message}\n")
    if trace:
        sys.stderr.write(trace.rstrip("\n") + "\n")
    sys.stderr.flush()
    return status


def describe(exc: BaseException, with_trace: bool = False) -> str:
    """One paragraph about a failure: which stage and worker, and why."""
    hint = "" if with_trace else " (run again with --traceback to see the traceback)"
    if isinstance(exc, StageError):
        item = "" if exc.item is None else f" on item {exc.item}"
        hint = hint if exc.remote_traceback else ""
        return f"stage {exc.stage!r} failed in worker {exc.worker}{item}: {exc.message}{hint}"
    if isinstance(exc, WorkerDied):
        return (
            f"worker {exc.worker} of stage {exc.stage!r} died without reporting: "
            f"{_exit_reason(exc.exitcode)}"
        )
    if isinstance(exc, GraphError):
        return f"invalid flow: {exc}"
    if isinstance(exc, CommandFailed):
        return str(exc) + (hint if exc.__cause__ is not None else "")
    return f"{_one_line(exc)}{hint}"


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"it exited with code {code}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return type(exc).__name__ + (f": {text}" if text else "")


def _traceback_of(exc: BaseException) -> str:
    if isinstance(exc, StageError) and exc.remote_traceback:
        return "Traceback in the worker:\n" + exc.remote_traceback
    shown = exc.__cause__ if isinstance(exc, CommandFailed) and exc.__cause__ else exc
    return "".join(traceback.format_exception(shown))
