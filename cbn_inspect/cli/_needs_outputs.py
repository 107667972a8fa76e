"""``cbn-inspect needs --plot FILE --html FILE``: the figure and the HTML page of a needs report.

:func:`check_outputs` runs before any model is opened (a bad figure extension, or matplotlib missing for
``--plot``, fails first: nothing is computed or written half-way); :func:`write_outputs` writes both files
from the finished report (the reporters of :mod:`cbn_inspect.report.needs_figures` and ``needs_html``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..errors import UsageError
from ..report._text import safe
from ._app import stderr


def check_outputs(plot: Optional[Path], html: Optional[Path]) -> None:
    if plot is not None:
        from ..report.figures import figure_format, require_matplotlib

        figure_format(plot)
        require_matplotlib()
    for option, path in (("--plot", plot), ("--html", html)):
        if path is not None and not Path(path).parent.is_dir():
            raise UsageError(f"{option} {path}: no such folder {str(Path(path).parent)!r}")


def write_outputs(report: Any, plot: Optional[Path], html: Optional[Path]) -> None:
    if plot is not None:
        from ..report.needs_figures import save_needs_figure

        save_needs_figure(report, plot)
        stderr.print(safe(f"wrote {plot}", style="dim"))
    if html is not None:
        from ..report.needs_html import needs_html

        try:
            Path(html).write_text(needs_html(report), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--html {html}: cannot write ({exc.strerror or exc})") from exc
        stderr.print(safe(f"wrote {html}", style="dim"))
