"""Integration tests use the real bundled model through llama.cpp; all are marked slow."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def variants_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home shared by the session, so each quantized variant is made once."""
    return tmp_path_factory.mktemp("variants-home")
