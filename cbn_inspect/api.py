"""The notebook face of the library: ``cbn_inspect.analyze(source, input_size=None, **settings)``.

One call for what a researcher has at hand (a checkpoint path, ``timm:NAME`` or an ``nn.Module`` in
memory), with settings as keyword arguments instead of a :class:`Settings` object. The report it returns
renders itself in Jupyter (``_repr_html_``), turns into a DataFrame (``to_frame()``) and draws its figure
(``plot()``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .records import ModelReport, Settings, ToleranceRule

DEFAULT_TOLERANCE = {"relative": 0.1, "absolute": 0.1, "gap": 10.0, "energy": 0.99}
_FIELDS = {f.name for f in dataclasses.fields(Settings)}


def _grid(value: Any) -> tuple[int, ...] | None:
    if value is None or isinstance(value, tuple):
        return value
    if isinstance(value, int):
        return (value,)
    if isinstance(value, list):
        return tuple(int(v) for v in value)
    from .loaders import parse_grid

    return parse_grid(str(value))


def make_settings(**options: Any) -> Settings:
    """:class:`Settings` from keyword arguments: its field names, plus ``tolerance="gap"`` (a rule name) with
    ``tol_value=...``, ``grid=32`` / ``"14x14"`` / ``(14, 14)``, and ``spectra=True`` for ``keep_spectra``."""
    tolerance = options.pop("tolerance", None)
    tol_value = options.pop("tol_value", None)
    if "spectra" in options:
        options["keep_spectra"] = bool(options.pop("spectra"))
    unknown = sorted(set(options) - _FIELDS)
    if unknown:
        raise TypeError(f"unknown setting(s) {', '.join(unknown)}; known: tolerance, tol_value, spectra, "
                        f"{', '.join(sorted(_FIELDS))}")
    if isinstance(tolerance, ToleranceRule):
        options["tolerance"] = tolerance
    elif tolerance is not None or tol_value is not None:
        name = tolerance or "relative"
        if name not in DEFAULT_TOLERANCE:
            raise ValueError(f"tolerance {name!r}: use one of {', '.join(DEFAULT_TOLERANCE)}")
        options["tolerance"] = ToleranceRule(name, float(DEFAULT_TOLERANCE[name] if tol_value is None else tol_value))
    if "grid" in options:
        options["grid"] = _grid(options["grid"])
    return Settings(**options)


def analyze(
    source: str | Path | Any,
    input_size: str | int | tuple[int, ...] | list[int] | None = None,
    *,
    trust_code: bool = False,
    key: str | None = None,
    arch: str | None = None,
    settings: Settings | None = None,
    **options: Any,
) -> ModelReport:
    """Analyse a checkpoint path, a ``timm:NAME`` or an ``nn.Module``; return its :class:`ModelReport`.

    ``input_size`` (``(3, 224, 224)``, ``(224, 224)``, ``224`` or ``"3x224x224"``) traces the grids of a
    module or a timm architecture. Keyword ``options`` are :class:`Settings` fields (see
    :func:`make_settings`), e.g. ``analyze(model, (3, 32, 32), tolerance="gap", spectra=True)``; pass
    ``settings=`` instead to reuse a :class:`Settings`. ``trust_code``, ``key`` and ``arch`` are those of
    :func:`cbn_inspect.inspect_source`.
    """
    from .inspect import inspect_source

    if settings is not None and options:
        raise TypeError("pass either settings= or keyword settings, not both")
    settings = settings or make_settings(**options)
    if isinstance(input_size, int):
        input_size = (input_size,)
    elif isinstance(input_size, list):
        input_size = tuple(input_size)
    return inspect_source(source, settings, trust_code=trust_code, key=key, arch=arch, input_size=input_size)
