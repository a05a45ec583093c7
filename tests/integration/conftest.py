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


@pytest.fixture(scope="session")
def model_without_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model with its chat template removed (a copy made with the gguf package)."""
    import subprocess
    import sys

    from llamachain.models import resolve_model_path

    out = tmp_path_factory.mktemp("no-template") / "smollm2-no-template.gguf"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gguf.scripts.gguf_new_metadata",
            str(resolve_model_path(None)),
            str(out),
            "--remove-metadata",
            "tokenizer.chat_template",
            "--force",
        ],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def unknown_architecture_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A well-formed GGUF file whose architecture llama.cpp does not know."""
    import gguf
    import numpy as np

    out = tmp_path_factory.mktemp("unknown-arch") / "mystery.gguf"
    writer = gguf.GGUFWriter(str(out), "mysterynet")
    writer.add_block_count(1)
    writer.add_context_length(128)
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
