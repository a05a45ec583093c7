"""Rebuild a Hugging Face ``tokenizer.json`` (and its config files) from a GGUF vocabulary.

Only byte-level BPE vocabularies (``tokenizer.ggml.model = "gpt2"``) are rebuilt; each
llama.cpp pre-tokenizer name we know is mapped to the ``tokenizers`` pre-tokenizer that
splits text the same way.
"""

from __future__ import annotations

from typing import Any

from llamachain.errors import ConfigError
from llamachain.models._convert_tokenizer import CONTROL, USER_DEFINED, GGUFVocab

# The Llama 3 split pattern (letters, 1-3 digit groups, punctuation runs, newlines, spaces).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
EXPORTABLE_PRE = ("gpt2", "smollm", "llama-bpe")


def _pre_tokenizer(pre: str | None) -> Any:
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in (None, "gpt2"):
        return byte_level
    if pre == "smollm":  # every digit on its own, then GPT-2's split
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre == "llama-bpe":
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    raise ConfigError(
        f"cannot rebuild a Hugging Face tokenizer for llama.cpp pre-tokenizer {pre!r}; "
        f"supported: {', '.join(EXPORTABLE_PRE)}"
    )


def build_tokenizer_json(vocab: GGUFVocab) -> str:
    """A ``tokenizer.json`` document that tokenizes like llama.cpp does with ``vocab``."""
    if vocab.model != "gpt2":
        raise ConfigError(
            f"cannot rebuild a Hugging Face tokenizer for a {vocab.model!r} vocabulary; only "
            "byte-level BPE ('gpt2') vocabularies can be exported"
        )
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    ids = {tok: i for i, tok in enumerate(vocab.tokens)}
    if len(ids) != len(vocab.tokens):
        raise ConfigError("the GGUF vocabulary has duplicate tokens; it cannot be exported")
    merges: list[tuple[str, str]] = []
    for merge in vocab.merges:
        left, sep, right = merge.partition(" ")
        if not sep or not left or not right:
            raise ConfigError(f"the GGUF vocabulary has a merge {merge!r} that is not two tokens")
        merges.append((left, right))
    bpe = models.BPE(vocab=ids, merges=merges, fuse_unk=False, byte_fallback=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = _pre_tokenizer(vocab.pre)
    tok.decoder = decoders.ByteLevel()
    bos = vocab.tokens[vocab.bos_id] if vocab.bos_id is not None else None
    if vocab.add_bos and bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab.bos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    special = [
        AddedToken(t, special=True, normalized=False)
        for t, kind in zip(vocab.tokens, vocab.token_types, strict=True)
        if kind == CONTROL
    ]
    user = [
        AddedToken(t, special=False, normalized=False)
        for t, kind in zip(vocab.tokens, vocab.token_types, strict=True)
        if kind == USER_DEFINED
    ]
    tok.add_special_tokens(special)
    tok.add_tokens(user)
    if tok.get_vocab_size() != len(vocab.tokens):  # pragma: no cover - defensive
        raise ConfigError("the rebuilt tokenizer has a different number of tokens")
    return str(tok.to_str(pretty=True))


def tokenizer_config(vocab: GGUFVocab, context_length: int | None) -> dict[str, Any]:
    """``tokenizer_config.json``: special tokens, BOS/EOS flags and the chat template."""

    def name(i: int | None) -> str | None:
        return vocab.tokens[i] if i is not None and 0 <= i < len(vocab.tokens) else None

    data: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": name(vocab.bos_id),
        "eos_token": name(vocab.eos_id),
        "unk_token": name(vocab.unk_id),
        "pad_token": name(vocab.pad_id),
        "add_bos_token": vocab.add_bos,
        "add_eos_token": vocab.add_eos,
        "clean_up_tokenization_spaces": False,
    }
    if context_length:
        data["model_max_length"] = context_length
    if vocab.named_templates:
        templates = (
            [{"name": "default", "template": vocab.chat_template}] if vocab.chat_template else []
        )
        templates += [{"name": k, "template": v} for k, v in vocab.named_templates.items()]
        data["chat_template"] = templates
    elif vocab.chat_template:
        data["chat_template"] = vocab.chat_template
    return {k: v for k, v in data.items() if v is not None}
