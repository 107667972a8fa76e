"""The typer application, shared options, and the error boundary of the CLI."""

from __future__ import annotations

import functools
import os
import sys
from enum import Enum
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console

from .._version import __version__
from ..errors import INTERNAL_ERROR_EXIT, CbnError

app = typer.Typer(
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
