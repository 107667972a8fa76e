"""Views of a :class:`~cbn_inspect.interventions.NeedsReport` that delegate to the reporters (pandas,
matplotlib and the HTML writer are imported on use, so the records module stays free of heavy imports)."""

from __future__ import annotations

from typing import Any


class NeedsViews:
    """Mixed into :class:`NeedsReport`: ``to_frame()``, ``plot()``, ``to_html()`` and Jupyter's view."""

    __slots__ = ()

    def to_frame(self, what: str = "layers") -> Any:
        """A ``pandas.DataFrame``: one row per probed layer (``"layers"``), per measured point of every need
        curve (``"curves"``) or per removed ring (``"rings"``); columns in :mod:`cbn_inspect.report.needs_frame`."""
        from ..report.needs_frame import needs_frame

        return needs_frame(self, what)

    def plot(self, path: Any = None, panels: tuple[str, ...] | None = None) -> Any:
        """The need curves and ring importances (matplotlib ``Figure``); with ``path``, also written there
        (PNG/SVG/PDF by extension). ``panels``: a subset of ``("curves", "rings")``."""
        from ..report.figures import write_figure
        from ..report.needs_figures import figure_format, plot_needs

        if path is not None:
            figure_format(path)  # a bad extension fails before any drawing
        fig = plot_needs(self, panels)
        if path is not None:
            write_figure(fig, path)
        return fig

    def to_html(self, figures: bool = True) -> str:
        """The self-contained HTML page of ``cbn-inspect needs --html``."""
        from ..report.needs_html import needs_html

        return needs_html(self, figures=figures)

    def _repr_html_(self) -> str:
        """Jupyter's view: the HTML section without figures (no matplotlib needed)."""
        from ..report.needs_html import needs_fragment

        return needs_fragment(self, figures=False)
