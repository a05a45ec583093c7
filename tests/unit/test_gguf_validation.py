"""Bad model files are refused by our own checks, before llama.cpp sees them."""

from pathlib import Path

import pytest

from llamachain import LlamaEngine
from llamachain.errors import ModelFileError
from llamachain.models import check_header, read_model_info, resolve_model_path


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        read_model_info(tmp_path / "missing.gguf")


def test_directory(tmp_path):
    with pytest.raises(ModelFileError, match="is a directory"):
        read_model_info(tmp_path)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.gguf"
    p.write_bytes(b"")
    with pytest.raises(ModelFileError, match="only 0 bytes"):
        read_model_info(p)


def test_text_file(tmp_path):
    p = tmp_path / "notes.gguf"
    p.write_text("this is not a model, just some notes\n")
    with pytest.raises(ModelFileError, match="not a GGUF file") as e:
        read_model_info(p)
    assert str(p) in str(e.value)


def test_old_ggml_file_gets_a_hint(tmp_path):
    p = tmp_path / "old.bin"
    p.write_bytes(b"tjgg" + b"\x00" * 100)
    with pytest.raises(ModelFileError, match="re-convert it to GGUF"):
        check_header(p)


def test_pytorch_checkpoint_gets_a_hint(tmp_path):
    p = tmp_path / "model.pth"
    p.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(ModelFileError, match="PyTorch checkpoint"):
        check_header(p)


def test_unknown_version(tmp_path):
    p = tmp_path / "future.gguf"
    p.write_bytes(b"GGUF" + (99).to_bytes(4, "little") + b"\x00" * 64)
    with pytest.raises(ModelFileError, match="version 99"):
        check_header(p)


@pytest.mark.parametrize("keep", [16, 4096, 2_000_000, 60_000_000])
def test_truncated_copy_of_the_real_model(tmp_path, keep):
    src = resolve_model_path(None)
    p = tmp_path / "cut.gguf"
    with src.open("rb") as f:
        p.write_bytes(f.read(keep))
    with pytest.raises(ModelFileError) as e:
        read_model_info(p)
    assert str(p.resolve()) in str(e.value) or str(p) in str(e.value)
    assert "truncated" in str(e.value) or "corrupt" in str(e.value)


def test_engine_refuses_a_bad_file_before_llama_cpp(tmp_path):
    p = tmp_path / "bad.gguf"
    p.write_text("nope")
    engine = LlamaEngine(p)
    with pytest.raises(ModelFileError):
        engine.tokenize("hello")
    assert not engine.is_loaded


def test_metadata_of_the_default_model():
    info = read_model_info(resolve_model_path(None))
    assert info.architecture == "llama"
    assert info.file_type == "Q4_1"
    assert info.context_length == 8192
    assert info.has_chat_template
    assert info.license == "apache-2.0"
    assert 130e6 < info.parameters < 140e6
    assert info.file_size == Path(info.path).stat().st_size
