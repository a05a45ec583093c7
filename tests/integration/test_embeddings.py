"""LocalEmbeddings on the real all-MiniLM-L6-v2 and LlamaEmbeddings on the real SmolLM2 GGUF."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import pytest_socket

from llamachain._st_loader import EmbedderCache
from llamachain.embeddings import LlamaEmbeddings, LocalEmbeddings
from llamachain.engine import LlamaEngine, ModelCache, SamplingParams
from llamachain.errors import EmbeddingError
from llamachain.settings import Settings

PROSE = (
    "The harbour town kept its records in a stone house near the bridge. Each spring the "
    "clerks counted barrels of salt, bolts of wool and sacks of grain, and merchants from the "
    "coast argued about the weights. "
)


def cos(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def emb() -> LocalEmbeddings:
    return LocalEmbeddings().load()


# -- LocalEmbeddings ------------------------------------------------------------------------


def test_vectors_have_384_unit_length_dimensions(emb):
    vecs = emb.embed_documents(["The cat sleeps.", "Stocks fell sharply on Monday."])
    assert emb.dimension == 384
    assert [len(v) for v in vecs] == [384, 384]
    assert all(isinstance(x, float) for x in vecs[0])
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_deterministic_and_independent_of_batching(emb):
    texts = [PROSE, "short", "a somewhat longer sentence about rivers and mills"]
    first = emb.embed_documents(texts)
    again = emb.embed_documents(texts)
    alone = [emb.embed_documents([t])[0] for t in texts]
    assert np.allclose(first, again, atol=1e-6)
    # Padding in a batch changes the sums slightly: ~1e-6 in float32, ~1e-3 in bfloat16.
    atol = 5e-3 if emb._bf16() else 1e-5
    assert np.allclose(first, alone, atol=atol)
    assert np.allclose(emb.embed_query(texts[1]), first[1], atol=atol)


def test_empty_list_and_empty_string(emb):
    assert emb.embed_documents([]) == []
    vec = emb.embed_query("")
    assert len(vec) == 384 and abs(np.linalg.norm(vec) - 1.0) < 1e-5


def test_similar_sentences_score_higher_than_unrelated_ones(emb):
    q = emb.embed_query("How do I reset my password?")
    close, far = emb.embed_documents(
        ["Steps to recover a forgotten password for your account.", "The volcano erupted in 1883."]
    )
    assert cos(q, close) > cos(q, far) + 0.2


def test_prefixes_change_the_vectors():
    plain = LocalEmbeddings()
    e5 = LocalEmbeddings(query_prefix="query: ", document_prefix="passage: ")
    text = "where the river meets the sea"
    assert cos(plain.embed_query(text), e5.embed_query(text)) < 0.9999
    assert cos(e5.embed_query(text), e5.embed_documents([text])[0]) < 0.9999
    # the prefix is text the model reads: the same as prepending it by hand
    assert np.allclose(e5.embed_query(text), plain.embed_query("query: " + text), atol=1e-5)


def test_token_offsets_are_spans_of_the_text(emb):
    text = "Hello, wörld! Tokenizers split   unbelievably long words.\nNew line."
    spans = emb.token_offsets(text)
    assert spans == sorted(spans)
    assert all(0 <= a < b <= len(text) for a, b in spans)
    pieces = [text[a:b] for a, b in spans]
    assert all(p.strip() == p and p for p in pieces)  # no token spans whitespace
    assert "".join(text.split()) == "".join(pieces)  # together they cover every other char
    assert emb.count_tokens([text, ""]) == [len(spans), 0]


def test_max_chunk_tokens_is_what_the_model_reads(emb):
    assert emb.max_seq_length == 256
    assert emb.max_chunk_tokens == 254
    prefixed = LocalEmbeddings(document_prefix="passage: ")
    assert prefixed.max_chunk_tokens == 254 - prefixed.count_tokens(["passage: "])[0]
    assert emb.info.max_seq_length == emb._encoder().model.max_seq_length  # as ST sees it


def _text_of(emb: LocalEmbeddings, n_tokens: int, seed: int = 0) -> str:
    words = (PROSE * 40).split()
    rng = np.random.default_rng(seed)
    text = " ".join(rng.permutation(words))
    spans = emb.token_offsets(text)
    return text[: spans[n_tokens - 1][1]]


def test_a_chunk_of_max_chunk_tokens_is_read_whole(emb):
    text = _text_of(emb, emb.max_chunk_tokens)
    assert emb.count_tokens([text]) == [254]
    windows = LocalEmbeddings(long_text="error")  # would raise if it needed a second window
    assert np.allclose(windows.embed_documents([text])[0], emb.embed_documents([text])[0])


def test_long_text_is_split_and_averaged_not_truncated(emb):
    head = _text_of(emb, 254, seed=1)
    tail = " Photosynthesis converts light energy into chemical energy stored in glucose." * 30
    long = head + tail
    vec = emb.embed_documents([long])[0]
    assert abs(np.linalg.norm(vec) - 1.0) < 1e-5
    # truncation would give the vector of the first 254 tokens; the tail counts here
    assert cos(vec, emb.embed_documents([head])[0]) < 0.95
    # it is the token-weighted mean of the windows' vectors
    spans = emb.token_offsets(long)
    windows = [spans[i : i + 254] for i in range(0, len(spans), 254)]
    parts = [long[w[0][0] : w[-1][1]] for w in windows]
    wvecs = np.array(emb.embed_documents(parts))
    mean = (wvecs * np.array([len(w) for w in windows])[:, None]).sum(0)
    assert cos(vec, mean) > 0.9999


def test_long_text_error_mode(emb):
    strict = LocalEmbeddings(long_text="error")
    long = PROSE * 20
    n = emb.count_tokens([long])[0] + 2
    with pytest.raises(EmbeddingError, match=f"text 1 is {n} tokens long but .* reads at most 256"):
        strict.embed_documents(["fine", long])


def test_eight_threads_embed_concurrently(emb):
    texts = [f"{PROSE} variation number {i}" for i in range(24)]
    # one text per call, as the threads do: with bf16 kernels (auto on CPUs that have them)
    # a vector depends on the batch it was computed in by ~1e-4, so batch shapes must match
    reference = LocalEmbeddings()
    expected = [reference.embed_documents([t])[0] for t in texts]
    fresh = LocalEmbeddings(cache=EmbedderCache())  # the first calls race to load it

    def one(i: int) -> list[float]:
        return fresh.embed_documents([texts[i]])[0] if i % 2 else fresh.embed_query(texts[i])

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(len(texts))))
    assert np.allclose(got, expected, atol=1e-5)
    # and no thread got another text's vector
    sims = np.array(got) @ np.array(expected).T
    assert (sims.argmax(axis=1) == np.arange(len(texts))).all()


async def test_async_embedding_does_not_block_the_event_loop(emb):
    texts = [PROSE * 2] * 64
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    start = time.perf_counter()
    vecs = await emb.aembed_documents(texts)
    elapsed = time.perf_counter() - start
    task.cancel()
    assert len(vecs) == 64
    # a blocked loop would tick at most once; a free one about elapsed / 10 ms times
    assert ticks >= min(5, int(elapsed / 0.01) // 4)
    assert ticks >= 3
    assert np.allclose(await emb.aembed_query("x"), emb.embed_query("x"))


def test_loading_never_touches_the_network():
    pytest_socket.disable_socket(allow_unix_socket=True)
    try:
        fresh = LocalEmbeddings(cache=EmbedderCache())
        assert len(fresh.embed_query("offline")) == 384
    finally:
        pytest_socket.enable_socket()
    assert "HF_HUB_OFFLINE" not in os.environ or os.environ["HF_HUB_OFFLINE"] == "1"


def test_corrupt_weights_are_an_embedding_error(tmp_path, emb):
    broken = tmp_path / "broken-minilm"
    shutil.copytree(emb.model_dir, broken, ignore=shutil.ignore_patterns("model.safetensors"))
    (broken / "model.safetensors").write_bytes(b"\x00" * 1024)
    with pytest.raises(EmbeddingError, match="broken-minilm: sentence-transformers could not"):
        LocalEmbeddings(model=str(broken), cache=EmbedderCache()).embed_query("x")


# -- the ONNX backends ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-home")


def test_onnx_backend_gives_the_torch_vectors(emb, onnx_home):
    onnx = LocalEmbeddings(backend="onnx", settings=Settings(home=onnx_home), cache=EmbedderCache())
    texts = [PROSE, "", "hello", _text_of(emb, 254)]
    got, want = np.array(onnx.embed_documents(texts)), np.array(emb.embed_documents(texts))
    assert (got * want).sum(1).min() > 0.9999
    assert onnx.model_id == emb.model_id
    exported = list((onnx_home / "cache" / "onnx").glob("all-MiniLM-L6-v2-*/model.onnx"))
    assert len(exported) == 1
    stamp = exported[0].stat().st_mtime_ns
    # a new process (here: a fresh cache) reuses the export
    again = LocalEmbeddings(
        backend="onnx", settings=Settings(home=onnx_home), cache=EmbedderCache()
    )
    assert np.allclose(again.embed_documents(texts), got, atol=1e-6)
    assert exported[0].stat().st_mtime_ns == stamp
    assert not list((onnx_home / "cache" / "onnx").glob(".*tmp"))  # nothing half-built left


def test_onnx_int8_stays_within_cosine_099(emb, onnx_home):
    q = LocalEmbeddings(
        backend="onnx-int8", settings=Settings(home=onnx_home), cache=EmbedderCache()
    )
    texts = [PROSE, "hello", "How do I reset my password?", _text_of(emb, 254, seed=3)]
    got, want = np.array(q.embed_documents(texts)), np.array(emb.embed_documents(texts))
    assert (got * want).sum(1).min() >= 0.99
    assert q.model_id == emb.model_id + "+int8"
    long = PROSE * 20  # windows work the same way on every backend
    assert cos(q.embed_documents([long])[0], emb.embed_documents([long])[0]) >= 0.99


# -- LlamaEmbeddings (SmolLM2: not an embedding model, but it proves the mechanics) ----------


@pytest.fixture(scope="module")
def llama_emb() -> LlamaEmbeddings:
    return LlamaEmbeddings(n_ctx=64).load()


def test_llama_one_unit_vector_of_n_embd_per_text(llama_emb):
    texts = ["hello world", "", PROSE]
    vecs = llama_emb.embed_documents(texts)
    assert llama_emb.dimension == 576
    assert [len(v) for v in vecs] == [576] * 3
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert llama_emb.embedder.pooling == "none"  # a chat model: we average its token vectors
    assert llama_emb.model_id == "SmolLM2-135M-Instruct.Q4_1"


def test_llama_deterministic_and_independent_of_batching(llama_emb):
    texts = ["alpha beta", "gamma delta epsilon", "hello world"]
    together = np.array(llama_emb.embed_documents(texts))
    alone = np.array([llama_emb.embed_query(t) for t in texts])
    # llama.cpp's sums differ in the last bits between batch shapes
    assert (together * alone).sum(1).min() > 0.9999
    assert np.array_equal(llama_emb.embed_documents(texts), together)


def test_llama_long_text_split_or_refused(llama_emb):
    long = PROSE * 4  # ~170 tokens, context 64
    n_windows = len(llama_emb.embedder.sequences([long]))
    assert n_windows >= 3
    vec = llama_emb.embed_documents([long])[0]
    assert len(vec) == 576 and abs(np.linalg.norm(vec) - 1.0) < 1e-5
    head = llama_emb.embedder.engine.detokenize(llama_emb.embedder.tokenize(long)[:64])
    assert cos(vec, llama_emb.embed_query(head)) < 0.9999  # the tail was read
    strict = LlamaEmbeddings(n_ctx=64, long_text="error")
    with pytest.raises(EmbeddingError, match="context window is 64"):
        strict.embed_documents([long])


def test_llama_threads_share_one_model(llama_emb):
    texts = [f"sentence number {i} about {PROSE[:40]}" for i in range(8)]
    expected = [llama_emb.embed_query(t) for t in texts]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(llama_emb.embed_query, texts))
    assert np.array_equal(got, expected)


def test_llama_embedding_and_chat_loads_are_separate_cache_entries():
    cache = ModelCache()
    chat = LlamaEngine(n_ctx=256, cache=cache).load()
    emb = LlamaEmbeddings(n_ctx=64, cache=cache).load()
    try:
        assert sorted(e["embedding"] for e in cache.list()) == [False, True]
        # the chat path still works
        assert chat.complete("Hi", SamplingParams(max_tokens=4, temperature=0)).text is not None
        assert len(emb.embed_query("hi")) == 576
    finally:
        emb.close()
        chat.close()
    assert len(cache) == 0


def test_bf16_precision_stays_within_cosine_0_999_of_fp32() -> None:
    import numpy as np

    from llamachain._st_loader import native_bf16

    texts = ["The admin console listens on port 9443. " * 12, "hello", "", "Ünïcode ✓ text"]
    fp32 = np.array(LocalEmbeddings(precision="fp32").embed_documents(texts))
    bf16 = np.array(LocalEmbeddings(precision="bf16").embed_documents(texts))
    assert np.allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-5)
    assert ((fp32 * bf16).sum(axis=1) > 0.999).all()
    assert LocalEmbeddings(precision="bf16").model_id == LocalEmbeddings().model_id
    assert LocalEmbeddings()._bf16() is native_bf16()
