"""``python -m cbn_inspect`` is the ``cbn-inspect`` command."""

from .cli import main

main()
