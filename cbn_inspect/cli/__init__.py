"""Command line: ``cbn-inspect SOURCE`` (short for ``cbn-inspect report SOURCE``) and its subcommands.

Each subcommand lives in its own module and registers itself on :data:`app`; :func:`main` routes a first
argument that is not a subcommand to ``report``. Errors from :mod:`cbn_inspect.errors` become one line on
stderr and their exit code; anything else is a bug, reported in one line with exit code 70.

**A fast first contact.** ``--version``, ``--help``, every subcommand's ``--help`` and every usage error
return without importing torch, timm or numpy (``python -X importtime -m cbn_inspect --help`` shows it;
``tests/test_cli_startup.py`` asserts it for every registered command; ``benchmarks/bench_startup.py`` times
it). The mechanism is plain: the packages ``cbn_inspect`` and ``cbn_inspect.report`` export their names on
first use (PEP 562), and every module of this package keeps its *top-level* imports light -- the standard
library, typer, rich, :mod:`cbn_inspect.errors`, :mod:`cbn_inspect._version`, :mod:`cbn_inspect._parse`
(user-typed sizes and choices) and :mod:`cbn_inspect.report._text`. Everything else (loaders, records,
analysis, reporters, torch, numpy) is imported inside the command function, after the options are validated.
A new subcommand module only has to do the same: register itself on :data:`app` with light imports, and be
imported below; the start-up test then covers it with no change.
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


def _mistyped(word: str, rest: list[str], commands: set[str]) -> bool:
    """A first argument that is no path and no existing file, looks like a word, and is either close to a
    subcommand (``reprot``) or followed by a second positional argument, which ``report`` (one SOURCE) never
    takes (``neds model.onnx``): a subcommand the user meant, not a source."""
    import difflib
    import os

    if word.startswith("-") or ":" in word or os.sep in word or "." in word or "@" in word or os.path.exists(word):
        return False
    if rest and rest[0] and not rest[0].startswith("-"):
        return True
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
    if argv and argv[0] not in commands and argv[0] not in _PASSTHROUGH and not _mistyped(argv[0], argv[1:], commands):
        argv = ["report", *argv]
    return debug[:1] + argv


def main(argv: list[str] | None = None) -> None:
    args = route(list(sys.argv[1:] if argv is None else argv))
    run_guarded(lambda: app(args, prog_name="cbn-inspect"))
