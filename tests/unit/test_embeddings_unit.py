"""LocalEmbeddings / LlamaEmbeddings without loading a model: options, identity, errors, windows.

Reading a model directory's small configuration files (and its tokenizer.json) is allowed
here; loading weights is not -- that is in tests/integration/test_embeddings.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from langchain_tests.unit_tests import EmbeddingsUnitTests
from pydantic import ValidationError

from llamachain._onnx_encoder import check_supported, fingerprint
from llamachain._st_loader import EmbedderCache, bundled_model_dir, inspect_model_dir
from llamachain._windows import Piece, combine, plan, window_spans
from llamachain.embeddings import LlamaEmbeddings, LocalEmbeddings
from llamachain.engine.embed import LlamaEmbedder
from llamachain.errors import ConfigError, EmbeddingError
from llamachain.settings import Settings

BUNDLED = bundled_model_dir()


class TestLocalEmbeddingsStandardUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[LocalEmbeddings]:
        return LocalEmbeddings

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        return (
            {"LLAMACHAIN_EMBEDDING_BATCH_SIZE": "8", "LLAMACHAIN_EMBEDDING_BACKEND": "onnx"},
            {},
            {"batch_size": 8, "backend": "onnx"},
        )


class TestLlamaEmbeddingsStandardUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[LlamaEmbeddings]:
        return LlamaEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"n_ctx": 64}


def fake_model_dir(root: Path, name: str = "tiny-encoder", **overrides) -> Path:
    """A directory that looks like a sentence-transformers model (weights are a stub)."""
    d = root / name
    d.mkdir(parents=True)
    files = {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            },
        ],
        "config.json": {"hidden_size": 32, "max_position_embeddings": 512},
        "sentence_bert_config.json": {"max_seq_length": 128, "do_lower_case": False},
        "1_Pooling/config.json": {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True},
    }
    files.update(overrides)
    for rel, content in files.items():
        if content is None:
            continue
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(content if isinstance(content, str) else json.dumps(content))
    shutil.copy(BUNDLED / "tokenizer.json", d / "tokenizer.json")
    (d / "model.safetensors").write_bytes(b"stub")
    return d


# -- options --------------------------------------------------------------------------------


def test_constructs_without_arguments_and_loads_nothing():
    emb = LocalEmbeddings()
    assert emb.backend == "torch"
    assert emb.batch_size == 32
    assert emb.normalize is True
    assert emb.long_text == "split"
    assert emb.query_prefix == emb.document_prefix == ""


def test_settings_provide_the_defaults(tmp_path):
    d = fake_model_dir(tmp_path)
    s = Settings(embedding_model=str(d), embedding_backend="onnx", embedding_batch_size=7)
    emb = LocalEmbeddings(settings=s)
    assert (emb.model, emb.backend, emb.batch_size) == (str(d), "onnx", 7)
    explicit = LocalEmbeddings(settings=s, backend="torch", batch_size=3, model=str(BUNDLED))
    assert (explicit.backend, explicit.batch_size) == ("torch", 3)
    assert explicit.model_dir == BUNDLED.resolve()


@pytest.mark.parametrize(
    "kwargs",
    [{"backend": "cuda"}, {"batch_size": 0}, {"long_text": "truncate"}, {"normalize": "maybe"}],
)
def test_invalid_options_are_rejected_with_the_choices(kwargs):
    with pytest.raises(ValidationError) as err:
        LocalEmbeddings(**kwargs)
    if "backend" in kwargs:
        assert "onnx-int8" in str(err.value)


def test_model_name_alias_is_accepted():
    assert LocalEmbeddings(model_name=str(BUNDLED)).model == str(BUNDLED)


def test_llama_embeddings_options():
    with pytest.raises(ValidationError):
        LlamaEmbeddings(n_ctx=4)
    with pytest.raises(ValidationError):
        LlamaEmbeddings(long_text="cut")
    with pytest.raises(ConfigError, match="split, error"):
        LlamaEmbedder(long_text="cut")  # type: ignore[arg-type]
    missing = LlamaEmbeddings(model_path="/nowhere/model.gguf")  # construction reads nothing
    assert missing.model == "/nowhere/model.gguf"


# -- the model directory --------------------------------------------------------------------


def test_missing_directory_is_an_embedding_error_naming_it(tmp_path):
    missing = tmp_path / "no-such-model"
    emb = LocalEmbeddings(model=str(missing))  # construction is lazy
    with pytest.raises(EmbeddingError, match="no-such-model: no such model directory"):
        emb.embed_query("hello")
    with pytest.raises(EmbeddingError):
        _ = emb.model_id


def test_hub_names_are_looked_up_offline_only(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    emb = LocalEmbeddings(model="sentence-transformers/all-mpnet-base-v2")
    with pytest.raises(EmbeddingError, match="never downloads"):
        _ = emb.model_dir


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("empty", "no modules.json or config.json"),
        ("no-weights", "no model weights"),
        ("bad-modules", "modules.json"),
        ("bad-config", "config.json: unreadable"),
        ("no-tokenizer", "no tokenizer"),
        ("file", "is a file, not a model directory"),
    ],
)
def test_broken_directories_fail_with_a_clear_error(tmp_path, breakage, message):
    if breakage == "empty":
        target = tmp_path / "empty"
        target.mkdir()
    elif breakage == "file":
        target = tmp_path / "model.bin"
        target.write_bytes(b"x")
    else:
        target = fake_model_dir(tmp_path)
        if breakage == "no-weights":
            (target / "model.safetensors").unlink()
        elif breakage == "bad-modules":
            (target / "modules.json").write_text("{not json")
        elif breakage == "bad-config":
            (target / "config.json").write_text("{not json")
        elif breakage == "no-tokenizer":
            (target / "tokenizer.json").unlink()
    with pytest.raises(EmbeddingError, match=message) as err:
        _ = LocalEmbeddings(model=str(target)).info
    assert "\n" not in str(err.value)


def test_missing_directory_check_and_tokenizer_need_no_torch(tmp_path):
    code = f"""
import sys
from llamachain.embeddings import LocalEmbeddings
from llamachain.errors import EmbeddingError
try:
    LocalEmbeddings(model={str(tmp_path / "absent")!r}).embed_documents(["x"])
except EmbeddingError:
    pass
emb = LocalEmbeddings()
print(emb.model_id, emb.dimension, emb.max_chunk_tokens, len(emb.token_offsets("hello world")))
print(sorted(m for m in ("torch", "sentence_transformers", "transformers", "llama_cpp")
             if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first, loaded = out.stdout.strip().splitlines()
    assert first == "all-MiniLM-L6-v2 384 254 2"
    assert loaded == "[]"


# -- identity -------------------------------------------------------------------------------


def test_model_id_of_the_bundled_model_comes_from_its_readme():
    # the package stores it in a directory called "model"
    assert BUNDLED.name == "model"
    assert LocalEmbeddings().model_id == "all-MiniLM-L6-v2"


def test_model_id_is_the_directory_name_and_stable(tmp_path):
    d = fake_model_dir(tmp_path, "my-encoder-v3")
    assert LocalEmbeddings(model=str(d)).model_id == "my-encoder-v3"
    copy = shutil.copytree(d, tmp_path / "elsewhere" / "my-encoder-v3")
    assert LocalEmbeddings(model=str(copy)).model_id == "my-encoder-v3"


def test_model_id_for_generic_and_hf_cache_directories(tmp_path):
    generic = fake_model_dir(tmp_path / "a", "model")
    (generic / "README.md").write_text("---\ntags: [x]\n---\n\n# e5-small v2\nText.\n")
    assert LocalEmbeddings(model=str(generic)).model_id == "e5-small-v2"
    snapshot = fake_model_dir(tmp_path / "models--intfloat--e5-small-v2" / "snapshots", "a" * 40)
    assert LocalEmbeddings(model=str(snapshot)).model_id == "e5-small-v2"


def test_model_id_records_what_changes_the_vectors():
    plain = LocalEmbeddings().model_id
    e5 = LocalEmbeddings(query_prefix="query: ", document_prefix="passage: ").model_id
    assert e5 != plain and e5.startswith(plain + "+p")
    assert e5 == LocalEmbeddings(query_prefix="query: ", document_prefix="passage: ").model_id
    assert e5 != LocalEmbeddings(query_prefix="query: ", document_prefix="").model_id
    assert LocalEmbeddings(backend="onnx").model_id == plain  # same vectors as torch
    assert LocalEmbeddings(backend="onnx-int8").model_id == plain + "+int8"
    # the bundled model normalises inside its pipeline: normalize=False changes nothing
    assert LocalEmbeddings(normalize=False).model_id == plain


def test_model_dir_facts_are_read_from_files(tmp_path):
    info = inspect_model_dir(fake_model_dir(tmp_path))
    assert (info.max_seq_length, info.dimension, info.pooling, info.normalized) == (
        128,
        32,
        "mean",
        True,
    )
    no_st = fake_model_dir(
        tmp_path,
        "plain",
        **{"sentence_bert_config.json": None, "tokenizer_config.json": {"model_max_length": 300}},
    )
    assert inspect_model_dir(no_st).max_seq_length == 300  # min(tokenizer, positions)
    dense = fake_model_dir(
        tmp_path,
        "dense",
        **{
            "modules.json": [
                {"path": "", "type": "sentence_transformers.models.Transformer"},
                {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"path": "2_Dense", "type": "sentence_transformers.models.Dense"},
            ]
        },
    )
    assert inspect_model_dir(dense).dimension is None  # a Dense layer may resize: ask the model


def test_max_chunk_tokens_subtracts_special_tokens_and_the_document_prefix(tmp_path):
    d = fake_model_dir(tmp_path)
    assert LocalEmbeddings(model=str(d)).max_chunk_tokens == 128 - 2
    emb = LocalEmbeddings(model=str(d), document_prefix="passage: ")
    assert emb.max_chunk_tokens == 128 - 2 - len(emb.token_offsets("passage: "))


def test_onnx_backend_refuses_pipelines_it_cannot_run(tmp_path):
    check_supported(inspect_model_dir(fake_model_dir(tmp_path)))
    weighted = fake_model_dir(
        tmp_path,
        "weighted",
        **{"1_Pooling/config.json": {"pooling_mode_weightedmean_tokens": True}},
    )
    with pytest.raises(EmbeddingError, match="backend='torch'"):
        check_supported(inspect_model_dir(weighted))


def test_onnx_cache_key_is_stable_and_follows_the_files(tmp_path):
    d = fake_model_dir(tmp_path)
    info = inspect_model_dir(d)
    copy = inspect_model_dir(shutil.copytree(d, tmp_path / "copy" / d.name))
    before = fingerprint(info)
    assert before == fingerprint(copy)
    (d / "model.safetensors").write_bytes(b"other weights")
    assert fingerprint(inspect_model_dir(d)) != before


# -- long texts -----------------------------------------------------------------------------


def _words(text: str) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for word in text.split(" "):
        spans.append((pos, pos + len(word)))
        pos += len(word) + 1
    return spans


def test_window_spans_cover_every_token_once():
    text = " ".join(f"w{i}" for i in range(10))
    spans = window_spans(_words(text), 4)
    assert [text[a:b] for a, b in spans] == ["w0 w1 w2 w3", "w4 w5 w6 w7", "w8 w9"]


def test_plan_keeps_short_texts_and_splits_long_ones():
    texts = ["a b c", " ".join(f"w{i}" for i in range(10))]
    counts = [3 + 2, 10 + 2]  # with two special tokens
    pieces = plan(
        texts,
        counts,
        8,
        long_text="split",
        offsets=_words,
        window=6,
        fits=lambda s: len(s.split()) + 2 <= 8,
        what="m",
    )
    assert pieces[0] == Piece(0, "a b c", 5)
    assert [(p.owner, p.item, p.weight) for p in pieces[1:]] == [
        (1, "w0 w1 w2 w3 w4 w5", 6),
        (1, "w6 w7 w8 w9", 4),
    ]


def test_plan_shrinks_a_window_that_does_not_fit():
    text = " ".join(f"w{i}" for i in range(6))
    pieces = plan(
        [text],
        [99],
        8,
        long_text="split",
        offsets=_words,
        window=6,
        fits=lambda s: len(s.split()) <= 4,  # the tokenizer disagrees with the offsets
        what="m",
    )
    assert all(len(p.item.split()) <= 4 for p in pieces)
    assert " ".join(p.item for p in pieces) == text


def test_plan_error_mode_names_the_count_and_the_limit():
    with pytest.raises(EmbeddingError, match="text 1 is 300 tokens long but m reads at most 256"):
        plan(
            ["short", "long"],
            [3, 300],
            256,
            long_text="error",
            offsets=_words,
            window=254,
            fits=lambda s: True,
            what="m",
        )


def test_combine_is_the_token_weighted_mean_renormalised():
    pieces = [Piece(0, "x", 1), Piece(1, "y", 3), Piece(1, "z", 1)]
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    out = combine(pieces, vectors, 2, normalize=True)
    assert out[0] == [1.0, 0.0]
    expected = np.array([3.0, 1.0]) / np.linalg.norm([3.0, 1.0])
    assert np.allclose(out[1], expected)
    raw = combine(pieces, vectors, 2, normalize=False)
    assert np.allclose(raw[1], [0.75, 0.25])


def test_combine_without_windows_passes_rows_through():
    out = combine([Piece(0, "a", 2), Piece(1, "b", 2)], np.array([[0.5, 0.5], [1, 0]]), 2, True)
    assert out == [[0.5, 0.5], [1.0, 0.0]]
    assert all(isinstance(x, float) for row in out for x in row)


# -- the cache ------------------------------------------------------------------------------


def test_cache_loads_once_under_concurrency_and_can_be_cleared():
    cache = EmbedderCache()
    calls = []

    def load():
        calls.append(1)
        time.sleep(0.05)
        return object()

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get(("p", "torch", "cpu"), load)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len({id(r) for r in results}) == 1
    assert cache.list()[0]["path"] == "p" and len(cache) == 1
    cache.get(("p", "onnx", "cpu"), object)
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0
    cache.get(("p", "torch", "cpu"), load)
    assert len(calls) == 2


def test_instances_share_the_tokenizer_through_the_cache():
    cache = EmbedderCache()
    a = LocalEmbeddings(cache=cache)
    b = LocalEmbeddings(cache=cache, document_prefix="passage: ")
    assert a.token_offsets("hi there") == b.token_offsets("hi there")
    assert [e["kind"] for e in cache.list()] == ["tokenizer"]


def test_empty_input_gives_an_empty_list_without_loading():
    cache = EmbedderCache()
    assert LocalEmbeddings(cache=cache).embed_documents([]) == []
    assert len(cache) == 0


def test_llama_identity_comes_from_the_gguf_file_without_loading_it():
    emb = LlamaEmbeddings(n_ctx=64)
    assert emb.dimension == 576  # SmolLM2-135M's n_embd, from its metadata
    assert emb.model_id == "SmolLM2-135M-Instruct.Q4_1"
    assert LlamaEmbeddings(query_prefix="q: ").model_id.startswith(emb.model_id + "+p")
    assert not emb.embedder.engine.is_loaded
