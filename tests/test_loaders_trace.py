"""Tracing nn.Modules: grids are the conv's input size, order is execution, BatchNorm paired by data flow."""

from __future__ import annotations

import torch
import torch.nn as nn

from cbn_inspect.loaders.pytorch._trace import bind_specs, module_tensors, trace_convs


class Net(nn.Module):
    """Registration order differs from execution order; one conv never runs; circular padding; a BN."""

    def __init__(self) -> None:
        super().__init__()
        self.late = nn.Conv2d(8, 4, 3, padding=1, padding_mode="circular")
        self.early = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8, eps=1e-3)
        self.up = nn.ConvTranspose2d(4, 2, 2, stride=2, groups=2)
        self.unused = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return self.up(self.late(torch.relu(self.bn(self.early(x)))))


def test_trace_records_grids_order_geometry_and_batchnorm():
    model = Net()
    specs, notes = trace_convs(model, (3, 16, 12))
    names = [s.name for s in specs]
    assert names == ["early", "late", "up", "unused"]
    early, late, up, unused = specs
    assert early.grid == (16, 12) and early.stride == (2, 2)
    assert late.grid == (8, 6) and late.padding_mode == "circular"
    assert up.grid == (8, 6) and up.transposed and up.groups == 2 and up.stride == (2, 2)
    assert early.batchnorm == ("bn", 1e-3) and late.batchnorm is None
    assert unused.grid is None and not unused.ran
    assert any("did not run" in n for n in notes)

    layers = bind_specs(specs, module_tensors(model))
    assert [layer.grid_source for layer in layers] == ["trace", "trace", "trace", "default"]
    assert layers[0].batchnorm.name == "bn" and layers[0].batchnorm.eps == 1e-3
    assert layers[2].kind == "conv_transpose2d"
    assert torch.equal(layers[1].weight.load(), model.late.weight.detach())


def test_failed_forward_is_recorded_not_raised():
    model = Net()
    specs, notes = trace_convs(model, (5, 16, 16))  # wrong channel count
    assert all(s.grid is None for s in specs)
    assert any("failed" in n for n in notes)


def test_a_bn_that_does_not_consume_the_conv_output_is_not_folded():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(torch.relu(self.conv(x)))

    specs, _ = trace_convs(Skip(), (3, 8, 8))
    assert specs[0].batchnorm is None


class FixedSize(nn.Module):
    """Runs only at 3x16x16 (a flatten into a fixed-size head); strided, registered out of execution order."""

    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Conv2d(8, 4, 3, padding=1)
        self.a = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x):
        return self.head(self.b(torch.relu(self.a(x))).flatten(1))


def test_a_failed_trace_of_a_trusted_torchscript_falls_back_to_the_static_read(tmp_path):
    from cbn_inspect import inspect_source, load

    path = tmp_path / "fixed.pt"
    torch.jit.script(FixedSize()).save(str(path))
    traced = load(path, trust_code=True, input_size="16")
    assert [(layer.name, layer.grid, layer.grid_source) for layer in traced.layers] == [
        ("a", (16, 16), "trace"), ("b", (8, 8), "trace")]
    static = load(path)  # the static read: no code run
    failed = load(path, trust_code=True, input_size="20")  # the head refuses 4x10x10 inputs
    assert [(layer.name, layer.stride, layer.order) for layer in failed.layers] == \
        [(layer.name, layer.stride, layer.order) for layer in static.layers]
    assert [layer.name for layer in failed.layers] == ["a", "b"] and failed.layers[0].stride == (2, 2)
    assert failed.order_source == static.order_source and failed.source.format == static.source.format
    notes = failed.source.notes
    assert "running the program at input 3x20x20 failed" in notes[0]
    assert notes[1].startswith("fell back to the static read of the archive")
    report = inspect_source(path, trust_code=True, input_size="20")
    assert any("fell back to the static read" in w for w in report.warnings)
