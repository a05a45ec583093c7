"""Token-aware chunking: size limits, boundaries, overlap, offsets, determinism."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llamachain.errors import ConfigError
from llamachain.ingest.chunking import Chunk, chunk_document, effective_sizes, split_text
from llamachain.ingest.loaders import LoadedDocument, Section, load_file
from llamachain.testing import FakeEmbeddings

DOCS = Path(__file__).resolve().parents[1] / "data" / "docs"


class RegexTokenizer:
    """A ChunkTokenizer whose tokens are the matches of a regular expression."""

    def __init__(self, pattern: str, max_chunk_tokens: int = 64) -> None:
        self.pattern = re.compile(pattern)
        self._max = max_chunk_tokens
        self.calls = 0

    @property
    def max_chunk_tokens(self) -> int:
        return self._max

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        self.calls += 1
        return [m.span() for m in self.pattern.finditer(text)]


def fake(max_chunk_tokens: int) -> FakeEmbeddings:
    return FakeEmbeddings(max_chunk_tokens=max_chunk_tokens)


# Tokenizers with the quirks real ones have: tokens that carry their leading space
# (SentencePiece), sub-word pieces (WordPiece), characters that produce no token at all.
TOKENIZERS = {
    "fake": fake,
    "leading-space": lambda m: RegexTokenizer(r"\s*(?:\w+|[^\w\s])", m),
    "subword": lambda m: RegexTokenizer(r"\w{1,3}|[^\w\s]", m),
    "skipping": lambda m: RegexTokenizer(r"\w+|[^\w\s~\u200b]", m),
}


def doc_of(*texts: str, headings: list[str] | None = None) -> LoadedDocument:
    heads = headings or [f"H{i}" for i in range(len(texts))]
    return LoadedDocument(
        Path("/x/doc.md"),
        "md",
        "doc",
        [Section(t, h, i + 1) for i, (t, h) in enumerate(zip(texts, heads))],
    )


CJK_ENDS = "\u3002\uff01\uff1f"  # sentence ends that need no space after them


def runs_of(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"\S+", text)]


def check_section(text: str, tok: RegexTokenizer | FakeEmbeddings, size: int, overlap: int) -> None:
    """Every property a section's chunks must have."""
    spans = split_text(text, tok, size, overlap)
    offsets = tok.token_offsets(text)
    assert spans == split_text(text, tok, size, overlap)  # deterministic
    covered = bytearray(len(text))
    for i, (start, end, n) in enumerate(spans):
        piece = text[start:end]
        assert piece and piece == piece.strip(), "no empty chunk, no edge whitespace"
        assert n == len(tok.token_offsets(piece)) <= size, "never over the limit"
        covered[start:end] = b"\x01" * (end - start)
        if i:
            p_start, p_end, _ = spans[i - 1]
            assert start > p_start and end > p_end, "chunks move forward"
            shared = sum(1 for a, b in offsets if a >= start and b <= p_end and b > a)
            assert shared <= overlap, "overlap honoured"
        # A chunk edge inside a run of non-space characters only where that run alone is
        # longer than the limit (a URL, a blob): words are otherwise never cut.
        for edge in (start, end):
            if 0 < edge < len(text) and not (
                text[edge - 1].isspace() or text[edge].isspace() or text[edge - 1] in CJK_ENDS
            ):
                run = next((a, b) for a, b in runs_of(text) if a < edge < b)
                in_run = sum(1 for a, b in offsets if a < run[1] and b > run[0])
                assert in_run > size, f"word {text[run[0] : run[1]]!r} cut at {edge}"
    for i, c in enumerate(text):
        assert c.isspace() or covered[i], f"character {i} ({c!r}) in no chunk"


WORDS = st.sampled_from(
    [
        "alpha", "beta", "gamma", "delta", "x", "I", "na\u00efve", "42", "3.14", "e.g.",
        "U.S.A.", "(aside)", '"quoted."', "http://ex.com/a/b?c=d&e=f#g",
        "averyveryverylongwordwithoutanyspacesinside", "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q",
        "\u6f22\u5b57", "~", "x~y", "\u200b",
    ]
)  # fmt: skip
SEPARATORS = st.sampled_from(
    [" ", " ", " ", " ", "  ", "\t", "\n", "\n\n", "\n \n\n", ". ", "! ", "? ", ", ",
     ".\n", ".\n\n", " - ", "\u3002", ""]
)  # fmt: skip
TEXTS = st.one_of(
    st.lists(st.tuples(WORDS, SEPARATORS), max_size=150).map(
        lambda xs: "".join(w + s for w, s in xs)
    ),
    st.text(max_size=300),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=TEXTS,
    kind=st.sampled_from(sorted(TOKENIZERS)),
    max_tokens=st.integers(1, 40),
    chunk_tokens=st.one_of(st.none(), st.integers(1, 60)),
    overlap=st.integers(0, 30),
)
def test_chunk_properties(
    text: str, kind: str, max_tokens: int, chunk_tokens: int | None, overlap: int
) -> None:
    tok = TOKENIZERS[kind](max_tokens)
    size, ov = effective_sizes(tok, chunk_tokens, overlap)
    assert size == min(chunk_tokens or max_tokens, max_tokens) and 0 <= ov < max(size / 2, 1)
    check_section(text, tok, size, ov)


@settings(max_examples=100, deadline=None)
@given(
    texts=st.lists(TEXTS, max_size=5),
    max_tokens=st.integers(1, 30),
    overlap=st.integers(0, 10),
)
def test_document_chunks_follow_sections(texts: list[str], max_tokens: int, overlap: int) -> None:
    tok = fake(max_tokens)
    doc = doc_of(*texts)
    chunks = chunk_document(doc, tok, overlap_tokens=overlap)
    assert chunks == chunk_document(doc, tok, overlap_tokens=overlap)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    size, ov = effective_sizes(tok, None, overlap)
    expected = [
        Chunk(s.text[a:b], 0, s.heading, s.page, n, a)
        for s in doc.sections
        for a, b, n in split_text(s.text, tok, size, ov)
    ]
    assert [(c.text, c.heading, c.page, c.n_tokens, c.start) for c in chunks] == [
        (c.text, c.heading, c.page, c.n_tokens, c.start) for c in expected
    ]


def words(n: int, start: int = 0) -> str:
    return " ".join(f"w{i}" for i in range(start, start + n))


def test_paragraphs_are_packed_whole() -> None:
    paragraphs = [words(20, 0), words(20, 100), words(20, 200)]
    doc = doc_of("\n\n".join(paragraphs))
    chunks = chunk_document(doc, fake(50), overlap_tokens=10)
    # Two paragraphs fit in 50 tokens, three do not; a paragraph cut needs no overlap.
    assert [c.text for c in chunks] == ["\n\n".join(paragraphs[:2]), paragraphs[2]]
    assert [c.n_tokens for c in chunks] == [40, 20]
    assert chunks[1].start == doc.sections[0].text.index(paragraphs[2])


def test_sentences_beat_words_and_overlap_starts_at_a_sentence() -> None:
    sentences = [f"Sentence {i} " + words(7, 10 * i) + "." for i in range(10)]  # 10 tokens each
    text = " ".join(sentences)
    chunks = chunk_document(doc_of(text), fake(35), overlap_tokens=12)
    assert len(chunks) > 3
    for c in chunks:
        assert c.text.startswith("Sentence ") and c.text.endswith(".")
        assert c.n_tokens <= 35
    # Each chunk after the first starts with the last sentence of the one before it.
    for a, b in zip(chunks, chunks[1:]):
        last = a.text[a.text.rindex("Sentence ") :]
        assert b.text.startswith(last)
    assert chunks[-1].text.endswith(sentences[-1])


def test_line_breaks_beat_spaces() -> None:
    lines = [words(6, 10 * i) for i in range(8)]  # 6 tokens a line
    chunks = chunk_document(doc_of("\n".join(lines)), fake(20), overlap_tokens=0)
    assert [c.text for c in chunks] == [
        "\n".join(lines[0:3]),
        "\n".join(lines[3:6]),
        "\n".join(lines[6:8]),
    ]


def test_long_word_is_cut_only_where_it_must_be() -> None:
    blob = "/".join(f"p{i}" for i in range(30))  # one "word" of 59 tokens
    text = f"see {blob} for details"
    chunks = chunk_document(doc_of(text), fake(16), overlap_tokens=4)
    assert chunks[0].text == "see"  # not "see p0/p1/...": the blob starts a chunk
    # The blob is cut between tokens into full chunks, without overlap (no word to start at).
    assert "".join(c.text for c in chunks[1:]) == f"{blob} for details"
    assert [c.n_tokens for c in chunks[1:-1]] == [16] * (len(chunks) - 2)
    assert chunks[-1].text.endswith("p29 for details")


def test_requested_size_is_clamped_to_the_embedder_limit() -> None:
    tok = fake(12)
    assert effective_sizes(tok, 1000, 500) == (12, 5)
    assert effective_sizes(tok, 7, 3) == (7, 3)
    assert effective_sizes(tok, 7, 100) == (7, 3)
    assert effective_sizes(tok, None, -4) == (12, 0)
    assert effective_sizes(tok, 1, 32) == (1, 0)
    chunks = chunk_document(doc_of(words(100)), tok, chunk_tokens=1000)
    assert max(c.n_tokens for c in chunks) == 12


def test_bad_sizes_and_tokenizers() -> None:
    with pytest.raises(ConfigError, match="chunk_tokens is 0"):
        chunk_document(doc_of("text"), fake(10), chunk_tokens=0)
    with pytest.raises(ConfigError, match="max_chunk_tokens is 0"):
        chunk_document(doc_of("text"), fake(0))
    with pytest.raises(ConfigError, match="token_offsets"):
        chunk_document(doc_of("text"), object())  # type: ignore[arg-type]


def test_each_section_is_tokenized_once() -> None:
    tok = RegexTokenizer(r"\w+|[^\w\s]", 16)
    sections = [words(50, i * 100) + ". " + words(30) for i in range(4)]
    chunks = chunk_document(doc_of(*sections), tok, overlap_tokens=4)
    assert len(chunks) > 8 and tok.calls == 4


def test_empty_and_blank_sections() -> None:
    assert chunk_document(LoadedDocument(Path("/x"), "txt", "x", []), fake(8)) == []
    chunks = chunk_document(doc_of("  \n\n\t", "one two", ""), fake(8))
    assert [(c.text, c.heading, c.page, c.start, c.index) for c in chunks] == [
        ("one two", "H1", 2, 0, 0)
    ]


def test_cjk_sentences() -> None:
    sentence = "\u4eca\u65e5\u306f\u6674\u308c\u3067\u3059\u3002"  # 8 characters
    text = sentence * 12
    tok = RegexTokenizer(r"\S", 20)  # one token per character
    chunks = chunk_document(doc_of(text), tok, overlap_tokens=0)
    assert all(c.text.endswith("\u3002") and c.n_tokens == 16 for c in chunks)
    assert "".join(c.text for c in chunks) == text


def test_fixture_documents() -> None:
    tok = fake(24)
    for path in sorted(DOCS.iterdir()):
        doc = load_file(path)
        chunks = chunk_document(doc, tok, overlap_tokens=6)
        assert chunks, path
        for s in doc.sections:
            check_section(s.text, tok, 24, 6)
        for c in chunks:
            section = next(
                s for s in doc.sections if s.text[c.start : c.start + len(c.text)] == c.text
            )
            assert (c.heading, c.page) == (section.heading, section.page)
