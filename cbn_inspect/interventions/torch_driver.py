"""Replacing a probed feature map inside a running torch model (``nn.Module`` and TorchScript runners).

The feature map a conv layer reads is a tensor some operation produced (or the model's input). A recording
pass runs the model once under a ``TorchDispatchMode`` that numbers every ``aten`` call and remembers which
call produced each live tensor (by identity, through weak references); the runner's sink names the tensor
each conv reads (for TorchScript, the one before explicit padding, as the activation profile does). An
intervention pass runs the model again under a mode that counts the same calls and, at the producing call,
hands the program a filtered copy instead of the output: every consumer of the feature map sees it (the conv
that reads it, a residual shortcut, a downsample branch), as a down-sampling placed there would. A feature
map produced by an in-place call is overwritten in place. The model's input itself is filtered before the run.

An intervention that did not take place (the call sequence differs from the recording, a shape differs) is
an :class:`~cbn_inspect.errors.AnalysisError`: a hook that silently does nothing would pass every other check.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import AnalysisError

Edit = Callable[[torch.Tensor], torch.Tensor]
INPUT = -1  # the site of the model's input


@dataclass(frozen=True)
class Site:
    """Where a probed feature map comes from: the producing call's index (``INPUT``: the model's input) and
    the position of the tensor among that call's outputs."""

    call: int
    position: int
    shape: tuple[int, ...]  # (C, *grid)


def flatten_outputs(obj: Any) -> list[torch.Tensor]:
    """The floating-point tensors of a model's output (a tensor, or tuples/lists/dicts of them), in order."""
    if torch.is_tensor(obj):
        return [obj] if obj.is_floating_point() or obj.is_complex() else []
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in flatten_outputs(item)]
    if isinstance(obj, dict):
        return [t for key in obj for t in flatten_outputs(obj[key])]
    return []


def _outputs(out: Any) -> list[Any]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


class TorchDriver:
    """Interventions on the feature maps of a :class:`ModuleRunner` or :class:`TorchScriptRunner`."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.kind = runner.kind
        self.sites: dict[str, Site] = {}
        self.order: list[str] = []
        self.aliases: dict[str, str] = {}  # conv layer -> the first layer reading the same tensor

    # -- recording ------------------------------------------------------------------------------------------

    def record(self, batch: torch.Tensor) -> None:
        """Number the calls of one forward pass and find the producer of every conv layer's input."""
        from torch.utils._python_dispatch import TorchDispatchMode

        produced: dict[int, tuple[Any, int, int]] = {}  # id(tensor) -> (weakref, call, position)
        calls = [0]
        sites, order, aliases = self.sites, self.order, self.aliases
        by_site: dict[tuple[int, int], str] = {}
        data = batch.to(getattr(self.runner, "device", "cpu"))

        class Record(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                inplace = func.overloadpacket.__name__.endswith("_")
                inputs = {id(a) for a in args if torch.is_tensor(a)}
                for position, tensor in enumerate(_outputs(out)):
                    # an op handing back one of its own inputs (a no-op slice, an alias) did not produce it,
                    # an in-place op did (it is the last writer)
                    if torch.is_tensor(tensor) and (inplace or id(tensor) not in inputs):
                        produced[id(tensor)] = (weakref.ref(tensor), calls[0], position)
                calls[0] += 1
                return out

        def sink(name: str, tensor: Any) -> None:
            if name in sites or name in aliases or not torch.is_tensor(tensor) or tensor.ndim < 3:
                return
            if tensor is data:
                site = Site(INPUT, 0, tuple(tensor.shape[1:]))
            else:
                entry = produced.get(id(tensor))
                if entry is None or entry[0]() is not tensor:
                    return  # not produced by a call the mode saw: cannot be replaced (left unprobed)
                site = Site(entry[1], entry[2], tuple(tensor.shape[1:]))
            key = (site.call, site.position)
            if key in by_site:
                aliases[name] = by_site[key]
                return
            by_site[key] = name
            sites[name] = site
            order.append(name)

        with self._stable(), Record():
            self.runner.run(data, sink)
        self.calls = calls[0]

    # -- running --------------------------------------------------------------------------------------------

    def reference(self, batch: torch.Tensor, sink: Callable[[str, Any], None]) -> list[torch.Tensor]:
        """A plain run: the outputs, every conv input handed to ``sink`` (for the Gram matrices)."""
        with self._stable():
            return [t.detach() for t in flatten_outputs(self.runner.run(batch, sink))]

    def _stable(self):
        """TorchScript's profiling executor runs other operations on the first calls than on later ones (it
        profiles, then optimises): with optimisation off, every run executes the same sequence of calls."""
        import contextlib

        return torch.jit.optimized_execution(False) if self.kind == "torchscript" else contextlib.nullcontext()

    def run(self, batch: torch.Tensor, edits: dict[str, Edit]) -> list[torch.Tensor]:
        """The outputs with the feature maps of ``edits`` (layer name -> filter) replaced."""
        from torch.utils._python_dispatch import TorchDispatchMode

        at: dict[int, list[tuple[int, tuple[int, ...], Edit]]] = {}
        data = batch.to(getattr(self.runner, "device", "cpu"))
        for name, edit in edits.items():
            site = self.sites[name]
            if site.call == INPUT:
                if tuple(data.shape[1:]) != site.shape:
                    raise AnalysisError(f"probe {name}: input of shape {tuple(data.shape)}, recorded {site.shape}")
                data = edit(data)
            else:
                at.setdefault(site.call, []).append((site.position, site.shape, edit))
        done = [0]
        calls = [0]

        class Replace(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                todo = at.get(calls[0])
                calls[0] += 1
                if not todo:
                    return out
                items = _outputs(out)
                for position, shape, edit in todo:
                    tensor = items[position] if position < len(items) else None
                    if not torch.is_tensor(tensor) or tuple(tensor.shape[1:]) != shape:
                        raise AnalysisError("the model's operations differ from the recorded run: the "
                                            "intervention could not be placed", hint="a model whose control "
                                            "flow depends on its inputs cannot be probed this way")
                    new = edit(tensor)
                    if func.overloadpacket.__name__.endswith("_"):  # in place: every holder sees the new values
                        tensor.copy_(new)
                    else:
                        items[position] = new
                    done[0] += 1
                if isinstance(out, (list, tuple)):
                    return type(out)(items)
                return items[0]

        with torch.no_grad(), self._stable(), Replace():
            out = self.runner.run(data, lambda _name, _tensor: None)
        if done[0] != sum(len(v) for v in at.values()):
            raise AnalysisError(f"only {done[0]} of {sum(len(v) for v in at.values())} interventions took place "
                                "(the model ran fewer operations than when it was recorded)")
        return [t.detach() for t in flatten_outputs(out)]
