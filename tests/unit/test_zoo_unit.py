"""The zoo's files and tokenizers, checked with the gguf package alone (no llama.cpp)."""

from __future__ import annotations

import gguf
import pytest

from llamachain.errors import ConfigError
from llamachain.models import read_model_info
from llamachain.models._zoo_tokenizers import (
    CONTROL,
    bpe_vocab,
    byte_symbols,
    learn_merges,
    rwkv_vocab,
)
from llamachain.models.zoo import ARCHITECTURES, architectures, write_tiny_model


def test_table_names_gguf_architectures_and_explains_what_does_not_run():
    assert [a.name for a in architectures()] == list(ARCHITECTURES)
    for row in architectures():
        assert row.gguf_arch in gguf.MODEL_ARCH_NAMES.values()
        assert row.family
        assert row.runs or row.reason, f"{row.name} does not run but says no reason"
        assert row.to_dict()["name"] == row.name


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_writes_a_valid_file(tmp_path, arch):
    path = write_tiny_model(arch, tmp_path / f"{arch}.gguf")
    info = read_model_info(path)
    row = ARCHITECTURES[arch]
    assert info.architecture == row.gguf_arch
    assert info.file_type == "F32"
    assert info.block_count == 2 and info.embedding_length == 64
    assert not info.has_chat_template
    expected_model = {"bpe": "gpt2", "spm": "llama", "ugm": "t5", "rwkv": "rwkv"}
    assert info.tokenizer_model == expected_model[row.tokenizer]
    reader = gguf.GGUFReader(path)
    allowed = {
        gguf.TENSOR_NAMES[t].format(bid=bid)
        for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH[row.gguf_arch.upper()]]
        for bid in range(2)
    }
    for t in reader.tensors:
        assert t.name.rsplit(".", 1)[0] in allowed, t.name  # less .weight / .bias
    n_vocab = info.vocab_size
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    assert [int(x) for x in embd.shape] == [64, n_vocab]  # ggml order: n_embd, n_vocab


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path):
    a = write_tiny_model("llama", tmp_path / "a.gguf", seed=3)
    b = write_tiny_model("llama", tmp_path / "b.gguf", seed=3)
    c = write_tiny_model("llama", tmp_path / "c.gguf", seed=4)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert a.stat().st_size == c.stat().st_size


def test_f16_keeps_vectors_in_f32(tmp_path):
    info = read_model_info(write_tiny_model("gemma3", tmp_path / "g.gguf", dtype="f16"))
    assert info.file_type == "F16"
    assert set(info.tensor_types) == {"F16", "F32"}


def test_bad_arguments_say_what_to_pass(tmp_path):
    with pytest.raises(ConfigError, match="choose one of: llama, gpt2"):
        write_tiny_model("mamba", tmp_path / "x.gguf")
    with pytest.raises(ConfigError, match="dtype"):
        write_tiny_model("llama", tmp_path / "x.gguf", dtype="q4_0")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="multiple of 16"):
        write_tiny_model("llama", tmp_path / "x.gguf", n_embd=40)
    assert not list(tmp_path.iterdir())


def test_bpe_merges_are_learned_from_text():
    merges = learn_merges(
        {("a", "b", "c"): 5, ("a", "b"): 3, ("x", "y"): 1},  # type: ignore[arg-type]
        4,
    )
    assert merges == [("a", "b"), ("ab", "c")]  # "xy" is seen once: never worth a token


def test_bpe_vocab_has_every_byte_and_tokens_for_its_merges():
    v = bpe_vocab(32, ("<|endoftext|>",), "<|endoftext|>", "<|endoftext|>")
    assert len(set(byte_symbols())) == 256 and set(byte_symbols()) <= set(v.tokens)
    assert v.types[0] == CONTROL and v.special == {"bos": 0, "eos": 0}
    assert v.merges is not None and len(v.merges) == 32
    for merge in v.merges:
        assert merge.replace(" ", "") in v.tokens
    assert len(v.tokens) == len(set(v.tokens)) == len(v.types)


def test_rwkv_tokens_are_escaped_as_llama_cpp_reads_them():
    v = rwkv_vocab(8)
    assert v.tokens[0] == "<s>"
    assert v.tokens[1 + 0x0A] == "\\n" and v.tokens[1 + 0x5C] == "\\\\"
    assert v.tokens[1 + 0xFF] == "\\xff" and v.tokens[1 + ord("A")] == "A"
