"""The architecture zoo through llama.cpp, and every named prompt format driving a real model.

Each tiny model is written once per module; they have random weights, so the tests check
structure (loads, tokenizes, generates, deterministic) and never content.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from llamachain import ChatLlama, ContextOverflowError, LlamaEngine, LlamaLLM, SamplingParams
from llamachain.engine import _encoder
from llamachain.engine.templates import format_names, get_format
from llamachain.errors import ModelLoadError
from llamachain.models import read_model_info
from llamachain.models.zoo import ARCHITECTURES, write_tiny_model

RUNS = [a.name for a in ARCHITECTURES.values() if a.runs]
ASCII = "Hello world, the cat sat on the mat."
UNICODE = "Café déjà vu: 42 ✓\n\ttabs and  two spaces"
PROMPT = "The capital of France is"
LOAD = {"n_ctx": 256, "n_threads": 1}
GREEDY = {"temperature": 0, "seed": 0, "max_tokens": 8}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("zoo")
    return {name: write_tiny_model(name, out / f"tiny-{name}.gguf") for name in ARCHITECTURES}


def test_llamachain_runs_these_architectures():
    assert RUNS == ["llama", "gpt2", "bloom", "gemma", "gemma3", "t5", "rwkv6", "rwkv7"]


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_model_info_reports_the_architecture(zoo, arch):
    info = read_model_info(zoo[arch])
    assert info.architecture == ARCHITECTURES[arch].gguf_arch
    assert info.name == f"tiny-{arch}"
    assert info.chat_template is None


@pytest.mark.parametrize("arch", RUNS)
def test_tokenizer_round_trips(zoo, arch):
    engine = LlamaEngine(str(zoo[arch]), **LOAD)
    kind = ARCHITECTURES[arch].tokenizer
    # SentencePiece models put a space before the text (LLaMA's add_space_prefix); T5's
    # unigram vocabulary has no byte fallback, so only ASCII with single spaces survives.
    lead = " " if kind == "spm" else ""
    texts = [ASCII] if kind == "ugm" else [ASCII, UNICODE]
    for text in texts:
        ids = engine.tokenize(text)
        assert len(ids) < len(text.encode("utf-8")), "no learned merge was used"
        assert engine.detokenize(ids) == lead + text
    engine.close()


@pytest.mark.parametrize("arch", RUNS)
def test_llm_generates_deterministically(zoo, arch):
    llm = LlamaLLM(model=str(zoo[arch]), **LOAD, **GREEDY)
    result = llm.generate([PROMPT])
    usage = result.llm_output["token_usage"]
    assert usage["input_tokens"] == len(llm.engine.prompt_tokens(PROMPT))
    assert usage["output_tokens"] > 0
    text = result.generations[0][0].text
    assert llm.invoke(PROMPT) == text
    assert "".join(llm.stream(PROMPT)) == text


@pytest.mark.parametrize("arch", RUNS)
def test_chat_generates_with_a_named_format(zoo, arch):
    row = ARCHITECTURES[arch]
    assert row.chat_format in format_names()
    chat = ChatLlama(model=str(zoo[arch]), chat_format=row.chat_format, **LOAD, **GREEDY)
    messages = [SystemMessage("Be brief."), HumanMessage("Say hello.")]
    reply = chat.invoke(messages)
    assert reply.usage_metadata["output_tokens"] > 0
    assert reply.usage_metadata["input_tokens"] == chat.get_num_tokens_from_messages(messages)
    assert chat.invoke(messages).content == reply.content
    assert "".join(c.content for c in chat.stream(messages)) == reply.content


def test_f16_weights_load_and_generate(tmp_path):
    path = write_tiny_model("llama", tmp_path / "tiny-f16.gguf", dtype="f16")
    assert read_model_info(path).file_type == "F16"
    llm = LlamaLLM(model=str(path), **LOAD, **GREEDY)
    assert llm.generate([PROMPT]).llm_output["token_usage"]["output_tokens"] > 0


def test_gptj_is_refused_with_a_clear_error(zoo):
    llm = LlamaLLM(model=str(zoo["gptj"]), **LOAD, **GREEDY)
    with pytest.raises(ModelLoadError, match="unsupported model architecture: 'gptj'"):
        llm.invoke(PROMPT)


# -- T5: encoder-decoder ------------------------------------------------------------------


def _t5_generate(engine: LlamaEngine, prompt: str) -> tuple[str, int, int]:
    m = engine._loaded()
    tokens = engine.prompt_tokens(prompt)
    params = SamplingParams(temperature=0, seed=0, max_tokens=8)
    chunks = list(
        _encoder.generate(m, tokens, 8, params, None, None, None, prefix_cache=True, block=64)
    )
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens == len(tokens)
    return "".join(c.text for c in chunks), usage.completion_tokens, len(tokens)


def test_t5_generates_through_the_encoder_module(zoo):
    engine = LlamaEngine(str(zoo["t5"]), **LOAD)
    text, n, _ = _t5_generate(engine, "translate English to German: the cat")
    assert n > 0
    assert _t5_generate(engine, "translate English to German: the cat")[0] == text
    # the decoder reads the encoder's output: another input, another answer
    assert _t5_generate(engine, "summarize: a dog and a cat")[0] != text
    engine.close()


def test_t5_prompt_longer_than_the_encoder_batch_is_refused(zoo):
    engine = LlamaEngine(str(zoo["t5"]), n_ctx=256, n_batch=8, n_threads=1)
    with pytest.raises(ContextOverflowError, match="raise n_batch"):
        _t5_generate(engine, "summarize: the quick brown fox jumps over the lazy dog")
    engine.close()


def test_t5_in_a_fresh_process_does_not_abort(zoo):
    """Decoding a T5 context without llama_encode aborts the whole process in llama.cpp, so
    the engine's encoder step is checked where an abort would show: a child process."""
    code = textwrap.dedent(
        f"""
        from llamachain import LlamaLLM
        llm = LlamaLLM(model={str(zoo["t5"])!r}, n_ctx=256, n_threads=1, temperature=0,
                       max_tokens=4)
        print("OUTPUT", repr(llm.invoke("summarize: the cat")))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "OUTPUT" in proc.stdout and "llama_encode must be called first" not in proc.stderr
    assert ARCHITECTURES["t5"].runs


# -- named prompt formats on a real model without a chat template ---------------------------

FEW_SHOT = [
    {"role": "system", "content": "You answer with one word."},
    {"role": "user", "content": "Name a fruit."},
    {"role": "assistant", "content": "Apple."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "Name an animal."},
]
MARKERS = (
    "### Instruction",
    "### Response",
    "<|im_start|>",
    "<|im_end|>",
    "[INST]",
    "[/INST]",
    "</s>",
    "<|start_header_id|>",
    "<|eot_id|>",
    "USER:",
    "ASSISTANT:",
    "<start_of_turn>",
    "<end_of_turn>",
)


@pytest.fixture(scope="module")
def formats_seen() -> dict[str, list[str]]:
    return {"ran": [], "stopped": []}


@pytest.mark.parametrize("name", format_names())
def test_named_format_drives_generation_and_its_stops_work(
    model_without_template, name, formats_seen
):
    chat = ChatLlama(
        model=str(model_without_template),
        chat_format=name,
        n_ctx=512,
        n_threads=1,
        prefix_cache=False,
        temperature=0,
        seed=0,
        max_tokens=16,
        repeat_penalty=1.0,
    )
    reply = chat.invoke([(m["role"], m["content"]) for m in FEW_SHOT])
    text = reply.content
    assert text.strip()
    assert not [m for m in MARKERS if m in text]
    # The same prompt without stop strings: the reply is that text cut at the first stop.
    engine = chat.engine
    raw = engine.complete(
        engine.format_chat(FEW_SHOT),
        SamplingParams(temperature=0, seed=0, max_tokens=16, repeat_penalty=1.0),
    ).text
    hits = [raw.index(s) for s in get_format(name).stop if s in raw]
    formats_seen["ran"].append(name)
    if hits:
        formats_seen["stopped"].append(name)
        assert reply.response_metadata["finish_reason"] == "stop"
        assert text == raw[: min(hits)]
    else:
        assert text == raw


def test_stop_strings_were_exercised(formats_seen):
    """The few-shot prompt makes the model go on to the next turn in most formats."""
    if sorted(formats_seen["ran"]) != format_names():
        pytest.skip("needs every case of the format test above to have passed first")
    assert len(formats_seen["stopped"]) >= 3, formats_seen
