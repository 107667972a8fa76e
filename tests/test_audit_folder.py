"""`audit` over a folder: files recognised by content, what was skipped and why, and `--out -` on stdout."""

from __future__ import annotations

import json
import shutil

import torch

from audit_zoo import run_cli


def _folder(tmp_path, planted_path):
    folder = tmp_path / "zoo"
    folder.mkdir()
    shutil.copy(planted_path, folder / "a.safetensors")

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(Tiny()), str(folder / "scripted.jit"))
    (folder / "README.md").write_text("# zoo\n")
    return folder


def test_audit_takes_what_report_reads_and_lists_what_it_skipped(tmp_path, planted_path):
    folder = _folder(tmp_path, planted_path)
    out = tmp_path / "a.jsonl"
    done = run_cli("audit", str(folder), "--out", str(out), "--jobs", "1")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["item"].rsplit("/", 1)[1] for r in rows) == ["a.safetensors", "scripted.jit"]
    assert "skipped 1 file(s)" in done.stderr and "README.md: not a recognised checkpoint" in done.stderr


def test_out_dash_streams_jsonl_to_stdout(tmp_path, planted_path):
    folder = _folder(tmp_path, planted_path)
    done = run_cli("audit", str(folder), "--out", "-", "--jobs", "1")
    lines = done.stdout.strip().splitlines()
    rows = [json.loads(line) for line in lines]  # stdout is nothing but the JSON lines
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    assert all(r["source"]["sha256"] == r["key"].split(":")[0] for r in rows)  # filled in, as the key
    assert "cbn-inspect audit" in done.stderr  # the summary table went to stderr
    assert not (tmp_path / "-").exists() and not (folder / "-").exists()
