"""Model files that are valid GGUF but unusual: no chat template, unknown architecture."""

import pytest

from llamachain import ChatLlama, LlamaEngine, LlamaLLM
from llamachain.engine import SamplingParams
from llamachain.errors import ModelLoadError


def test_model_without_template_falls_back_to_alpaca(model_without_template):
    engine = LlamaEngine(model_without_template, n_ctx=512)
    assert not engine.info.has_chat_template
    assert engine.chat_format.name == "alpaca"
    prompt = engine.format_chat([{"role": "user", "content": "Name a fruit."}])
    assert "### Instruction:\nName a fruit." in prompt and prompt.endswith("### Response:\n")
    out = engine.chat(
        [{"role": "user", "content": "Name a fruit."}], SamplingParams(temperature=0, max_tokens=24)
    )
    assert out.text.strip() and "### Instruction" not in out.text
    engine.close()


@pytest.mark.parametrize("name", ["chatml", "vicuna", "llama-2"])
def test_named_formats_run_on_a_real_model(model_without_template, name):
    chat = ChatLlama(
        model=str(model_without_template), n_ctx=512, chat_format=name, temperature=0, max_tokens=16
    )
    assert chat.invoke("Say hello.").content.strip()
    llm = LlamaLLM(
        model=str(model_without_template),
        n_ctx=512,
        chat_format=name,
        use_chat_template=True,
        temperature=0,
        max_tokens=16,
    )
    assert llm.invoke("Say hello.").strip()
    chat.close()
    llm.close()


def test_unknown_architecture_is_a_clean_error(unknown_architecture_gguf):
    engine = LlamaEngine(unknown_architecture_gguf, n_ctx=128)
    assert engine.info.architecture == "mysterynet"
    with pytest.raises(ModelLoadError) as e:
        engine.tokenize("hello")
    msg = str(e.value)
    assert str(unknown_architecture_gguf) in msg
    assert "unknown model architecture: 'mysterynet'" in msg
