"""Where a checkpoint sits in its training run: its step, read from the file or its name, and the series order.

Sources of a step, in the order :func:`order_by_step` prefers them:

1. ``checkpoint``: a PyTorch/Lightning checkpoint's top-level ``global_step`` (else ``step``, ``iteration``),
   or, failing those, its ``epoch`` (read with ``weights_only=True``: nothing in the file runs);
2. ``metadata``: a safetensors ``__metadata__`` key ``global_step``, ``step``, ``iteration`` or ``iter``
   (else ``epoch``), an integer written as a string;
3. ``file name``: ``step_0400``, ``step=1200``, ``global_step-5``, ``iter10``, ``checkpoint-500``,
   ``epoch=3`` (Lightning's ``epoch=3-step=1200.ckpt`` gives step 1200), or else the one number in the name.

One series uses one source and one unit for every file: the first source (``checkpoint`` and ``metadata``
count as one, "the file") that every file provides. Files that give no step, steps in different units
(steps for some files, epochs for others) and two files at the same step are :class:`StepOrderError` with a
message naming the files.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ..errors import StepOrderError

STEP_KEYS = ("global_step", "step", "iteration", "iter")
EPOCH_KEYS = ("epoch",)
ORDERS = ("auto", "file", "name", "given")
_STEP_WORDS = r"(?:global[_-]?step|step|iteration|iter|it|checkpoint|ckpt)"
_NAMED = re.compile(rf"(?:^|[^a-z]){_STEP_WORDS}[_=\-.]?(\d+)(?!\d)", re.IGNORECASE)
_EPOCH = re.compile(r"(?:^|[^a-z])epoch[_=\-.]?(\d+)(?!\d)", re.IGNORECASE)
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class StepInfo:
    """The step a checkpoint was saved at and where that number came from.

    ``unit`` is ``step`` or ``epoch`` (or ``index`` for ``--order given``); ``origin`` one of ``checkpoint``,
    ``metadata``, ``file name``, ``given order``; ``key`` the key or pattern read (``global_step``, ``step_N``).
    """

    step: int
    unit: str
    origin: str
    key: str
    epoch: int | None = None

    def describe(self) -> str:
        where = {"checkpoint": "the checkpoint's", "metadata": "safetensors __metadata__", "file name": "the file name's",
                 "given order": "the order given", "record": "the Monitor records'"}[self.origin]
        return f"{where} {self.key}" if self.origin != "given order" else "the order given on the command line"


MAX_STEP = 2**63 - 1  # steps are int64 everywhere else (Lightning, the JSON schema, numpy)


class _OutOfRange(ValueError):
    """A step value that is a number but not a usable step (past :data:`MAX_STEP`, infinite, huge text)."""


def _as_int(value: object) -> int | None:
    """A step from a checkpoint value: a non-negative integer (or integral float, or digits as text) up to
    :data:`MAX_STEP`; None for what is not a step; :class:`_OutOfRange` for a number that cannot be one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if value > MAX_STEP:
            raise _OutOfRange("an integer past 2**63 - 1")
        return value if value >= 0 else None
    if hasattr(value, "item") and getattr(value, "numel", lambda: 0)() == 1:  # a 0-d tensor
        return _as_int(value.item())
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise _OutOfRange("not a finite number")
        if value > MAX_STEP:
            raise _OutOfRange("a number past 2**63 - 1")
        return int(value) if value.is_integer() and value >= 0 else None
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 64:
            if re.fullmatch(r"[0-9.eE+\-]+", text[:64]) and text[:1].isdigit():
                raise _OutOfRange(f"a number of {len(text):,} characters")
            return None
        if re.fullmatch(r"\d+(\.0*)?", text):
            return _as_int(int(text.split(".")[0]))
        if re.fullmatch(r"\d+(\.\d*)?[eE][+\-]?\d+", text):
            return _as_int(float(text))
    return None


def _from_mapping(values: Mapping[str, object], origin: str) -> StepInfo | None:
    epoch = next((v for v in (_as_int(values.get(k)) for k in EPOCH_KEYS) if v is not None), None)
    for key in STEP_KEYS:
        step = _as_int(values.get(key))
        if step is not None:
            return StepInfo(step, "step", origin, key, epoch)
    if epoch is not None:
        return StepInfo(epoch, "epoch", origin, "epoch", epoch)
    return None


def step_from_name(path: str | Path) -> StepInfo | None:
    """A step from the file name (see the module docstring); None when the name holds no usable number."""
    stem = Path(path).name
    for suffix in (".safetensors.index.json", ".safetensors", ".pth.tar", ".ckpt", ".pth", ".pt", ".bin", ".onnx"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    named = _NAMED.findall(stem)
    epoch = _EPOCH.findall(stem)
    numbers = _NUMBER.findall(stem)
    long = next((n for n in named + epoch + numbers if _too_big(n)), None)
    if long is not None:
        raise StepOrderError(f"{Path(path).name}: the number in its name ({len(long):,} digits) is not a step "
                             "(an integer from 0 to 2**63 - 1)", hint="rename the file, or pass --order given")
    if len(named) == 1:
        return StepInfo(int(named[0]), "step", "file name", "step number",
                        int(epoch[0]) if len(epoch) == 1 else None)
    if not named and len(epoch) == 1:
        return StepInfo(int(epoch[0]), "epoch", "file name", "epoch number", int(epoch[0]))
    if not named and len(numbers) == 1:
        return StepInfo(int(numbers[0]), "step", "file name", "number")
    return None


def _too_big(digits: str) -> bool:
    digits = digits.lstrip("0")
    return len(digits) > 19 or (len(digits) == 19 and int(digits) > MAX_STEP)


def _safetensors_metadata(path: Path) -> Mapping[str, str]:
    import json

    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return {}
        (size,) = struct.unpack("<Q", head)
        if size > 100_000_000:
            return {}
        try:
            header = json.loads(handle.read(size))
        except ValueError:
            return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def _torch_top_level(path: Path) -> Mapping[str, object]:
    """The top-level scalars of a PyTorch checkpoint dict (Lightning: ``global_step``, ``epoch``)."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:  # unreadable or refused: no step from the file (the analysis reports why)
        return {}
    if not isinstance(obj, Mapping):
        return {}
    return {k: v for k, v in obj.items() if isinstance(k, str) and k in STEP_KEYS + EPOCH_KEYS}


def step_from_file(path: str | Path) -> StepInfo | None:
    """A step recorded inside the file (Lightning/PyTorch checkpoint keys, or safetensors metadata)."""
    from ..loaders import detect_format

    path = Path(path)
    try:
        fmt = detect_format(path)
    except Exception:
        return None
    try:
        if fmt == "safetensors":
            return _from_mapping(_safetensors_metadata(path), "metadata")
        if fmt in ("pytorch-zip", "pytorch-pickle"):
            return _from_mapping(_torch_top_level(path), "checkpoint")
    except _OutOfRange as exc:
        raise StepOrderError(f"{path.name}: its recorded step ({exc}) is not usable: steps are integers from 0 "
                             "to 2**63 - 1",
                             hint="pass --order name or --order given to order the files another way") from None
    return None


def order_by_step(sources: Sequence[str], order: str = "auto") -> list[tuple[str, StepInfo]]:
    """``sources`` with their steps, sorted by step; see the module docstring for the rules.

    ``order``: ``auto`` (the file, else the name), ``file``, ``name``, or ``given`` (the sources' own order,
    numbered 0, 1, ...). Raises :class:`StepOrderError` for missing, mixed or repeated steps.
    """
    if order not in ORDERS:
        raise StepOrderError(f"--order {order}: use one of {', '.join(ORDERS)}")
    if order == "given":
        return [(s, StepInfo(i, "index", "given order", "position")) for i, s in enumerate(sources)]
    from_file = {s: step_from_file(s) for s in sources} if order in ("auto", "file") else {}
    from_name = {s: step_from_name(s) for s in sources} if order in ("auto", "name") else {}
    if order == "auto":
        chosen = from_file if all(from_file.values()) else from_name if all(from_name.values()) else None
        if chosen is None:
            _no_common_source(sources, from_file, from_name)
    else:
        chosen = from_file if order == "file" else from_name
        missing = [s for s in sources if chosen[s] is None]
        if missing:
            where = "in the file (checkpoint keys or safetensors metadata)" if order == "file" else "in the file name"
            raise StepOrderError(f"no step {where} for {_names(missing)}",
                                 hint="--order auto|file|name|given picks where steps come from")
    steps = {s: chosen[s] for s in sources}  # type: ignore[index]
    _check_units(steps)
    _check_unique(steps)
    return sorted(((s, info) for s, info in steps.items()), key=lambda pair: pair[1].step)


def _names(sources: Iterable[str], limit: int = 4) -> str:
    names = [Path(s).name for s in sources]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _no_common_source(sources, from_file, from_name) -> None:
    neither = [s for s in sources if not from_file.get(s) and not from_name.get(s)]
    if neither:
        raise StepOrderError(
            f"no training step found for {_names(neither)}: not in the file (global_step/step/epoch) nor in its name",
            hint="name the files after their step (step_0400.safetensors), or pass --order given")
    file_only = [s for s in sources if from_file.get(s) and not from_name.get(s)]
    name_only = [s for s in sources if from_name.get(s) and not from_file.get(s)]
    raise StepOrderError(
        f"mixed step sources: {_names(file_only)} record a step only inside the file, {_names(name_only)} "
        "only in the name",
        hint="make every file carry its step the same way, or pass --order name|file|given")


def _check_units(steps: Mapping[str, StepInfo]) -> None:
    units = {info.unit for info in steps.values()}
    if len(units) > 1:
        epochs = [s for s, i in steps.items() if i.unit == "epoch"]
        others = [s for s, i in steps.items() if i.unit != "epoch"]
        raise StepOrderError(
            f"mixed step units: {_names(others)} give a training step, {_names(epochs)} only an epoch",
            hint="compare like with like, or pass --order name|given")


def _check_unique(steps: Mapping[str, StepInfo]) -> None:
    seen: dict[int, str] = {}
    for source, info in steps.items():
        if info.step in seen:
            raise StepOrderError(
                f"two checkpoints at {info.unit} {info.step}: {Path(seen[info.step]).name} and {Path(source).name} "
                f"(from {info.describe()})",
                hint="pass each checkpoint once, or --order given to keep the order given")
        seen[info.step] = source
