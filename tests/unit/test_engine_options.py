"""Engine options that are checked when the engine is built, before any model file is read."""

import pytest

from llamachain import ChatLlama, LlamaEngine
from llamachain.errors import ConfigError


@pytest.mark.parametrize("bad", [0, -64, True, 1.5, "256"])
def test_a_bad_prefill_block_is_refused(bad):
    with pytest.raises(ConfigError, match="prefill_block must be an integer >= 1"):
        LlamaEngine("missing.gguf", prefill_block=bad)


def test_prefill_block_comes_from_the_settings_and_the_langchain_field(monkeypatch):
    assert LlamaEngine("missing.gguf").prefill_block == 64
    monkeypatch.setenv("LLAMACHAIN_PREFILL_BLOCK", "256")
    assert LlamaEngine("missing.gguf").prefill_block == 256
    assert ChatLlama(model="missing.gguf", prefill_block=128).engine.prefill_block == 128


@pytest.mark.parametrize("scale", ["strong", float("nan"), float("inf")])
def test_a_bad_lora_scale_is_refused_at_once(scale):
    with pytest.raises(ConfigError, match="LoRA scale"):
        LlamaEngine("missing.gguf", lora=[("adapter.gguf", scale)])


def test_adapter_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    engine = LlamaEngine("missing.gguf", lora=[("a.gguf", 0.5)])
    assert engine.lora == ((str(tmp_path / "a.gguf"), 0.5),)
