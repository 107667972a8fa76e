"""The typer application, shared options, and the error boundary of the CLI."""

from __future__ import annotations

import functools
import os
import re
import sys
import traceback
from enum import Enum
from typing import Annotated, Callable, Optional

from typer.core import _click as click  # typer vendors its own click; its exceptions are these
import typer
from rich.console import Console
from typer.core import TyperGroup

from .._version import __version__
from ..errors import INTERNAL_ERROR_EXIT, CbnError, ResourceLimitError
from ..report._text import safe

class CbnGroup(TyperGroup):
    """The command group with one error discipline: every usage error is one ``cbn-inspect: error:`` line on
    stderr and exit code 2 (click's own parse errors included: unknown options, bad enum values, out-of-range
    numbers, mistyped subcommands, which get a did-you-mean)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as error:
            error.show()
            code = 0
        except click.exceptions.UsageError as error:
            _say(f"cbn-inspect: error: {usage_message(error, self)}")
            code = error.exit_code
        except click.exceptions.ClickException as error:
            _say(f"cbn-inspect: error: {' '.join(error.format_message().split())}")
            code = error.exit_code
        except typer.Abort:
            _say("cbn-inspect: aborted")
            code = 130
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def usage_message(error: click.exceptions.UsageError, group: click.Group) -> str:
    """Click's message on one line; an unknown subcommand with the closest command names."""
    import difflib

    text = " ".join(error.format_message().split())
    found = re.match(r"No such command '(.+?)'\.?", text)
    if found:
        name = found.group(1)
        close = difflib.get_close_matches(name, sorted(group.commands), n=2, cutoff=0.5)
        text = (f"no such command {name!r}; did you mean {' or '.join(repr(c) for c in close)}?" if close else
                f"no such command {name!r} and no file of that name; the commands are "
                f"{', '.join(sorted(group.commands))}")
    return text.replace("Value error, ", "")


app = typer.Typer(
    cls=CbnGroup,
    name="cbn-inspect",
    help=(
        "Find the Convolution Bottleneck (Wen & Jacot, ICML 2024) in CNN checkpoints.\n\n"
        "`cbn-inspect SOURCE [OPTIONS]` is short for `cbn-inspect report SOURCE [OPTIONS]`."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
)

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


class Rule(str, Enum):
    relative = "relative"
    absolute = "absolute"
    gap = "gap"
    energy = "energy"


class Metric(str, Enum):
    l1 = "l1"
    linf = "linf"


class OnnxBranch(str, Enum):
    then = "then"
    else_ = "else"


class Precision(str, Enum):
    float32 = "float32"
    float64 = "float64"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cbn-inspect {__version__}")
        raise typer.Exit()


VersionOption = Annotated[
    Optional[bool],
    typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
]


DEBUG_ENV = "CBN_INSPECT_DEBUG"
_DEBUG = {"on": False}


def debugging() -> bool:
    """``--debug`` given, or ``CBN_INSPECT_DEBUG=1`` set: errors come with their traceback."""
    return _DEBUG["on"] or os.environ.get(DEBUG_ENV, "") not in ("", "0")


DebugOption = Annotated[
    bool,
    typer.Option("--debug", help="On an error, print the traceback too (same as CBN_INSPECT_DEBUG=1)."),
]


@app.callback()
def _root(version: VersionOption = None, debug: DebugOption = False) -> None:
    """Find the Convolution Bottleneck (Wen & Jacot, ICML 2024) in CNN checkpoints."""
    _DEBUG["on"] = debug


def _say(text: str) -> None:
    stderr.print(safe(text), highlight=False)


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's text (torch appends C++ backtraces), cut to ``limit``."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def warn(text: str) -> None:
    """A flag that does nothing, or another thing the user should know: one line on stderr, work goes on."""
    _say(f"cbn-inspect: warning: {text}")


def guarded(command: Callable) -> Callable:
    """Wrap a command: CbnError -> one line and its exit code; MemoryError -> one line, exit 7 (a resource
    limit); any other exception -> one line, exit 70 (a bug). ``--debug`` adds the traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except CbnError as error:
            if debugging():
                traceback.print_exc()
            _say(f"cbn-inspect: error: {error.one_line()}")
            raise typer.Exit(error.exit_code) from None
        except MemoryError:  # the last resort: loaders and analysis map what they can foresee themselves
            if debugging():
                traceback.print_exc()
            _say(f"cbn-inspect: error: ran out of memory ({ResourceLimitError.__name__}: the input needs more "
                 "memory than is available; try --layers, a smaller --grid or --memory-budget)")
            raise typer.Exit(ResourceLimitError.exit_code) from None
        except Exception as exc:  # a bug: one line for users, the traceback with --debug
            if debugging():
                raise
            _say(f"cbn-inspect: internal error: {type(exc).__name__}: {_first_line(exc)} "
                 "(run with --debug for the traceback, and please report it)")
            raise typer.Exit(INTERNAL_ERROR_EXIT) from None

    return wrapper


def run_guarded(call: Callable[[], object]) -> None:
    """Run the app from the console script; a broken pipe or Ctrl-C ends quietly."""
    try:
        call()
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(141)
