"""Expanding audit sources into items, and the row keys (content hash + settings hash)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cbn_inspect.batch.records import AuditItem
from cbn_inspect.batch.sources import content_hash, expand_sources, expand_timm, settings_hash, walk_folder
from cbn_inspect.errors import UsageError
from cbn_inspect.records import Settings, ToleranceRule
from cbn_inspect.report import settings_to_dict


PICKLE = b"\x80\x02}q\x00."  # an empty dict: what a reader recognises by content (folders are sniffed)


def touch(path: Path, data: bytes = PICKLE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folder_is_searched_recursively_for_checkpoint_names(tmp_path):
    for name in ("a.safetensors", "sub/b.pt", "sub/deeper/c.pth", "d.bin", "e.ckpt", "f.onnx", "g.pth.tar"):
        touch(tmp_path / name)
    for name in ("notes.txt", "config.json", "image.png"):
        touch(tmp_path / name, b"x")
    for name in (".hidden.pt", ".cache/x.safetensors"):
        touch(tmp_path / name)
    skipped = []
    found = [p.relative_to(tmp_path).as_posix() for p in walk_folder(tmp_path, skipped)]
    assert found == ["a.safetensors", "d.bin", "e.ckpt", "f.onnx", "g.pth.tar", "sub/b.pt", "sub/deeper/c.pth"]
    assert sorted(Path(p).name for p, _ in skipped) == ["config.json", "image.png", "notes.txt"]
    assert all("not a recognised checkpoint" in why for _, why in skipped)


def test_folder_files_are_recognised_by_content_not_name(tmp_path):
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x)

    torch.jit.save(torch.jit.script(Tiny()), str(tmp_path / "model.jit"))
    touch(tmp_path / "detector.model", b"\x08\x07\x12\x04test")  # an ONNX ModelProto, any name
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "weights.data")
    touch(tmp_path / "README.md", b"# models")
    touch(tmp_path / "blank.dat", b"")
    touch(tmp_path / "broken.pt", b"")  # a checkpoint by name stays an item: its row says it is empty
    skipped = []
    found = sorted(p.name for p in walk_folder(tmp_path, skipped))
    assert found == ["broken.pt", "detector.model", "model.jit", "weights.data"]
    reasons = {Path(p).name: why for p, why in skipped}
    assert set(reasons) == {"README.md", "blank.dat"} and reasons["blank.dat"] == "empty file"
    assert "not a recognised checkpoint" in reasons["README.md"]


def test_shards_listed_by_an_index_become_one_item(tmp_path):
    header = b"\x02\x00\x00\x00\x00\x00\x00\x00{}"  # an empty safetensors file
    touch(tmp_path / "m-1.safetensors", header)
    touch(tmp_path / "m-2.safetensors", header)
    touch(tmp_path / "other.safetensors", header)
    index = {"weight_map": {"a.weight": "m-1.safetensors", "b.weight": "m-2.safetensors"}}
    touch(tmp_path / "model.safetensors.index.json", json.dumps(index).encode())
    names = [p.name for p in walk_folder(tmp_path)]
    assert names == ["model.safetensors.index.json", "other.safetensors"]


def test_items_are_absolute_unique_and_in_order(tmp_path, monkeypatch):
    touch(tmp_path / "zoo" / "a.pt")
    touch(tmp_path / "zoo" / "b.pt")
    monkeypatch.chdir(tmp_path)
    items = expand_sources(["zoo/b.pt", "zoo", "./zoo/a.pt"])
    assert [i.source for i in items] == [str(tmp_path / "zoo" / "b.pt"), str(tmp_path / "zoo" / "a.pt")]
    assert items[0].origin == "zoo/b.pt" and items[1].origin == "zoo"


def test_manifest_lines_comments_relative_paths_and_nesting(tmp_path):
    touch(tmp_path / "models" / "a.safetensors")
    touch(tmp_path / "models" / "sub" / "b.pt")
    touch(tmp_path / "abs.pt")
    (tmp_path / "inner.lst").write_text("models/sub\n")
    (tmp_path / "list.txt").write_text(
        f"# a zoo\n\nmodels/a.safetensors\n  {tmp_path / 'abs.pt'}  \n@{tmp_path / 'inner.lst'}\nmissing.pt\n"
        f"@{tmp_path / 'list.txt'}\n"  # a cycle: ignored
    )
    items = expand_sources([str(tmp_path / "list.txt")])
    assert [Path(i.source).relative_to(tmp_path).as_posix() for i in items] == [
        "models/a.safetensors", "abs.pt", "models/sub/b.pt", "missing.pt",
    ]
    assert expand_sources([f"@{tmp_path / 'inner.lst'}"])[0].source == str(tmp_path / "models" / "sub" / "b.pt")


def test_missing_argument_and_missing_manifest_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="no such file or folder"):
        expand_sources([str(tmp_path / "nope.pt")])
    with pytest.raises(UsageError, match="manifest"):
        expand_sources([f"@{tmp_path / 'nope'}"])


def test_timm_patterns_expand_through_list_models():
    names = expand_timm("resnet1*")
    assert "resnet18" in names and all(n.startswith("resnet1") for n in names)
    items = expand_sources(["timm:resnet18", "timm:resnet1*"])
    assert items[0] == AuditItem("timm:resnet18", "timm", "timm:resnet18")
    assert len(items) == len(names)  # resnet18 is not listed twice
    with pytest.raises(UsageError, match="no timm model matches"):
        expand_timm("no_such_model_*")
    with pytest.raises(UsageError, match="not a timm model name"):
        expand_timm("no_such_model")


def test_content_hash_follows_the_bytes_not_the_name(tmp_path):
    a = touch(tmp_path / "a.pt", b"same")
    b = touch(tmp_path / "b.pt", b"same")
    c = touch(tmp_path / "c.pt", b"other")
    ha, hb, hc = (content_hash(AuditItem(str(p))) for p in (a, b, c))
    assert ha == hb != hc and len(ha) == 64
    assert content_hash(AuditItem(str(tmp_path / "missing.pt"))).startswith("unreadable-")


def test_content_hash_of_an_index_covers_its_shards(tmp_path):
    touch(tmp_path / "s.safetensors", b"one")
    index = touch(tmp_path / "m.safetensors.index.json", json.dumps({"weight_map": {"w": "s.safetensors"}}).encode())
    before = content_hash(AuditItem(str(index)))
    touch(tmp_path / "s.safetensors", b"two")
    assert content_hash(AuditItem(str(index))) != before


def test_settings_hash_changes_with_anything_that_changes_a_report():
    base = settings_hash(settings_to_dict(Settings()), trust_code=False, key=None, spectra=False)
    assert base == settings_hash(settings_to_dict(Settings()), trust_code=False, key=None, spectra=False)
    other = Settings(tolerance=ToleranceRule("gap", 0.0))
    assert settings_hash(settings_to_dict(other), trust_code=False, key=None, spectra=False) != base
    assert settings_hash(settings_to_dict(Settings()), trust_code=False, key="ema", spectra=False) != base
    assert settings_hash(settings_to_dict(Settings()), trust_code=False, key=None, spectra=True) != base
