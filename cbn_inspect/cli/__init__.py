"""Command line: ``cbn-inspect SOURCE`` (short for ``cbn-inspect report SOURCE``) and its subcommands.

Each subcommand lives in its own module and registers itself on :data:`app`; :func:`main` routes a first
argument that is not a subcommand to ``report``. Errors from :mod:`cbn_inspect.errors` become one line on
stderr and their exit code; anything else is a bug, reported in one line with exit code 70.
"""

from __future__ import annotations

import sys

from ._app import app, run_guarded
from . import _report  # noqa: F401  (registers the command)
from . import _audit  # noqa: F401  (registers the command)
from . import _layers  # noqa: F401  (registers the command)
from . import _track  # noqa: F401  (registers the command)
from . import _compare  # noqa: F401  (registers the command)
from . import _needs  # noqa: F401  (registers the command)

__all__ = ["app", "main", "route"]

_PASSTHROUGH = {"--help", "-h", "--version", "--install-completion", "--show-completion"}


def _commands() -> set[str]:
    names = set()
    for info in app.registered_commands:
        names.add(info.name or info.callback.__name__.replace("_", "-"))
    return names


def _mistyped(word: str, commands: set[str]) -> bool:
    """A first argument that is no path, looks like a word and is close to a subcommand: ``reprot``."""
    import difflib
    import os

    if word.startswith("-") or ":" in word or os.sep in word or "." in word or "@" in word or os.path.exists(word):
        return False
    return bool(difflib.get_close_matches(word, sorted(commands), n=1, cutoff=0.6))


def route(argv: list[str]) -> list[str]:
    """Insert the default subcommand ``report`` unless the first argument names a subcommand (or is a
    mistyped one: that stays, so the group can say "no such command 'reprot'; did you mean 'report'?").

    ``--debug`` is a global option wherever it is written (``cbn-inspect model.pt --debug``): it is moved
    in front of the subcommand, where typer expects it (arguments after ``--`` are left alone).
    """
    end = argv.index("--") if "--" in argv else len(argv)
    debug = [a for a in argv[:end] if a == "--debug"]
    argv = [a for a in argv[:end] if a != "--debug"] + argv[end:]
    commands = _commands()
    if argv and argv[0] not in commands and argv[0] not in _PASSTHROUGH and not _mistyped(argv[0], commands):
        argv = ["report", *argv]
    return debug[:1] + argv


def main(argv: list[str] | None = None) -> None:
    args = route(list(sys.argv[1:] if argv is None else argv))
    run_guarded(lambda: app(args, prog_name="cbn-inspect"))
