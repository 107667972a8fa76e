"""Shared fixtures: a private cache directory, so that no test reads or writes the user's cache."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CBN_INSPECT_CACHE", str(tmp_path_factory.getbasetemp() / "cbn-cache"))
