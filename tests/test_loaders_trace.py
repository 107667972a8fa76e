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
