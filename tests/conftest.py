"""Every test runs with its own LLAMACHAIN_HOME and no other LLAMACHAIN_ settings.

LLAMACHAIN_CACHE_DIR (derived files such as prompt copies of models, see
llamachain.engine._prefill_copy) is one directory for the whole session: a copy is made once.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def session_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def _isolated_env(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    session_cache_dir: str,
):
    for key in list(os.environ):
        if key.startswith("LLAMACHAIN_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("LLAMACHAIN_HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.setenv("LLAMACHAIN_CACHE_DIR", session_cache_dir)
    yield
