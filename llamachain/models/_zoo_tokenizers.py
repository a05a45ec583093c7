"""Small real tokenizers for the tiny zoo models, learned from a built-in English text.

Four kinds, one per tokenizer family llama.cpp implements:

* ``bpe``  -- byte-level BPE (``tokenizer.ggml.model = "gpt2"``): the 256 byte symbols in
  GPT-2's printable-character mapping, merges learned from the text, special tokens.
* ``spm``  -- SentencePiece BPE (``"llama"``): ``<unk> <s> </s>``, the 256 ``<0xNN>`` byte
  fallback tokens, then ``▁``-prefixed pieces scored by merge rank.
* ``ugm``  -- SentencePiece unigram (``"t5"``): ``<pad> </s> <unk>``, every printable ASCII
  character and learned pieces with log-probability-like scores (no byte fallback, as in T5).
* ``rwkv`` -- the RWKV "world" greedy trie (``"rwkv"``): every byte plus learned byte strings,
  written escaped the way llama.cpp reads them.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

# Plain English the merges are learned from (written for this module).
CORPUS = """\
The quick brown fox jumps over the lazy dog. The capital of France is Paris, and the capital
of Italy is Rome. A small model can still say hello to the world. Hello, world! Once upon a
time there was a little cat that lived in a house by the sea. The cat liked to sit in the sun
and watch the birds. What is the answer to the question? The answer is that we do not know
yet, but we will find out. Please write a short story about a dog and a cat. This is a test
of the tokenizer: it should split words into pieces and join them again without losing any
letters, numbers like 1, 2, 3 and 42, or punctuation such as commas, colons and question marks.
"""

NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6  # gguf.TokenType values
SPACE = "\u2581"  # SentencePiece's visible space


@dataclass(frozen=True)
class Vocab:
    """Everything a GGUF file needs to carry a tokenizer."""

    model: str  # tokenizer.ggml.model
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    pre: str | None = None
    special: dict[str, int] = field(default_factory=dict)  # bos / eos / unk / pad ids
    add_bos: bool | None = None
    add_eos: bool | None = None

    @property
    def size(self) -> int:
        return len(self.tokens)

    def write(self, writer: Any) -> None:
        writer.add_tokenizer_model(self.model)
        if self.pre is not None:
            writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.types)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        if self.merges is not None:
            writer.add_token_merges(self.merges)
        adders = {
            "bos": writer.add_bos_token_id,
            "eos": writer.add_eos_token_id,
            "unk": writer.add_unk_token_id,
            "pad": writer.add_pad_token_id,
        }
        for kind, token_id in self.special.items():
            adders[kind](token_id)
        if self.add_bos is not None:
            writer.add_add_bos_token(self.add_bos)
        if self.add_eos is not None:
            writer.add_add_eos_token(self.add_eos)


@lru_cache(maxsize=1)
def byte_symbols() -> tuple[str, ...]:
    """GPT-2's reversible byte -> printable character map, indexed by byte value."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table: dict[int, str] = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return tuple(table[b] for b in range(256))


_WORDS = re.compile(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+")


def learn_merges(words: Counter[tuple[str, ...]], n_merges: int) -> list[tuple[str, str]]:
    """Plain BPE: repeatedly join the most frequent adjacent pair (ties: the smallest pair)."""
    merges: list[tuple[str, str]] = []
    current = dict(words)
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in current.items():
            for a, b in itertools.pairwise(word):
                pairs[(a, b)] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < 2:
            break
        merges.append(best)
        joined: dict[tuple[str, ...], int] = {}
        for word, count in current.items():
            out: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            key = tuple(out)
            joined[key] = joined.get(key, 0) + count
        current = joined
    return merges


def _pretokens(text: str) -> list[str]:
    return _WORDS.findall(text)


def bpe_vocab(
    n_merges: int, specials: tuple[str, ...], bos: str, eos: str, pre: str = "gpt-2"
) -> Vocab:
    """Byte-level BPE; ``specials`` come first, ``bos`` and ``eos`` name two of them."""
    sym = byte_symbols()
    words: Counter[tuple[str, ...]] = Counter(
        tuple(sym[b] for b in w.encode("utf-8")) for w in _pretokens(CORPUS)
    )
    merges = learn_merges(words, n_merges)
    tokens = list(dict.fromkeys([*specials, *sym, *(a + b for a, b in merges)]))
    types = [CONTROL] * len(specials) + [NORMAL] * (len(tokens) - len(specials))
    return Vocab(
        model="gpt2",
        tokens=tokens,
        types=types,
        merges=[f"{a} {b}" for a, b in merges],
        pre=pre,
        special={"bos": specials.index(bos), "eos": specials.index(eos)},
        add_bos=False,
    )


def _space_words() -> Counter[tuple[str, ...]]:
    words: Counter[tuple[str, ...]] = Counter()
    for w in _pretokens(" " + " ".join(CORPUS.split())):
        words[tuple(w.replace(" ", SPACE))] += 1
    return words


def spm_vocab(n_merges: int, specials: tuple[str, ...], roles: dict[str, str]) -> Vocab:
    """SentencePiece BPE with byte fallback; ``roles`` maps unk / bos / eos / pad to specials.

    LLaMA's specials are ``<unk> <s> </s>``; Gemma's ``<pad> <eos> <bos> <unk>`` and its turn
    markers.  The unk token is typed UNKNOWN, every other special CONTROL.
    """
    words = _space_words()
    merges = learn_merges(words, n_merges)
    chars = sorted({c for w in words for c in w})
    learned = [a + b for a, b in merges]
    pieces = list(dict.fromkeys(p for p in [*chars, *learned] if p not in specials))
    n_chars = sum(1 for p in pieces if len(p) == 1)
    tokens = [*specials, *(f"<0x{b:02X}>" for b in range(256)), *pieces]
    types = [UNKNOWN if s == roles.get("unk") else CONTROL for s in specials]
    types += [BYTE] * 256 + [NORMAL] * len(pieces)
    # Single characters score lowest; an earlier (more frequent) merge scores higher.
    scores = [0.0] * (len(specials) + 256) + [-1000.0] * n_chars
    scores += [-float(i) for i in range(len(pieces) - n_chars)]
    return Vocab(
        model="llama",
        tokens=tokens,
        types=types,
        scores=scores,
        special={role: specials.index(text) for role, text in roles.items()},
        add_bos=True,
    )


def ugm_vocab(n_merges: int) -> Vocab:
    """SentencePiece unigram as T5 has it: pad 0, eos 1, unk 2; EOS appended, no BOS."""
    words = _space_words()
    merges = learn_merges(words, n_merges)
    chars = [SPACE, *(chr(c) for c in range(0x21, 0x7F))]
    learned = [a + b for a, b in merges]
    pieces = list(dict.fromkeys([*chars, *learned]))
    tokens = ["<pad>", "</s>", "<unk>", *pieces]
    types = [CONTROL, CONTROL, UNKNOWN] + [NORMAL] * len(pieces)
    # Viterbi maximises the summed score: any learned piece beats spelling it out.
    scores = [0.0, 0.0, 0.0] + [-10.0] * len(chars)
    scores += [-2.0 - 0.01 * i for i in range(len(pieces) - len(chars))]
    return Vocab(
        model="t5",
        tokens=tokens,
        types=types,
        scores=scores,
        special={"pad": 0, "eos": 1, "unk": 2},
        add_bos=False,
        add_eos=True,
    )


def _rwkv_escape(data: bytes) -> str:
    out = []
    for b in data:
        if b == 0x5C:
            out.append("\\\\")
        elif b in (0x09, 0x0A, 0x0D):
            out.append({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}[b])
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def rwkv_vocab(n_merges: int) -> Vocab:
    """RWKV world: ``<s>`` (id 0: bos = eos), every byte, then learned byte strings."""
    sym = byte_symbols()
    back = {s: b for b, s in enumerate(sym)}
    words: Counter[tuple[str, ...]] = Counter(
        tuple(sym[b] for b in w.encode("utf-8")) for w in _pretokens(CORPUS)
    )
    merges = learn_merges(words, n_merges)
    strings = [bytes([b]) for b in range(256)]
    strings += [bytes(back[c] for c in a + b) for a, b in merges]
    strings = list(dict.fromkeys(strings))
    tokens = ["<s>", *(_rwkv_escape(s) for s in strings)]
    types = [CONTROL] + [NORMAL] * len(strings)
    return Vocab(
        model="rwkv",
        tokens=tokens,
        types=types,
        special={"bos": 0, "eos": 0},
        add_bos=False,
    )
