"""Prompt formats: the model's own chat template from its GGUF, or a named fallback.

A chat format turns a list of ``{"role", "content"}`` messages into the prompt text and says
which strings end the assistant's turn.  The model's GGUF template is rendered with a
sandboxed Jinja environment; models without one get a named format (default ``alpaca``).
Formats are registered by a decorator; an unknown name is answered with the valid ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llamachain.errors import ConfigError, UnknownChatFormatError

logger = logging.getLogger(__name__)

Message = dict[str, Any]
Renderer = Callable[[Sequence[Message], bool], str]

DEFAULT_FALLBACK = "alpaca"


@dataclass(frozen=True)
class ChatFormat:
    """A way to turn messages into a prompt."""

    name: str
    render_fn: Renderer
    stop: tuple[str, ...] = ()
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        if not messages:
            raise ConfigError("cannot build a prompt from an empty list of messages")
        return self.render_fn(messages, add_generation_prompt)


_FORMATS: dict[str, Callable[[], ChatFormat]] = {}


def register_format(name: str) -> Callable[[Callable[[], ChatFormat]], Callable[[], ChatFormat]]:
    """Register a named chat format factory."""

    def deco(factory: Callable[[], ChatFormat]) -> Callable[[], ChatFormat]:
        _FORMATS[name] = factory
        return factory

    return deco


def format_names() -> list[str]:
    return sorted(_FORMATS)


def get_format(name: str) -> ChatFormat:
    try:
        return _FORMATS[name]()
    except KeyError:
        raise UnknownChatFormatError(name, ["auto", *format_names()]) from None


def _system_and_turns(messages: Sequence[Message]) -> tuple[str, list[Message]]:
    """Merge all system messages into one text; normalise the rest to user/assistant turns."""
    system = "\n\n".join(str(m["content"]) for m in messages if m["role"] == "system")
    turns = [m for m in messages if m["role"] != "system"]
    return system, normalize_roles(turns)


def normalize_roles(messages: Sequence[Message]) -> list[Message]:
    """Map tool results to user turns and merge consecutive turns of the same role.

    Strict templates (Gemma, Llama-2, Mistral) only accept alternating user/assistant turns.
    """
    out: list[Message] = []
    for m in messages:
        role = m["role"]
        content = str(m.get("content") or "")
        if role == "tool":
            name = m.get("name") or "tool"
            role, content = "user", f"[result of {name}]\n{content}"
        elif role not in ("user", "assistant", "system"):
            role = "user"
        if out and out[-1]["role"] == role:
            out[-1] = {"role": role, "content": out[-1]["content"] + "\n\n" + content}
        else:
            out.append({"role": role, "content": content})
    return out


@register_format("alpaca")
def _alpaca() -> ChatFormat:
    preamble = (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request."
    )

    def render(messages: Sequence[Message], gen: bool) -> str:
        system, turns = _system_and_turns(messages)
        parts = [(system or preamble) + "\n\n"]
        for m in turns:
            if m["role"] == "user":
                parts.append(f"### Instruction:\n{m['content']}\n\n")
            else:
                parts.append(f"### Response:\n{m['content']}\n\n")
        if gen:
            parts.append("### Response:\n")
        return "".join(parts)

    return ChatFormat("alpaca", render, ("### Instruction:", "\n### "), "Stanford Alpaca")


@register_format("chatml")
def _chatml() -> ChatFormat:
    def render(messages: Sequence[Message], gen: bool) -> str:
        parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
        if gen:
            parts.append("<|im_start|>assistant\n")
        return "".join(parts)

    return ChatFormat("chatml", render, ("<|im_end|>", "<|im_start|>"), "ChatML (OpenAI, Qwen)")


@register_format("llama-2")
def _llama2() -> ChatFormat:
    def render(messages: Sequence[Message], gen: bool) -> str:
        system, turns = _system_and_turns(messages)
        out = ""
        first = True
        for m in turns:
            if m["role"] == "user":
                text = m["content"]
                if first and system:
                    text = f"<<SYS>>\n{system}\n<</SYS>>\n\n{text}"
                out += f"[INST] {text} [/INST]"
                first = False
            else:
                out += f" {m['content']} </s><s>"
        return out

    return ChatFormat("llama-2", render, ("[INST]", "</s>"), "Llama 2 chat")


@register_format("llama-3")
def _llama3() -> ChatFormat:
    def render(messages: Sequence[Message], gen: bool) -> str:
        parts = [
            f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>"
            for m in messages
        ]
        if gen:
            parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
        return "".join(parts)

    return ChatFormat("llama-3", render, ("<|eot_id|>", "<|start_header_id|>"), "Llama 3 instruct")


@register_format("vicuna")
def _vicuna() -> ChatFormat:
    preamble = (
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions."
    )

    def render(messages: Sequence[Message], gen: bool) -> str:
        system, turns = _system_and_turns(messages)
        out = (system or preamble) + "\n\n"
        for m in turns:
            if m["role"] == "user":
                out += f"USER: {m['content']}\n"
            else:
                out += f"ASSISTANT: {m['content']}</s>\n"
        if gen:
            out += "ASSISTANT:"
        return out

    return ChatFormat("vicuna", render, ("USER:", "</s>"), "Vicuna v1.1")


@register_format("gemma")
def _gemma() -> ChatFormat:
    def render(messages: Sequence[Message], gen: bool) -> str:
        system, turns = _system_and_turns(messages)
        out = ""
        for i, m in enumerate(turns):
            role = "model" if m["role"] == "assistant" else "user"
            text = m["content"]
            if i == 0 and system:
                text = f"{system}\n\n{text}"
            out += f"<start_of_turn>{role}\n{text}<end_of_turn>\n"
        if gen:
            out += "<start_of_turn>model\n"
        return out

    return ChatFormat("gemma", render, ("<end_of_turn>", "<start_of_turn>"), "Gemma instruct")


def from_jinja(template: str, bos_token: str, eos_token: str) -> ChatFormat:
    """A chat format from a model's own Jinja chat template."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    compiled = env.from_string(template)

    def render(messages: Sequence[Message], gen: bool) -> str:
        kwargs = {"bos_token": bos_token, "eos_token": eos_token, "add_generation_prompt": gen}
        try:
            return compiled.render(messages=list(messages), **kwargs)
        except jinja2.TemplateError:
            # Strict templates reject system/tool roles or non-alternating turns: retry with
            # the system text folded into the first user turn and roles normalised.
            system, turns = _system_and_turns(messages)
            if system and turns and turns[0]["role"] == "user":
                turns[0] = {"role": "user", "content": f"{system}\n\n{turns[0]['content']}"}
            elif system:
                turns.insert(0, {"role": "user", "content": system})
            try:
                return compiled.render(messages=turns, **kwargs)
            except jinja2.TemplateError as e:
                raise ConfigError(f"the model's chat template rejected the messages: {e}") from e

    stop = tuple(s for s in (eos_token,) if s)
    return ChatFormat("gguf", render, stop, "the model's own chat template")
