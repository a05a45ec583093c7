import pytest

from llamachain.engine.templates import format_names, from_jinja, get_format
from llamachain.errors import UnknownChatFormatError

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Name a colour."},
]

EXPECTED = {
    "alpaca": "Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello!\n\n"
    "### Instruction:\nName a colour.\n\n### Response:\n",
    "chatml": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n"
    "<|im_start|>assistant\n",
    "llama-2": "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>"
    "[INST] Name a colour. [/INST]",
    "llama-3": "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nName a colour.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "vicuna": "Be brief.\n\nUSER: Hi\nASSISTANT: Hello!</s>\nUSER: Name a colour.\nASSISTANT:",
    "gemma": "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!"
    "<end_of_turn>\n<start_of_turn>user\nName a colour.<end_of_turn>\n<start_of_turn>model\n",
}


def test_all_named_formats_are_tested():
    assert sorted(EXPECTED) == format_names()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_named_format_renders_exactly(name):
    fmt = get_format(name)
    assert fmt.render(MESSAGES) == EXPECTED[name]
    assert fmt.stop, "every format names the strings that end a turn"


def test_alpaca_without_system_uses_the_alpaca_preamble():
    out = get_format("alpaca").render([{"role": "user", "content": "Add 2 and 2."}])
    assert out.startswith("Below is an instruction that describes a task.")
    assert out.endswith("### Instruction:\nAdd 2 and 2.\n\n### Response:\n")


def test_unknown_format_lists_valid_names():
    with pytest.raises(UnknownChatFormatError) as e:
        get_format("alpacca")
    for name in format_names():
        assert name in str(e.value)


def test_tool_messages_become_user_turns_for_strict_formats():
    out = get_format("gemma").render(
        [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "call"},
            {"role": "tool", "content": "42", "name": "calc"},
        ]
    )
    assert "<start_of_turn>user\n[result of calc]\n42<end_of_turn>" in out


def test_jinja_template_with_strict_roles_gets_normalised_messages():
    strict = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    fmt = from_jinja(strict, "<s>", "</s>")
    out = fmt.render(MESSAGES[:2])
    assert out == "<user>Be brief.\n\nHi<assistant>"
    assert fmt.stop == ("</s>",)


def test_jinja_template_sees_bos_token():
    fmt = from_jinja("{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}", "<s>", "")
    assert fmt.render([{"role": "user", "content": "x"}]) == "<s>x"
