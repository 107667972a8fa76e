"""Running a TorchScript program (only under ``--trust-code``: its code runs with the user's permissions).

A loaded TorchScript program takes no module hooks, so its convolutions are observed one level down, as the
TorchScript loader does: a ``TorchDispatchMode`` sees every ``aten`` convolution the interpreter executes,
with its input and output tensors. The weight passed is matched to the program's named parameters by
storage, which gives each call its layer name. An explicit pad feeding a conv (constant, reflect, replicate,
and torch's circular padding, written into a ``new_empty`` tensor) is looked through: the feature map
profiled on the input side is the one before padding, on the layer's own grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import UnsafeContentError
from ..loaders.pytorch._torchscript import CONV_OPS, PAD_OPS, _jit_load
from .inputs import ModelInput
from .runners import Sink


def load_program(path: Path, trust_code: bool) -> Any:
    """``torch.jit.load`` -- only with ``trust_code``: running the program executes code from the file."""
    if not trust_code:
        raise UnsafeContentError(
            f"{path}: profiling activations runs this TorchScript program, whose code can read and write files",
            hint="if you trust this file, re-run with --trust-code",
        )
    return _jit_load(path)  # the loader's: storages checked against their records first (no native crash)


def program_input(program: Any) -> ModelInput:
    """Channels and axes from the first conv weight; a program declares no input size (--input-size)."""
    first = next((t for t in program.state_dict().values() if t.ndim in (3, 4, 5) and t.is_floating_point()), None)
    ndim = first.ndim - 2 if first is not None else 2
    channels = int(first.shape[1]) if first is not None else 3
    return ModelInput(channels=channels, spatial=None, ndim=ndim, source="TorchScript parameters")


class TorchScriptRunner:
    kind = "torchscript"

    def __init__(self, program: Any, *, side: str, device: str) -> None:
        self.program = program.eval().to(device)
        self.side = side
        self.device = device
        self.model_input = program_input(program)
        self.notes = ["a TorchScript program, run under --trust-code; convs observed as aten calls"]
        self.names = {t.untyped_storage().data_ptr(): n for n, t in self.program.state_dict().items()}

    def run(self, batch: torch.Tensor, sink: Sink) -> Any:
        from torch.utils._python_dispatch import TorchDispatchMode

        names, side = self.names, self.side
        before_pad: dict[int, Any] = {}
        keep: list[Any] = []
        calls = [0]

        class Watch(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                op = func.overloadpacket.__name__
                if op in PAD_OPS or op == "new_empty":
                    keep.append(out)
                    source = args[0]
                    before_pad[id(out)] = before_pad.get(id(source), source)
                elif op in CONV_OPS:
                    name = names.get(args[1].untyped_storage().data_ptr())
                    if name is None:
                        name = f"conv_call{calls[0]}"
                    elif name.endswith(".weight"):
                        name = name[: -len(".weight")]
                    calls[0] += 1
                    x = args[0]
                    source = before_pad.get(id(x))
                    if source is not None and tuple(source.shape[:2]) == tuple(x.shape[:2]) and all(
                            a <= b for a, b in zip(source.shape[2:], x.shape[2:])):
                        x = source
                    sink(name, x if side == "input" else out)
                return out

        with torch.no_grad(), Watch():
            return self.program(batch.to(self.device))
