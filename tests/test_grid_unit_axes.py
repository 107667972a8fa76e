"""An axis on which every kernel has extent 1 (1-D convs stored as (k, 1) Conv2d) gets grid 1, not 32."""

from __future__ import annotations

from collections import OrderedDict

import torch

from cbn_inspect import Settings, inspect_source


def _audio_state():
    torch.manual_seed(0)
    return OrderedDict([("conv1.weight", torch.randn(8, 1, 64, 1)), ("conv2.weight", torch.randn(8, 8, 16, 1)),
                        ("conv3.weight", torch.randn(8, 8, 16, 1))])


def test_unit_kernel_axis_gets_grid_one(tmp_path):
    torch.save(_audio_state(), tmp_path / "crepe_like.pt")
    report = inspect_source(tmp_path / "crepe_like.pt")
    assert [r.layer.grid for r in report.layers] == [(64, 1), (32, 1), (32, 1)]
    # counts are those of the 1-D layers on the 1-D grid, not inflated 32 times by the default grid
    for r in report.layers:
        assert r.metrics.capacity == r.layer.grid[0] * min(r.layer.in_channels, r.layer.out_channels)
        assert any("grid 1 there" in n for n in r.layer.notes)
    one_d = OrderedDict((k, v[..., 0]) for k, v in _audio_state().items())
    torch.save(one_d, tmp_path / "conv1d.pt")
    flat = inspect_source(tmp_path / "conv1d.pt")
    assert [r.metrics.mode_count for r in report.layers] == [r.metrics.mode_count for r in flat.layers]
    # a one-number --grid also keeps the unit axis at 1; an explicit HxW is taken as given
    assert inspect_source(tmp_path / "crepe_like.pt", Settings(grid=(128,))).layers[1].layer.grid == (128, 1)
    assert inspect_source(tmp_path / "crepe_like.pt", Settings(grid=(128, 4))).layers[1].layer.grid == (128, 4)


def test_square_kernels_and_all_pointwise_models_keep_the_default(tmp_path):
    torch.manual_seed(0)
    torch.save(OrderedDict([("a.weight", torch.randn(4, 3, 3, 3)), ("b.weight", torch.randn(4, 4, 1, 1))]),
               tmp_path / "m.pt")
    assert [r.layer.grid for r in inspect_source(tmp_path / "m.pt").layers] == [(32, 32), (32, 32)]
    torch.save(OrderedDict([("a.weight", torch.randn(4, 3, 1, 1)), ("b.weight", torch.randn(4, 4, 1, 1))]),
               tmp_path / "p.pt")
    assert [r.layer.grid for r in inspect_source(tmp_path / "p.pt").layers] == [(32, 32), (32, 32)]
