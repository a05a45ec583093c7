"""Which files get a prompt copy, where copies live, and how the setting is checked."""

import dataclasses
import os

import pytest

from llamachain import ChatLlama, LlamaEngine
from llamachain.engine import _prefill_copy as pc
from llamachain.errors import ConfigError
from llamachain.models.gguf_info import ModelInfo


def info(file_type: str, size: int = 100 * 2**20, path: str = "/m/model.gguf") -> ModelInfo:
    return ModelInfo(
        path=path,
        file_size=size,
        gguf_version=3,
        architecture="llama",
        name=None,
        parameters=135_000_000,
        file_type=file_type,
        tensor_types={},
        context_length=8192,
        embedding_length=576,
        block_count=30,
        vocab_size=49152,
        chat_template=None,
        license=None,
        bos_token_id=1,
        eos_token_id=2,
        tokenizer_model="gpt2",
    )


@pytest.mark.parametrize(
    ("file_type", "expected"),
    [
        ("Q4_1", "Q8_0"),
        ("Q5_1", "Q8_0"),
        ("q4_1", "Q8_0"),
        ("Q8_0", ""),
        ("Q4_0", ""),
        ("Q4_K_M", ""),
        ("F16", ""),
        ("BF16", ""),
        ("unknown", ""),
    ],
)
def test_auto_copies_only_the_formats_without_fast_prompt_kernels(file_type, expected):
    assert pc.choose("auto", info(file_type)) == expected


def test_auto_leaves_large_files_alone_but_an_explicit_type_does_not():
    big = info("Q4_1", size=pc.AUTO_MAX_BYTES + 1)
    assert pc.choose("auto", big) == ""
    assert pc.choose("q8_0", big) == "Q8_0"


def test_an_explicit_type_applies_to_any_file_except_its_own_type():
    assert pc.choose("f16", info("Q4_K_M")) == "F16"
    assert pc.choose("Q8_0", info("Q4_0")) == "Q8_0"
    assert pc.choose("q8_0", info("Q8_0")) == ""  # a copy of itself would gain nothing
    assert pc.choose("q4_k", info("Q4_1")) == "Q4_K_M"  # llama.cpp's alias
    assert pc.choose("off", info("Q4_1")) == ""


@pytest.mark.parametrize("bad", ["fast", "q9_9", "", "on"])
def test_a_bad_setting_is_refused_when_the_engine_is_built(bad):
    with pytest.raises(ConfigError, match="prefill_copy must be 'auto', 'off' or a quant"):
        LlamaEngine("missing.gguf", prefill_copy=bad)


def test_the_setting_comes_from_the_environment_and_the_langchain_field(monkeypatch):
    assert LlamaEngine("missing.gguf").prefill_copy == "auto"
    monkeypatch.setenv("LLAMACHAIN_PREFILL_COPY", "OFF")
    assert LlamaEngine("missing.gguf").prefill_copy == "off"
    assert ChatLlama(model="missing.gguf", prefill_copy="Q8_0").engine.prefill_copy == "q8_0"


def test_copies_live_in_the_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LLAMACHAIN_CACHE_DIR", str(tmp_path / "c"))
    assert pc.copies_dir() == tmp_path / "c" / "prefill-copies"
    monkeypatch.delenv("LLAMACHAIN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pc.copies_dir() == tmp_path / "xdg" / "llamachain" / "prefill-copies"


def test_a_changed_source_file_gets_another_copy(tmp_path):
    src = tmp_path / "model.gguf"
    src.write_bytes(b"x" * 10)
    first = pc.copy_path(dataclasses.replace(info("Q4_1"), path=str(src)), "Q8_0")
    assert first.name.startswith("model.") and first.name.endswith(".Q8_0.gguf")
    assert pc.copy_path(dataclasses.replace(info("Q4_1"), path=str(src)), "Q8_0") == first
    src.write_bytes(b"y" * 11)
    os.utime(src, ns=(1, 1))
    second = pc.copy_path(dataclasses.replace(info("Q4_1"), path=str(src)), "Q8_0")
    assert second != first
    other = tmp_path / "other"
    other.mkdir()
    moved = other / "model.gguf"
    moved.write_bytes(b"y" * 11)
    os.utime(moved, ns=(1, 1))
    assert pc.copy_path(dataclasses.replace(info("Q4_1"), path=str(moved)), "Q8_0") != second
