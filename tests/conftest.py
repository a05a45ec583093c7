"""Every test runs with its own LLAMACHAIN_HOME and no other LLAMACHAIN_ settings."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    for key in list(os.environ):
        if key.startswith("LLAMACHAIN_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("LLAMACHAIN_HOME", str(tmp_path_factory.mktemp("home")))
    yield
