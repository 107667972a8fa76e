"""The typer application, shared options, and the error boundary of the CLI."""

from __future__ import annotations

import functools
import os
import re
import sys
from enum import Enum
from typing import Annotated, Callable, Optional

from typer.core import _click as click  # typer vendors its own click; its exceptions are these
import typer
from rich.console import Console
from typer.core import TyperGroup

from .._version import __version__
from ..errors import INTERNAL_ERROR_EXIT, CbnError

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
        text = f"no such command {name!r}" + (f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "")
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


@app.callback()
def _root(version: VersionOption = None) -> None:
    """Find the Convolution Bottleneck (Wen & Jacot, ICML 2024) in CNN checkpoints."""


def _say(text: str) -> None:
    stderr.print(text, markup=False, highlight=False)


def warn(text: str) -> None:
    """A flag that does nothing, or another thing the user should know: one line on stderr, work goes on."""
    _say(f"cbn-inspect: warning: {text}")


def guarded(command: Callable) -> Callable:
    """Wrap a command: CbnError -> one line and its exit code; any other exception -> one line, exit 70."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CbnError as error:
            _say(f"cbn-inspect: error: {error.one_line()}")
            raise typer.Exit(error.exit_code) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug: one line for users, the traceback with CBN_INSPECT_DEBUG=1
            if os.environ.get("CBN_INSPECT_DEBUG"):
                raise
            _say(f"cbn-inspect: internal error: {type(exc).__name__}: {exc} "
                 "(set CBN_INSPECT_DEBUG=1 for the traceback, and please report it)")
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
