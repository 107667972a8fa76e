"""PyTorch-family files: ``torch.save`` zips and legacy pickles (:mod:`._torchfile`, pickles scanned by
:mod:`._pickle_scan` and prescanned by :mod:`._script_archive`), TorchScript archives read as data
(:mod:`._torchscript`, :mod:`._static_script`, :mod:`._script_code`), and tracing an ``nn.Module`` for its
grids and geometry (:mod:`._trace`, also used for timm architectures).

:func:`read` is the one entry the loaders' format table (:mod:`cbn_inspect.loaders._formats`) calls for
``pytorch-zip``, ``pytorch-pickle`` and ``torchscript``; torch is imported inside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["read"]


def read(path: Path, fmt: str, *, trust_code: bool = False, key: str | None = None, fold_batchnorm: bool = True,
         arch: str | None = None, size: tuple[int, ...] | None = None, max_memory_mb: int | None = None) -> Any:
    """A TorchScript archive's :class:`~cbn_inspect.records.LoadedModel`; for a PyTorch zip or pickle, a whole
    trusted module's traced layers, or a state dict's ``(entries, info)`` for the caller to bind to an
    architecture (``arch`` set: the module's state dict)."""
    if fmt == "torchscript":
        from ._torchscript import read_torchscript

        return read_torchscript(path, size=size, fold_batchnorm=fold_batchnorm, trust_code=trust_code,
                                max_memory_mb=max_memory_mb)
    from ...records import SourceInfo
    from .._policy import default_max_memory_mb
    from ._script_archive import prescan_torch_file
    from ._torchfile import entries_of, read_torch_object

    prescan_torch_file(path, (max_memory_mb or default_max_memory_mb()) * 2**20)
    chosen, notes, metadata = read_torch_object(path, trust=trust_code, key=key)
    info = SourceInfo(path=str(path), format="pytorch", metadata=metadata, notes=tuple(notes))
    import torch

    if isinstance(chosen, torch.nn.Module) and not arch:
        from ._trace import load_module

        return load_module(chosen, info, size=size, fold_batchnorm=fold_batchnorm, max_memory_mb=max_memory_mb)
    return entries_of(chosen), info
