"""cbn_inspect.Monitor (and the Lightning callback): records of a live training run equal ``cbn-inspect`` on
the checkpoint saved at the same step."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import cbn_inspect
from cbn_inspect import Monitor, Settings
from cbn_inspect.report.json_report import validate_report

# Everything a layer's analysis produces (not where the geometry came from, nor the notes).
NUMBERS = ("mode_count", "capacity", "utilisation", "threshold", "spectral_norm", "stable_rank", "effective_rank",
           "smallest_kept", "largest_discarded", "gap_ratio", "degree_counts", "degree_counts_by_metric",
           "pair_degree_counts", "energy_by_degree", "profile", "grid", "stride", "groups", "batchnorm", "name")
CALL = ("found", "start", "end", "rank", "degree_counts", "strength", "strength_label", "gap_ratio",
        "typical_gap_ratio", "clean", "utilisation", "plateau_length")


class Block(nn.Module):
    """Circular conv + BatchNorm + ReLU, named so that a state dict pairs them too (``conv`` -> ``bn``)."""

    def __init__(self, c_in: int, c_out: int, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, padding_mode="circular", bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(Block(1, 6, 5), Block(6, 6, 5), Block(6, 6, 3), Block(6, 6, 5))
        self.head = nn.Conv2d(6, 1, 3, padding=1, padding_mode="circular", bias=False)

    def forward(self, x):
        return self.head(self.blocks(x))


def numbers(report: dict) -> tuple[list, dict]:
    return ([{k: layer[k] for k in NUMBERS} for layer in report["layers"]],
            {k: report["bottleneck"][k] for k in CALL})


def train(steps: int, every: int, out: Path, folder: Path, settings: Settings):
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(16, 1, 8, 8)
    y = torch.roll(x, 1, dims=-1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=1e-2)
    monitor = Monitor(model, every=every, out=out, settings=settings, input_size=8)
    saved = {}
    for _ in range(steps):
        model.train()
        loss = (model(x) - y).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        record = monitor.step()
        if record is not None:
            path = folder / f"step_{record['step']:03d}.safetensors"
            state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
                     if not k.endswith("num_batches_tracked")}
            save_file(state, str(path), metadata={**monitor.checkpoint_metadata(), "step": str(record["step"])})
            saved[record["step"]] = path
    return model, monitor, saved


def test_records_equal_cbn_inspect_on_the_checkpoint_of_that_step(tmp_path, cli):
    settings = Settings(threads=1)
    out = tmp_path / "cbn.jsonl"
    _, monitor, saved = train(steps=9, every=3, out=out, folder=tmp_path, settings=settings)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["step"] for r in lines] == [3, 6, 9] == sorted(saved)
    for record in lines:
        validate_report(record)  # the report's JSON plus an optional ``step``
        assert record["source"]["format"] == "live-module"
        assert [layer["batchnorm"] for layer in record["layers"]] == [f"blocks.{i}.bn" for i in range(4)] + [None]
        result = cli(str(saved[record["step"]]), "--json", "-")
        assert result.exit_code == 0, result.output
        expected = json.loads(result.stdout)
        assert numbers(record) == numbers(expected)
    # the weights moved between records: the records are not one analysis repeated
    assert lines[0]["layers"][1]["spectral_norm"] != lines[-1]["layers"][1]["spectral_norm"]


def test_records_equal_the_whole_module_traced_from_a_file(tmp_path, cli):
    """The same with the trusted whole-module path (``--trust-code --input-size``): traced both ways."""
    model, monitor, _ = train(steps=2, every=2, out=None, folder=tmp_path, settings=Settings(threads=1))
    path = tmp_path / "model.pt"
    torch.save(model, path)
    result = cli(str(path), "--trust-code", "--input-size", "8", "--json", "-")
    assert result.exit_code == 0, result.output
    assert numbers(monitor.last) == numbers(json.loads(result.stdout))
    assert monitor.last["order_source"] == "trace"


def test_background_mode_writes_the_same_records(tmp_path):
    def run(background: bool, out: Path) -> list[dict]:
        torch.manual_seed(0)
        model = Net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        x = torch.randn(4, 1, 8, 8)
        with Monitor(model, every=2, out=out, settings=Settings(threads=1), input_size=8,
                     background=background) as monitor:
            for _ in range(6):
                loss = model(x).square().mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()  # changes the weights while an earlier analysis may still run
                monitor.step()
        return [json.loads(line) for line in out.read_text().splitlines()]

    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    plain, background = run(False, tmp_path / "a.jsonl"), run(True, tmp_path / "b.jsonl")
    assert [r["step"] for r in background] == [2, 4, 6]
    assert [strip(r) for r in background] == [strip(r) for r in plain]


def test_monitor_copies_the_weights_it_analyses():
    model = Net()
    monitor = Monitor(model, every=1, input_size=8)
    snap = monitor.snapshot()
    before = snap.layers[0].weight.load().clone()
    with torch.no_grad():
        model.blocks[0].conv.weight.mul_(3.0)
    assert torch.equal(snap.layers[0].weight.load(), before)  # a copy, not a view of the live weight
    assert not torch.equal(monitor.snapshot().layers[0].weight.load(), before)  # the next one sees the change


def test_tracing_keeps_each_modules_mode():
    model = Net()
    model.train()
    model.blocks[1].eval()  # e.g. a frozen block
    Monitor(model, every=1, input_size=8)
    assert model.training and model.blocks[0].bn.training and not model.blocks[1].bn.training


def test_schedule_every_n_steps_and_explicit_steps(tmp_path):
    monitor = Monitor(Net(), every=4, input_size=8, settings=Settings(threads=1), start_step=2)
    done = [monitor.step() is not None for _ in range(6)]  # steps 3..8
    assert done == [False, True, False, False, False, True]
    assert monitor.step(global_step=8) is None  # already recorded
    assert monitor.step(global_step=12)["step"] == 12
    with pytest.raises(ValueError):
        Monitor(Net(), every=0)


def test_callback_import_names_the_extra_when_lightning_is_missing(monkeypatch):
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "cbn_inspect.series.lightning", raising=False)
    with pytest.raises(ImportError) as info:
        importlib.import_module("cbn_inspect.series.lightning")
    message = str(info.value)
    assert "cbn-inspect[lightning]" in message and "\n" not in message
    with pytest.raises(ImportError, match=r"cbn-inspect\[lightning\]"):
        cbn_inspect.CbnInspectCallback  # noqa: B018


def _lightning():
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


@pytest.mark.skipif(_lightning() is None, reason="neither lightning nor pytorch_lightning is installed")
def test_lightning_callback_records_and_logs(tmp_path):
    pl = _lightning()
    from cbn_inspect.series.lightning import CbnInspectCallback
    from cbn_inspect.inspect import inspect_source
    from cbn_inspect.report.json_report import report_to_dict

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = Net()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return (self.net(x) - y).square().mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    class Saver(pl.Callback):
        """Saves the weights at the callback's steps, with its monitor's metadata."""

        def __init__(self, watch):
            self.watch, self.paths = watch, {}

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            step = trainer.global_step
            if step % 2 == 0:
                path = tmp_path / f"step_{step}.safetensors"
                state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()
                         if not k.endswith("num_batches_tracked")}
                save_file(state, str(path), metadata=self.watch.monitor.checkpoint_metadata())
                self.paths[step] = path

    class Capture(pl.loggers.Logger if hasattr(pl, "loggers") else object):
        def __init__(self):
            super().__init__()
            self.logged = []

        @property
        def name(self):
            return "capture"

        @property
        def version(self):
            return 0

        def log_hyperparams(self, params, *args, **kwargs):
            pass

        def log_metrics(self, metrics, step=None):
            if any(k.startswith("cbn/") for k in metrics):
                self.logged.append((step, dict(metrics)))

    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.roll(x, 1, -1)), batch_size=4)
    callback = CbnInspectCallback(every=2, out=tmp_path / "cbn.jsonl", settings=Settings(threads=1), input_size=8)
    saver = Saver(callback)
    logger = Capture()
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
    trainer = pl.Trainer(max_steps=6, callbacks=[callback, saver, checkpoints], logger=logger,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(Module(), data)
    records = [json.loads(line) for line in (tmp_path / "cbn.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    for record in records:
        expected = report_to_dict(inspect_source(saver.paths[record["step"]], Settings(threads=1)))
        assert numbers(record) == numbers(expected)
    assert [step for step, _ in logger.logged] == [2, 4, 6]
    assert "cbn/strength" in logger.logged[0][1] and "cbn/modes/net.blocks.0.conv" in logger.logged[0][1]
    # Lightning's own checkpoints order by their global_step
    from cbn_inspect.series import order_by_step

    ordered = order_by_step([str(p) for p in sorted((tmp_path / "ckpt").glob("*.ckpt"), reverse=True)])
    assert [info.step for _, info in ordered] == [2, 4, 6]
    assert {(info.origin, info.key) for _, info in ordered} == {("checkpoint", "global_step")}


THREADS_SCRIPT = r"""
import json, os, sys
import numpy, torch
from threadpoolctl import threadpool_info, threadpool_limits
sys.path.insert(0, sys.argv[1])
from test_series_monitor import Net
from cbn_inspect import Monitor, Settings

torch.set_num_threads(3)
os.environ["OMP_NUM_THREADS"] = "3"
os.environ.pop("MKL_NUM_THREADS", None)
threadpool_limits(limits=2, user_api="blas")

def state():
    return {"torch": torch.get_num_threads(), "env": {k: os.environ.get(k) for k in
            ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
            "blas": sorted((i["internal_api"], i["filepath"], i["num_threads"]) for i in threadpool_info()
                           if i["user_api"] == "blas")}

before = state()
seen = []
import cbn_inspect.inspect as inspect_module
real = inspect_module.analyze_model
def spy(*args, **kwargs):
    seen.append(torch.get_num_threads())
    return real(*args, **kwargs)
inspect_module.analyze_model = spy
monitor = Monitor(Net(), every=1, input_size=8, settings=Settings(threads=2))
first = monitor.step()
after_sync = state()
with Monitor(Net(), every=1, input_size=8, settings=Settings(threads=2), background=True) as bg:
    bg.step().result()
after_background = state()
print(json.dumps({"before": before, "sync": after_sync, "background": after_background, "seen": seen,
                  "modes": first["layers"][0]["mode_count"]}))
"""


def test_monitor_restores_torch_threads_and_blas_pools():
    import subprocess

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", THREADS_SCRIPT, str(Path(__file__).parent)], capture_output=True,
                          text=True, timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["before"]["torch"] == 3 and result["before"]["env"]["OMP_NUM_THREADS"] == "3"
    assert any(n == 2 for _, _, n in result["before"]["blas"])  # numpy's BLAS held at 2 by the caller
    assert result["sync"] == result["before"] and result["background"] == result["before"]
    assert result["seen"] == [1, 1]  # inside, the analysis ran single-threaded kernels
    assert result["modes"] > 0
