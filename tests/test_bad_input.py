"""Bad input (acceptance 4): one line on stderr, the documented exit code, no traceback, nothing executed."""

from __future__ import annotations

import os
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

EXIT = {"unreadable": 3, "nothing": 4, "unsafe": 5}


class Payload:
    """Pickles into a call of os.system that would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_bad_files(tmp_path):
    files = {}
    files["missing"] = (tmp_path / "does-not-exist.pt", EXIT["unreadable"])
    (tmp_path / "folder").mkdir()
    files["directory"] = (tmp_path / "folder", EXIT["unreadable"])
    (tmp_path / "empty.safetensors").write_bytes(b"")
    files["empty"] = (tmp_path / "empty.safetensors", EXIT["unreadable"])
    (tmp_path / "random.bin").write_bytes(os.urandom(4096))
    files["random"] = (tmp_path / "random.bin", EXIT["unreadable"])
    (tmp_path / "random.pt").write_bytes(b"\x80\x02" + os.urandom(4096))
    files["random-pickle"] = (tmp_path / "random.pt", EXIT["unreadable"])
    good = tmp_path / "good.safetensors"
    save_file({"a.weight": torch.randn(8, 8, 3, 3)}, str(good))
    data = good.read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    files["truncated-safetensors"] = (tmp_path / "truncated.safetensors", EXIT["unreadable"])
    (tmp_path / "header-lies.safetensors").write_bytes(struct.pack("<Q", 10**9) + b"{" + b" " * 64)
    files["header-too-long"] = (tmp_path / "header-lies.safetensors", EXIT["unreadable"])
    torch.save({"state_dict": {"a.weight": torch.randn(4, 4, 3, 3)}}, tmp_path / "zip.pt")
    zdata = (tmp_path / "zip.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(zdata[: len(zdata) // 2])
    files["truncated-zip"] = (tmp_path / "truncated.pt", EXIT["unreadable"])
    torch.save({"fc.weight": torch.randn(3, 4), "fc.bias": torch.zeros(3)}, tmp_path / "noconv.pt")
    files["no-conv"] = (tmp_path / "noconv.pt", EXIT["nothing"])
    return files


@pytest.fixture
def bad_files(tmp_path):
    return write_bad_files(tmp_path)


@pytest.mark.parametrize("name", ["missing", "directory", "empty", "random", "random-pickle", "truncated-safetensors",
                                  "header-too-long", "truncated-zip", "no-conv"])
def test_bad_file_gives_one_line_and_exit_code(cli, bad_files, name):
    path, code = bad_files[name]
    result = cli(path)
    assert result.exit_code == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cbn-inspect: error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""


@pytest.mark.parametrize("container", ["zip-in-dict", "zip-top-level", "legacy-pickle", "raw-pickle-protocol-4"])
def test_malicious_pickle_is_refused_and_never_runs(cli, tmp_path, container):
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "evil.pt"
    payload = Payload(marker)
    if container == "zip-in-dict":
        torch.save({"state_dict": {"a.weight": torch.randn(2, 2, 3, 3)}, "extra": payload}, path)
    elif container == "zip-top-level":
        torch.save(payload, path)
    elif container == "legacy-pickle":
        torch.save({"x": payload}, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps({"a.weight": payload}, protocol=4))
    result = cli(path)
    assert result.exit_code == EXIT["unsafe"], result.stderr
    assert "system" in result.stderr and "--trust-pickle" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def test_trust_flag_loads_a_pickled_module(cli, tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))
    path = tmp_path / "module.pt"
    torch.save(model, path)
    refused = cli(path)
    assert refused.exit_code == EXIT["unsafe"] and "--trust-pickle" in refused.stderr
    data = cli.json(path, "--trust-pickle")
    assert [layer["name"] for layer in data["layers"]] == ["0", "2"]


def test_nonfinite_weights_flag_the_layer_and_report_the_rest(cli, tmp_path):
    state = {f"l{i}.weight": torch.randn(4, 4, 3, 3) for i in range(5)}
    state["l2.weight"][0, 0, 0, 0] = float("nan")
    state["l3.weight"][1, 1, 1, 1] = float("inf")
    path = tmp_path / "nan.safetensors"
    save_file(state, str(path))
    result = cli(path)
    assert result.exit_code == 0
    assert "not analysed" in result.stdout and "NaN/Inf" in result.stdout
    data = cli.json(path)
    flagged = {layer["name"]: layer for layer in data["layers"] if "nonfinite" in layer["flags"]}
    assert set(flagged) == {"l2", "l3"}
    assert all(layer["mode_count"] is None and layer["spectral_norm"] is None for layer in flagged.values())
    assert [layer["mode_count"] is not None for layer in data["layers"]] == [True, True, False, False, True]


def test_bad_options_are_usage_errors(cli, planted_path):
    for args in (["--grid", "axb"], ["--layers", "("], ["--tolerance", "nope"], ["--tol-value", "2", "--tolerance", "energy"]):
        result = cli(planted_path, *args)
        assert result.exit_code == 2, (args, result.stderr)
