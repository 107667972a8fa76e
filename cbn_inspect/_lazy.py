"""Names imported on first use (PEP 562), for the packages whose ``import`` must stay light.

A package lists ``_LAZY = {public name: defining module (relative)}`` and sets
``__getattr__ = lazy_getattr(__name__, _LAZY, globals())``: the first access imports the module and caches
the value in the package's namespace, so later accesses are plain attribute reads.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable


def lazy_getattr(package: str, table: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    def __getattr__(name: str) -> Any:
        where = table.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(where, package), name)
        namespace[name] = value
        return value

    return __getattr__
