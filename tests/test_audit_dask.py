"""The Dask executor on a LocalCluster (loopback only) gives the same rows as the local one (acceptance 4)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from audit_zoo import SMALL, _save_safetensors, _save_torch, _torch_state, read_jsonl, write_small_zoo
from cbn_inspect.batch import DaskExecutor, read_rows, run_audit
from cbn_inspect.cli import app
from cbn_inspect.errors import SOME_ITEMS_FAILED_EXIT, UsageError
from cbn_inspect.synthetic import planted_network

distributed = pytest.importorskip("distributed")

TIMING = ("wall_seconds", "seconds")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, protocol="tcp") as local:
        yield local


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dzoo")
    write_small_zoo(folder, 5)
    state, _ = planted_network(planted=(1, 4), seed=9, **SMALL)
    _save_torch(folder / "t.pt", _torch_state(state))
    (folder / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    _save_safetensors(folder / "dense.safetensors", {"fc.weight": np.ones((3, 3), np.float32)})
    return folder


def comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING}


def test_dask_rows_equal_local_rows(cluster, zoo, tmp_path):
    local = run_audit([str(zoo)], out=tmp_path / "local.jsonl", jobs=2)
    result = CliRunner().invoke(app, ["audit", str(zoo), "--out", str(tmp_path / "dask.jsonl"), "--quiet",
                                      "--executor", "dask", "--scheduler", cluster.scheduler_address])
    assert result.exit_code == local.exit_code == SOME_ITEMS_FAILED_EXIT, result.output
    local_rows = {r["item"]: comparable(r) for r in read_jsonl(tmp_path / "local.jsonl")}
    dask_rows = {r["item"]: comparable(r) for r in read_jsonl(tmp_path / "dask.jsonl")}
    assert len(local_rows) == 8 and sum(r["status"] == "ok" for r in local_rows.values()) == 6
    assert dask_rows == local_rows


def test_dask_run_resumes_a_local_file(cluster, zoo, tmp_path):
    out = tmp_path / "mixed.jsonl"
    run_audit([str(zoo / "m0000.safetensors")], out=out, jobs=1)
    again = run_audit([str(zoo)], out=out, executor="dask", scheduler=cluster.scheduler_address)
    assert (again.reused, again.computed) == (1, 7)
    assert len(read_rows(out)[0]) == 8


def test_unreachable_scheduler_is_a_usage_error(zoo):
    executor = DaskExecutor("tcp://127.0.0.1:9", connect_timeout=1)
    with pytest.raises(UsageError, match="cannot connect"):
        list(executor.run([object()]))
