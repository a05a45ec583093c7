"""The tokenizer part of a checkpoint conversion: Hugging Face files <-> GGUF vocabulary.

A checkpoint's tokenizer comes from ``tokenizer.json`` (byte-level BPE, stored in GGUF as
``tokenizer.ggml.model = "gpt2"`` with its merges) or from a sentencepiece ``tokenizer.model``
(stored as ``"llama"`` with per-token scores).  The special-token ids, the BOS/EOS flags and
the chat template come from ``tokenizer_config.json`` (then ``chat_template.jinja``,
``config.json`` and ``generation_config.json``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamachain.errors import ModelFileError
from llamachain.models.gguf_info import reader_field

logger = logging.getLogger(__name__)

# GGUF token types (llama.cpp's llama_token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# llama.cpp pre-tokenizer names we recognise from a tokenizer.json's pre_tokenizer.
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SUPPORTED_PRE = {
    "gpt2": "ByteLevel (GPT-2 split)",
    "smollm": "Digits(individual) + ByteLevel",
    "llama-bpe": "Split(Llama 3 pattern) + ByteLevel",
}


@dataclass
class GGUFVocab:
    """The tokenizer as a GGUF file stores it."""

    model: str
    pre: str | None
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None
    pad_id: int | None = None
    add_bos: bool = False
    add_eos: bool = False
    chat_template: str | None = None
    named_templates: dict[str, str] | None = None
    scores: list[float] | None = None
    add_space_prefix: bool | None = None

    def write(self, writer: Any) -> None:
        """Add this vocabulary's keys to a ``gguf.GGUFWriter``."""
        writer.add_tokenizer_model(self.model)
        if self.pre:
            writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        writer.add_token_types(self.token_types)
        if self.merges:
            writer.add_token_merges(self.merges)
        for key, value in (
            ("bos", self.bos_id),
            ("eos", self.eos_id),
            ("unk", self.unk_id),
            ("pad", self.pad_id),
        ):
            if value is not None:
                getattr(writer, f"add_{key}_token_id")(value)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)
        if self.named_templates:
            choices = [{"name": k, "template": v} for k, v in self.named_templates.items()]
            if self.chat_template:
                choices.insert(0, {"name": "default", "template": self.chat_template})
            writer.add_chat_template(choices)
        elif self.chat_template:
            writer.add_chat_template(self.chat_template)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(path, f"is not readable JSON ({e}); restore the file") from e
    if not isinstance(data, dict):
        raise ModelFileError(path, "is not a JSON object; restore the file")
    return data


def _optional_json(path: Path) -> dict[str, Any]:
    return _read_json(path) if path.is_file() else {}


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _pre_name(pre: Any, path: Path) -> str:
    """The llama.cpp pre-tokenizer name for a tokenizer.json ``pre_tokenizer``."""

    def kind(node: Any) -> str:
        return str(node.get("type")) if isinstance(node, dict) else "none"

    parts = pre.get("pretokenizers", []) if kind(pre) == "Sequence" else [pre]
    kinds = [kind(p) for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt2"
    if (
        kinds == ["Digits", "ByteLevel"]
        and parts[0].get("individual_digits")
        and parts[1].get("use_regex", True)
    ):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True):
        pattern = parts[0].get("pattern", {})
        if isinstance(pattern, dict) and pattern.get("Regex") == _LLAMA3_PATTERN:
            return "llama-bpe"
    described = " + ".join(kinds)
    raise ModelFileError(
        path,
        f"has a pre-tokenizer ({described}) that does not match one of llama.cpp's; "
        f"supported: {'; '.join(f'{v} ({k})' for k, v in SUPPORTED_PRE.items())}",
    )


def _bpe_vocab(path: Path, data: dict[str, Any]) -> GGUFVocab:
    model = data.get("model") or {}
    mtype = model.get("type")
    if mtype != "BPE" or model.get("byte_fallback"):
        what = "sentencepiece-style BPE (byte_fallback)" if mtype == "BPE" else repr(mtype)
        raise ModelFileError(
            path,
            f"is a {what} tokenizer; only byte-level BPE tokenizer.json files are converted. "
            "For a sentencepiece tokenizer put its tokenizer.model next to config.json",
        )
    pre = _pre_name(data.get("pre_tokenizer"), path)
    by_id: dict[int, str] = {int(i): t for t, i in model.get("vocab", {}).items()}
    kinds: dict[int, int] = {}
    for added in data.get("added_tokens") or []:
        i, text = int(added["id"]), str(added["content"])
        by_id[i] = text
        kinds[i] = CONTROL if added.get("special") else USER_DEFINED
    if not by_id:
        raise ModelFileError(path, "has an empty vocabulary")
    size = max(by_id) + 1
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(size)]
    types = [kinds.get(i, NORMAL if i in by_id else UNUSED) for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return GGUFVocab(
        model="gpt2",
        pre=pre,
        tokens=tokens,
        token_types=types,
        merges=merges,
        unk_id=_id_of(model.get("unk_token"), tokens),
        add_space_prefix=False,
    )


def _sentencepiece_vocab(path: Path) -> GGUFVocab:
    try:
        import sentencepiece
    except ImportError as e:
        raise ModelFileError(
            path,
            "is a sentencepiece model; converting it needs the sentencepiece package: "
            "pip install sentencepiece",
        ) from e
    try:
        sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    except Exception as e:  # sentencepiece raises RuntimeError/OSError for bad files
        raise ModelFileError(path, f"is not a readable sentencepiece model ({e})") from e
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        if sp.is_unknown(i):
            types.append(UNKNOWN)
        elif sp.is_control(i):
            types.append(CONTROL)
        elif sp.is_unused(i):
            types.append(UNUSED)
        elif sp.is_byte(i):
            types.append(BYTE)
        else:
            types.append(NORMAL)
    vocab = GGUFVocab(
        model="llama",
        pre="default",
        tokens=tokens,
        token_types=types,
        merges=[],
        scores=scores,
        bos_id=sp.bos_id() if sp.bos_id() >= 0 else None,
        eos_id=sp.eos_id() if sp.eos_id() >= 0 else None,
        unk_id=sp.unk_id() if sp.unk_id() >= 0 else None,
        pad_id=sp.pad_id() if sp.pad_id() >= 0 else None,
        add_bos=True,
        add_space_prefix=_add_dummy_prefix(path),
    )
    # Tokens added on top of the sentencepiece model (added_tokens.json: text -> id).
    extra = _optional_json(path.parent / "added_tokens.json")
    for text, i in sorted(extra.items(), key=lambda kv: int(kv[1])):
        if int(i) < len(tokens):
            continue
        if int(i) != len(tokens):
            raise ModelFileError(path.parent / "added_tokens.json", f"skips ids before {i}")
        tokens.append(str(text))
        scores.append(-1000.0)
        types.append(USER_DEFINED)
    return vocab


def _add_dummy_prefix(path: Path) -> bool:
    """Whether the sentencepiece model prepends a space (normalizer_spec.add_dummy_prefix).

    llama.cpp applies no other part of the normalizer, so a model that normalizes text
    (NFKC, collapsing whitespace) is converted with a warning: such text tokenizes differently.
    """
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:  # pragma: no cover - protobuf missing: llama's default
        return True
    proto: Any = getattr(sentencepiece_model_pb2, "ModelProto")()  # noqa: B009 - generated
    proto.ParseFromString(path.read_bytes())
    spec = proto.normalizer_spec
    if spec.name not in ("identity", "") or spec.remove_extra_whitespaces:
        logger.warning(
            "%s normalizes text (%s%s), which llama.cpp does not do: text it changes will "
            "tokenize differently in the GGUF file",
            path,
            spec.name,
            ", removes extra whitespace" if spec.remove_extra_whitespaces else "",
        )
    return bool(spec.add_dummy_prefix)


def _id_of(text: Any, tokens: list[str]) -> int | None:
    name = _token_text(text)
    if name is None:
        return None
    try:
        return tokens.index(name)
    except ValueError:
        return None


def _first_id(value: Any) -> int | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return int(value) if isinstance(value, int) and value >= 0 else None


def _template_flag(post: Any, bos: str | None, first: bool) -> bool | None:
    """Whether a TemplateProcessing post-processor puts ``bos`` first (or last)."""
    if not isinstance(post, dict) or post.get("type") != "TemplateProcessing" or bos is None:
        return None
    single = post.get("single") or []
    if not single:
        return False
    item = single[0] if first else single[-1]
    return bool(item.get("SpecialToken", {}).get("id") == bos)


def _chat_template(
    directory: Path, tok_config: dict[str, Any]
) -> tuple[str | None, dict[str, str]]:
    value: Any = tok_config.get("chat_template")
    if value is None and (directory / "chat_template.jinja").is_file():
        value = (directory / "chat_template.jinja").read_text(encoding="utf-8")
    if value is None and (directory / "chat_template.json").is_file():
        value = _read_json(directory / "chat_template.json").get("chat_template")
    if value is None or isinstance(value, str):
        return value, {}
    if isinstance(value, list):
        named = {
            str(c["name"]): str(c["template"])
            for c in value
            if isinstance(c, dict) and c.get("name") and isinstance(c.get("template"), str)
        }
        return named.pop("default", None), named
    raise ModelFileError(
        directory / "tokenizer_config.json", "chat_template is not a string or list"
    )


def read_hf_vocab(directory: Path, config: dict[str, Any], vocab_size: int) -> GGUFVocab:
    """The GGUF vocabulary of a Hugging Face checkpoint directory (padded to ``vocab_size``)."""
    tok_json, spm = directory / "tokenizer.json", directory / "tokenizer.model"
    tok_config = _optional_json(directory / "tokenizer_config.json")
    post: Any = None
    if tok_json.is_file():
        raw = _read_json(tok_json)
        model = raw.get("model") or {}
        if spm.is_file() and (model.get("type") != "BPE" or model.get("byte_fallback")):
            vocab = _sentencepiece_vocab(spm)
        else:
            vocab = _bpe_vocab(tok_json, raw)
            post = raw.get("post_processor")
    elif spm.is_file():
        vocab = _sentencepiece_vocab(spm)
    else:
        raise ModelFileError(
            directory,
            "has no tokenizer (tokenizer.json or tokenizer.model); copy the tokenizer files of "
            "the model next to config.json",
        )
    generation = _optional_json(directory / "generation_config.json")
    tokens = vocab.tokens
    for key in ("bos", "eos", "unk", "pad"):
        found = _id_of(tok_config.get(f"{key}_token"), tokens)
        if found is None:
            found = _first_id(config.get(f"{key}_token_id"))
        if found is None:
            found = _first_id(generation.get(f"{key}_token_id"))
        if found is not None:
            setattr(vocab, f"{key}_id", found)
    bos = tokens[vocab.bos_id] if vocab.bos_id is not None else None
    for flag, first in (("add_bos", True), ("add_eos", False)):
        value = tok_config.get(f"{flag}_token")
        if not isinstance(value, bool):
            value = _template_flag(post, bos if first else _name(vocab.eos_id, tokens), first)
        if isinstance(value, bool):
            setattr(vocab, flag, value)
    vocab.chat_template, vocab.named_templates = _chat_template(directory, tok_config)
    if len(tokens) > vocab_size:
        raise ModelFileError(
            directory,
            f"the tokenizer has {len(tokens)} tokens but the model's vocab_size is {vocab_size}; "
            "the tokenizer files do not belong to these weights",
        )
    if len(tokens) < vocab_size:  # embeddings padded past the tokenizer: name the extra rows
        logger.info("padding the vocabulary from %d to %d tokens", len(tokens), vocab_size)
        for i in range(len(tokens), vocab_size):
            tokens.append(f"[PAD{i}]")
            vocab.token_types.append(UNUSED)
            if vocab.scores is not None:
                vocab.scores.append(-1000.0)
    return vocab


def _name(i: int | None, tokens: list[str]) -> str | None:
    return tokens[i] if i is not None and 0 <= i < len(tokens) else None


def read_gguf_vocab(reader: Any) -> GGUFVocab:
    """The vocabulary stored in an open ``gguf.GGUFReader``."""
    tokens = reader_field(reader, "tokenizer.ggml.tokens")
    if not tokens:
        raise ModelFileError(reader.data.filename, "has no tokenizer vocabulary")
    named_keys = reader_field(reader, "tokenizer.chat_templates") or []
    named = {k: reader_field(reader, f"tokenizer.chat_template.{k}") for k in named_keys}
    return GGUFVocab(
        model=str(reader_field(reader, "tokenizer.ggml.model") or "gpt2"),
        pre=reader_field(reader, "tokenizer.ggml.pre"),
        tokens=list(tokens),
        token_types=list(
            reader_field(reader, "tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
        ),
        merges=list(reader_field(reader, "tokenizer.ggml.merges") or []),
        bos_id=reader_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_id=reader_field(reader, "tokenizer.ggml.eos_token_id"),
        unk_id=reader_field(reader, "tokenizer.ggml.unknown_token_id"),
        pad_id=reader_field(reader, "tokenizer.ggml.padding_token_id"),
        add_bos=bool(reader_field(reader, "tokenizer.ggml.add_bos_token")),
        add_eos=bool(reader_field(reader, "tokenizer.ggml.add_eos_token")),
        chat_template=reader_field(reader, "tokenizer.chat_template"),
        named_templates={k: v for k, v in named.items() if isinstance(v, str)} or None,
        scores=reader_field(reader, "tokenizer.ggml.scores"),
        add_space_prefix=reader_field(reader, "tokenizer.ggml.add_space_prefix"),
    )
