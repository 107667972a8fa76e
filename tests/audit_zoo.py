"""Test zoos for the audit tests: small synthetic checkpoints in every format the loaders read.

:func:`write_mixed_zoo` writes 30 items: 26 good ones (safetensors, torch zip and legacy pickle files, wrapped
state dicts, a sharded checkpoint), 3 corrupt files and 1 file without conv layers, plus entries a folder
search must skip (a hidden file, a README, the shards of the sharded checkpoint).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from cbn_inspect.synthetic import planted_network, random_network

REPO = Path(__file__).resolve().parents[1]
SMALL = {"depth": 6, "channels": 8, "grid": (8, 8)}

OK_COUNT = 26
CORRUPT = ("corrupt/empty.safetensors", "corrupt/truncated.safetensors", "corrupt/garbage.pt")
NO_CONV = "linear_only.safetensors"


def _save_safetensors(path: Path, state, metadata=None) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path), metadata=metadata)


def _save_torch(path: Path, obj, legacy: bool = False) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, str(path), _use_new_zipfile_serialization=not legacy)


def _torch_state(state):
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def write_small_zoo(folder: Path, count: int, *, start_seed: int = 0, **shape) -> list[Path]:
    """``count`` small planted safetensors files (the benchmark's and the resume test's zoo)."""
    shape = {**SMALL, **shape}
    depth = shape["depth"]
    paths = []
    for i in range(count):
        state, meta = planted_network(planted=(1, depth - 2), seed=start_seed + i, **shape)
        path = folder / f"m{i:04d}.safetensors"
        _save_safetensors(path, state, meta)
        paths.append(path)
    return paths


def write_mixed_zoo(folder: Path) -> Path:
    for i in range(10):
        state, meta = planted_network(planted=(1, 4), seed=i, **SMALL)
        _save_safetensors(folder / "planted" / f"p{i:02d}.safetensors", state, meta)
    for i in range(4):
        state, meta = random_network(seed=100 + i, **SMALL)
        _save_safetensors(folder / "random" / f"r{i}.safetensors", state, meta)
    for i in range(6):
        state, _ = planted_network(planted=(1, 4), seed=20 + i, **SMALL)
        _save_torch(folder / "torch" / f"t{i}.pt", _torch_state(state))
    for i in range(2):
        state, _ = planted_network(planted=(1, 4), seed=30 + i, **SMALL)
        _save_torch(folder / "torch" / f"wrapped{i}.pth", {"state_dict": _torch_state(state), "epoch": 3})
        _save_torch(folder / "lightning" / f"run{i}.ckpt", {"model": _torch_state(state)})
    state, _ = planted_network(planted=(1, 4), seed=40, **SMALL)
    _save_torch(folder / "legacy" / "pytorch_model.bin", _torch_state(state), legacy=True)
    # a sharded checkpoint: one item (the index), its two shards are not items
    state, meta = planted_network(planted=(1, 4), seed=50, **SMALL)
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[:3], "model-00002-of-00002.safetensors": names[3:]}
    for shard, keys in shards.items():
        _save_safetensors(folder / "sharded" / shard, {k: state[k] for k in keys}, meta)
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (folder / "sharded" / "model.safetensors.index.json").write_text(json.dumps(index))
    # three corrupt files and one without conv layers
    (folder / "corrupt").mkdir()
    (folder / CORRUPT[0]).write_bytes(b"")
    good = (folder / "planted" / "p00.safetensors").read_bytes()
    (folder / CORRUPT[1]).write_bytes(good[: len(good) // 2])
    (folder / CORRUPT[2]).write_bytes(np.random.default_rng(0).bytes(4096))
    _save_safetensors(folder / NO_CONV, {"fc.weight": np.ones((10, 20), np.float32),
                                         "fc.bias": np.zeros(10, np.float32)})
    # not items
    _save_torch(folder / "planted" / ".hidden.pt", _torch_state(state))
    (folder / "README.txt").write_text("a zoo\n")
    return folder


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


CLI = [sys.executable, "-c", "import sys; from cbn_inspect.cli import main; sys.argv[0] = 'cbn-inspect'; main()"]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120, **kwargs):
    """``cbn-inspect ARGS`` in a fresh interpreter (the real entry point, real worker processes)."""
    return subprocess.run([*CLI, *args], env=env or cli_env(), capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
