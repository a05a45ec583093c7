"""The fast GGUF header scan agrees with gguf.GGUFReader and refuses broken headers."""

import gguf
import numpy as np
import pytest

from llamachain.errors import ModelFileError
from llamachain.models import read_model_info
from llamachain.models._gguf_scan import ArrayInfo, ScanError, scan


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "sample.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("llama.context_length", 256)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_string("tokenizer.chat_template", "{{ messages }} ünïcode")
    w.add_array("tokenizer.ggml.tokens", ["a", "bb", "", "ccc" * 50])
    w.add_array("tokenizer.ggml.scores", [0.5, -1.0, 2.0, 0.0])
    w.add_int64("some.big", -(2**40))
    w.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight", np.zeros((32, 32), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_scan_matches_the_reference_reader(sample):
    ours = scan(sample)
    ref = gguf.GGUFReader(sample)
    for key, field in ref.fields.items():
        if key.startswith("GGUF."):
            continue
        value = ours.fields[key]
        if isinstance(value, ArrayInfo):
            assert len(value) == len(field.data)
        else:
            assert value == pytest.approx(field.contents())
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    for t, r in zip(ours.tensors, ref.tensors, strict=True):
        assert ours.data_start + t.offset == int(r.data_offset)
        assert t.shape == tuple(int(d) for d in r.shape)
    info = read_model_info(sample)
    assert info.vocab_size == 4 and info.context_length == 256
    assert info.chat_template == "{{ messages }} ünïcode"
    assert info.parameters == 4 * 32 + 32 * 32


@pytest.mark.parametrize("cut", [9, 30, 60, 120, 200])
def test_a_header_cut_anywhere_is_refused(sample, tmp_path, cut):
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(sample.read_bytes()[:cut])
    with pytest.raises(ScanError):
        scan(bad)
    with pytest.raises(ModelFileError, match=r"truncated or corrupt|only"):
        read_model_info(bad)


def test_impossible_counts_are_refused(sample, tmp_path):
    data = bytearray(sample.read_bytes())
    data[16:24] = (2**60).to_bytes(8, "little")  # n_kv
    bad = tmp_path / "counts.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(ScanError, match="impossible"):
        scan(bad)
