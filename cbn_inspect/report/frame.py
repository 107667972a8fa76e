"""``ModelReport.to_frame()``: the layer table as a pandas DataFrame (pandas is optional, imported here).

One row per layer, in data-flow order, built from the JSON report's ``layers[]`` so that every column holds
exactly the JSON's value (lists become tuples, so cells stay hashable; degree maps stay dicts keyed by
int). Columns, in order:

- every scalar field of a JSON layer: ``index``, ``name``, ``kind``, ``dtype``, ``in_channels``,
  ``out_channels``, ``groups``, ``transposed``, ``padding_mode``, ``geometry_source``, ``grid_source``,
  ``exact``, ``batchnorm``, ``mode_count``, ``capacity``, ``utilisation``, ``threshold``,
  ``spectral_norm``, ``stable_rank``, ``effective_rank``, ``smallest_kept``, ``largest_discarded``,
  ``gap_ratio`` (None/NaN where the JSON has ``null``), ``route`` (``full`` or ``counts``);
- tuples: ``shape``, ``stride``, ``dilation``, ``grid``, ``spectrum_grid``, ``flags``, ``notes``,
  ``profile``;
- dicts (degree -> value, int keys): ``degree_counts``, ``energy_by_degree`` (the report's degree metric);
- ``in_bottleneck``: True for the layers of the called bottleneck;
- ``deg_0``, ``deg_1``, ...: ``degree_counts`` spread out, one int column per degree any layer keeps
  (0 where a layer keeps none), for plotting and filtering.
"""

from __future__ import annotations

from typing import Any

from ..records import ModelReport
from .json_report import report_to_dict

SCALARS = ("index", "name", "kind", "dtype", "in_channels", "out_channels", "groups", "transposed",
           "padding_mode", "geometry_source", "grid_source", "exact", "batchnorm", "mode_count", "capacity",
           "utilisation", "threshold", "spectral_norm", "stable_rank", "effective_rank", "smallest_kept",
           "largest_discarded", "gap_ratio", "route")
TUPLES = ("shape", "stride", "dilation", "grid", "spectrum_grid", "flags", "notes", "profile")
DICTS = ("degree_counts", "energy_by_degree")


def frame_rows(report: ModelReport) -> list[dict[str, Any]]:
    """The DataFrame's rows as plain dicts (what :func:`report_frame` hands pandas)."""
    data = report_to_dict(report)
    b = data["bottleneck"]
    degrees = sorted({int(d) for layer in data["layers"] for d in layer["degree_counts"]})
    rows = []
    for layer in data["layers"]:
        row: dict[str, Any] = {key: layer[key] for key in SCALARS}
        row.update({key: tuple(layer[key]) if layer[key] is not None else None for key in TUPLES})
        row.update({key: {int(k): v for k, v in layer[key].items()} for key in DICTS})
        row["in_bottleneck"] = bool(b["found"] and b["start_index"] <= layer["index"] <= b["end_index"])
        row.update({f"deg_{d}": int(layer["degree_counts"].get(str(d), 0)) for d in degrees})
        rows.append(row)
    return rows


def report_frame(report: ModelReport) -> Any:
    """A ``pandas.DataFrame`` of the layers (needs pandas: ``pip install pandas``)."""
    try:
        import pandas as pd
    except ImportError as exc:
        from ..errors import MissingExtraError

        raise MissingExtraError("to_frame() needs pandas, which is not installed",
                                hint="pip install 'cbn-inspect[plot]' or pip install pandas") from exc
    rows = frame_rows(report)
    columns = list(rows[0]) if rows else [*SCALARS, *TUPLES, *DICTS, "in_bottleneck"]
    return pd.DataFrame(rows, columns=columns)
