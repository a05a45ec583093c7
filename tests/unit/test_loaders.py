"""Document loaders: every format, the ways a file can be unreadable, and walking folders."""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from llamachain.errors import DocumentLoadError
from llamachain.ingest import loaders
from llamachain.ingest.loaders import (
    SUPPORTED_TYPES,
    LoadedDocument,
    Section,
    detect_type,
    iter_files,
    load_file,
)

DOCS = Path(__file__).resolve().parents[1] / "data" / "docs"


# ---- helpers that write real files ------------------------------------------------------------


def _pdf_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def write_pdf(path: Path, pages: list[list[str]]) -> Path:
    """A minimal valid PDF: one Helvetica text line per string, one page per list."""
    n = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, lines in enumerate(pages):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        ops = " ".join(f"({_pdf_escape(line)}) Tj T*" for line in lines)
        stream = f"BT /F1 12 Tf 72 720 Td 14 TL {ops} ET".encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    path.write_bytes(out)
    return path


def write_docx(path: Path) -> Path:
    import docx

    d = docx.Document()
    d.add_paragraph("Harbour Report", style="Title")
    d.add_paragraph("Prepared for the harbour board.")
    d.add_heading("Moorings", level=1)
    d.add_paragraph("Forty moorings are let for the season.")
    table = d.add_table(rows=3, cols=3)
    for r, row in enumerate([("Berth", "Length", "Fee"), ("A1", "8 m", "400"), ("A2", "", "")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    table.cell(2, 1).merge(table.cell(2, 2)).text = "reserved for the lifeboat"
    d.add_heading("Winter storage", level=2)
    d.add_paragraph("Boats are lifted out in November.")
    d.add_heading("Fees", level=1)
    d.add_paragraph("Fees rise by three percent.")
    d.save(str(path))
    return path


def overstrike(text: str, how: str = "bold") -> str:
    """Terminal bold (X\\bX) or underline (_\\bX), as `man` writes to a pipe."""
    if how == "bold":
        return "".join(f"{c}\b{c}" if not c.isspace() else c for c in text)
    return "".join(f"_\b{c}" if not c.isspace() else c for c in text)


RENDERED_MAN = (
    "FROB(1)                    User Commands                    FROB(1)\n\n"
    f"{overstrike('NAME')}\n"
    "       frob - adjust the frobs of a widget\n\n"
    f"{overstrike('SYNOPSIS')}\n"
    f"       {overstrike('frob')} [{overstrike('-v')}] {overstrike('widget', 'u')}...\n\n"
    f"{overstrike('DESCRIPTION')}\n"
    "       frob tunes every frob of each widget, safely and in place, and then\n"
    "       reports what it did.\n\n"
    "   Exit status\n"
    "       Zero when every frob was adjusted.\n\n"
    f"{overstrike('SEE ALSO')}\n"
    "       widget(5)\n\n"
    "frobtools 2.1                    March 2024                    FROB(1)\n"
)


def texts(doc: LoadedDocument) -> str:
    return "\n".join(s.text for s in doc.sections)


# ---- formats -------------------------------------------------------------------------------


def test_markdown_headings_fences_and_front_matter() -> None:
    doc = load_file(DOCS / "guide.md")
    assert doc.file_type == "md"
    assert doc.title == "Gardening Guide"  # from the front matter
    assert doc.path == (DOCS / "guide.md").resolve() and doc.path.is_absolute()
    headings = [s.heading for s in doc.sections]
    assert headings == [
        "",
        "Soil",
        "Soil > Testing the pH",
        "Watering",
        "Watering > Drip lines",
        "Watering > Drip lines > Timers",
    ]
    body = texts(doc)
    assert "author:" not in body and "---" not in body.split("\n")[0]  # front matter skipped
    assert "# this line is a shell comment, not a heading" in doc.sections[1].text
    assert "# still inside a fence" in doc.sections[2].text
    assert "Drip lines" not in body and "=====" not in body  # headings are not repeated
    assert all(s.page is None for s in doc.sections)


def test_markdown_title_falls_back_to_first_top_heading(tmp_path: Path) -> None:
    p = tmp_path / "readme.markdown"
    p.write_text("intro\n\n## Minor\n\ntext\n\n# Major\n\nmore\n\n# Second\n\nend\n")
    doc = load_file(p)
    assert doc.file_type == "md" and doc.title == "Major"
    assert [s.heading for s in doc.sections] == ["", "Minor", "Major", "Second"]


def test_markdown_setext_needs_a_single_line_paragraph(tmp_path: Path) -> None:
    p = tmp_path / "x.md"
    p.write_text("first line\nsecond line\n---\n\n- item\n---\n\nReal\n====\n\nbody\n")
    doc = load_file(p)
    assert [s.heading for s in doc.sections] == ["", "Real"]
    assert "second line" in doc.sections[0].text


def test_rst_levels_follow_adornment_order() -> None:
    doc = load_file(DOCS / "manual.rst")
    assert doc.file_type == "rst" and doc.title == "Telescope Care Manual"
    assert [s.heading for s in doc.sections] == [
        "Telescope Care Manual",
        "Telescope Care Manual > Cleaning the optics",
        "Telescope Care Manual > Cleaning the optics > Collimation",
        "Telescope Care Manual > Storage",
    ]
    # An underline-looking line inside an indented literal block is text, not a title.
    assert "=================================" in doc.sections[1].text
    assert "_manual-top" not in texts(doc)


def test_rst_heading_markup_is_cleaned(tmp_path: Path) -> None:
    p = tmp_path / "api.rst"
    p.write_text("Using ``async`` with :func:`run <pkg.run>`\n======\n\nBody text.\n")
    assert load_file(p).sections[0].heading == "Using async with run"


def test_html_drops_chrome_and_keeps_structure() -> None:
    doc = load_file(DOCS / "page.html")
    assert doc.file_type == "html" and doc.title == "Bread Baking & You"
    assert [s.heading for s in doc.sections] == ["Sourdough basics", "Sourdough basics > Shaping"]
    body = texts(doc)
    for hidden in ("never shown", "also hidden", "Recipes", "Cookie settings", "font-family"):
        assert hidden not in body
    assert "wild yeast & bacteria." in body  # entities decoded
    assert "don't knock it back" in body and "\u2014" in body
    first = doc.sections[0].text
    assert first.split("\n\n") == [
        "A starter is flour and water fermented by wild yeast & bacteria.",
        "Feed it daily: equal weights of flour and water.",  # inline whitespace collapsed
    ]
    assert "step 1: pre-shape\n    step 2: bench rest" in body  # <pre> kept as is
    assert "Banneton\nBench scraper" in body
    assert "Flour | Hydration\nWhite | 70%" in body


def test_html_declared_charset_and_missing_title(tmp_path: Path) -> None:
    p = tmp_path / "old.htm"
    p.write_bytes(
        b'<html><head><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-15">'
        b"</head><body><h1>Caf\xe9</h1><p>Price: 5 \xa4</p></body></html>"
    )
    doc = load_file(p)
    assert doc.title == "Caf\u00e9"  # first top heading
    assert doc.sections[0].text == "Price: 5 \u20ac"  # 0xA4 is the euro sign in latin-9


def test_plain_text_normalises_whitespace_moderately() -> None:
    doc = load_file(DOCS / "notes.txt")
    assert doc.file_type == "txt" and doc.title == "notes"
    assert len(doc.sections) == 1 and doc.sections[0].heading == ""
    text = doc.sections[0].text
    assert "\n\n\n" not in text and "3 March.\n\nThe committee" in text
    assert "Volunteers" in text and text == text.strip()


def test_pdf_pages_title_and_bookmarks(tmp_path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    plain = write_pdf(
        tmp_path / "plain.pdf",
        [["Chapter one (the start)", "Alpha beta gamma."], [], ["Chapter two", "Delta."]],
    )
    doc = load_file(plain)
    assert doc.file_type == "pdf" and doc.title == "plain"
    assert [(s.page, s.heading) for s in doc.sections] == [(1, ""), (3, "")]  # page 2 is blank
    assert doc.sections[0].text == "Chapter one (the start)\nAlpha beta gamma."

    w = PdfWriter(clone_from=PdfReader(plain))
    w.add_metadata({"/Title": "Field Notes"})
    w.add_outline_item(title="Part I", page_number=0)
    part2 = w.add_outline_item(title="Part II", page_number=2)
    w.add_outline_item(title="Deltas", page_number=2, parent=part2)
    w.write(tmp_path / "marked.pdf")
    doc = load_file(tmp_path / "marked.pdf")
    assert doc.title == "Field Notes"
    assert [(s.page, s.heading) for s in doc.sections] == [(1, "Part I"), (3, "Part II > Deltas")]


def test_pdf_failures_are_explained(tmp_path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    with pytest.raises(DocumentLoadError, match="corrupt or unreadable PDF"):
        load_file(tmp_path / "broken.pdf")

    blank = PdfWriter()
    blank.add_blank_page(612, 792)
    blank.write(tmp_path / "scan.pdf")
    with pytest.raises(DocumentLoadError, match=r"no extractable text \(scanned PDF\?\)"):
        load_file(tmp_path / "scan.pdf")

    source = write_pdf(tmp_path / "source.pdf", [["Secret plans."]])
    locked = PdfWriter(clone_from=PdfReader(source))
    locked.encrypt("hunter2", algorithm="RC4-128")
    locked.write(tmp_path / "locked.pdf")
    with pytest.raises(DocumentLoadError, match="encrypted PDF that needs a password") as err:
        load_file(tmp_path / "locked.pdf")
    assert err.value.path == str(tmp_path / "locked.pdf") and "\n" not in err.value.problem

    # Encrypted with an owner password only: anyone may open it, so we read it.
    restricted = PdfWriter(clone_from=PdfReader(source))
    restricted.encrypt("", owner_password="owner", algorithm="RC4-128")
    restricted.write(tmp_path / "restricted.pdf")
    assert texts(load_file(tmp_path / "restricted.pdf")) == "Secret plans."


def test_docx_headings_tables_and_title(tmp_path: Path) -> None:
    doc = load_file(write_docx(tmp_path / "report.docx"))
    assert doc.file_type == "docx" and doc.title == "Harbour Report"
    assert [s.heading for s in doc.sections] == [
        "",
        "Moorings",
        "Moorings > Winter storage",
        "Fees",
    ]
    assert doc.sections[0].text == "Prepared for the harbour board."
    moorings = doc.sections[1].text
    assert "Berth | Length | Fee" in moorings and "A1 | 8 m | 400" in moorings
    assert "A2 | reserved for the lifeboat\n" in moorings + "\n"  # merged cell once
    assert "Harbour Report" not in texts(doc)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"PK\x03\x04 not a real zip", "corrupt or unreadable Word document"),
        (b"", "corrupt or unreadable Word document"),
    ],
)
def test_corrupt_docx(tmp_path: Path, payload: bytes, problem: str) -> None:
    (tmp_path / "bad.docx").write_bytes(payload)
    with pytest.raises(DocumentLoadError, match=problem):
        load_file(tmp_path / "bad.docx")


def test_docx_zip_without_a_document(tmp_path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(tmp_path / "fake.docx", "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(DocumentLoadError, match="corrupt or unreadable Word document"):
        load_file(tmp_path / "fake.docx")


def _check_frobnicate(doc: LoadedDocument) -> None:
    assert doc.file_type == "man"
    assert doc.title == "frobnicate - adjust the frobs of a widget"
    assert [s.heading for s in doc.sections] == [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "OPTIONS > Environment",
        "SEE ALSO",
    ]
    body = texts(doc)
    assert "\\f" not in body and "\\-" not in body and "\\(" not in body
    assert not any(line.startswith(".") for line in body.split("\n"))
    assert "Manual page for frobnicate" not in body  # roff comment
    assert "frobnicate [-v] [--level N] widget..." in body
    assert "on the command line \u2014 safely" in body
    assert "read from /etc/widgets.d." in body
    assert "-v, --verbose\nReport each frob" in body
    assert "widget(5), defrob(1)" in body


def test_man_page_roff_source() -> None:
    _check_frobnicate(load_file(DOCS / "frobnicate.1"))


def test_man_page_gzipped(tmp_path: Path) -> None:
    p = tmp_path / "frobnicate.1.gz"
    p.write_bytes(gzip.compress((DOCS / "frobnicate.1").read_bytes()))
    assert detect_type(p) == "man"
    doc = load_file(p)
    _check_frobnicate(doc)
    assert doc.title and load_file(p).sections == doc.sections

    (tmp_path / "torn.1.gz").write_bytes(p.read_bytes()[:40])
    with pytest.raises(DocumentLoadError, match="corrupt gzip"):
        load_file(tmp_path / "torn.1.gz")


def test_man_page_rendered_with_overstrike(tmp_path: Path) -> None:
    p = tmp_path / "frob.1"
    p.write_text(RENDERED_MAN)
    assert detect_type(p) == "man"
    doc = load_file(p)
    assert doc.title == "frob - adjust the frobs of a widget"
    assert [s.heading for s in doc.sections] == [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "DESCRIPTION > Exit status",
        "SEE ALSO",
    ]
    body = texts(doc)
    assert "\b" not in body and "FROB(1)" not in body  # overstrike, header and footer gone
    assert doc.sections[1].text == "frob [-v] widget..."
    assert doc.sections[2].text.startswith("frob tunes every frob")  # dedented


def test_overstrike_in_a_text_file_is_cleaned(tmp_path: Path) -> None:
    p = tmp_path / "ls.txt"
    p.write_text(RENDERED_MAN)
    doc = load_file(p)
    assert doc.file_type == "txt" and "\b" not in texts(doc) and "SYNOPSIS" in texts(doc)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("a.TXT", b"x", "txt"),
        ("a.text", b"x", "txt"),
        ("a.md", b"x", "md"),
        ("a.Markdown", b"x", "md"),
        ("a.rst", b"x", "rst"),
        ("a.HTM", b"x", "html"),
        ("a.html", b"x", "html"),
        ("a.pdf", b"x", "pdf"),
        ("a.docx", b"x", "docx"),
        ("a.doc", b"x", None),
        ("a.png", b"x", None),
        ("Makefile", b"all:\n", None),
        ("tool.man", b"anything", "man"),
        ("ls.1", b'.TH LS 1 "2022"\n.SH NAME\nls\n', "man"),
        ("openssl.1ssl", b'.\\" comment\n.TH OPENSSL 1SSL\n', "man"),
        ("mdoc.8", b".Dd March 1, 2024\n.Dt MDOC 8\n.Sh NAME\n", "man"),
        ("app.log.1", b"2024-01-01 12:00 started\n", None),  # a rotated log
        ("core.1", b"\x7fELF\x00\x00\x01", None),
    ],
)
def test_detect_type(tmp_path: Path, name: str, content: bytes, expected: str | None) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    assert detect_type(p) == expected
    assert expected is None or expected in SUPPORTED_TYPES


def test_rendered_man_sniffing(tmp_path: Path) -> None:
    p = tmp_path / "frob.8"
    p.write_text(RENDERED_MAN)
    assert detect_type(p) == "man"
    gz = tmp_path / "frob.8.gz"
    gz.write_bytes(gzip.compress(RENDERED_MAN.encode()))
    assert detect_type(gz) == "man"
    assert load_file(gz).sections == load_file(p).sections


# ---- encodings and unreadable files ------------------------------------------------------------

SAMPLE = (
    "Caf\u00e9 cr\u00e8me \u2014 na\u00efve r\u00e9sum\u00e9.\n\nSecond paragraph \u00fc\u00df.\n"
)


@pytest.mark.parametrize(
    "encode",
    [
        lambda s: s.encode("utf-8"),
        lambda s: b"\xef\xbb\xbf" + s.encode("utf-8"),
        lambda s: s.encode("utf-16"),  # with a byte-order mark
        lambda s: b"\xfe\xff" + s.encode("utf-16-be"),
        lambda s: s.encode("utf-16-le"),  # no byte-order mark: recognised by its NULs
        lambda s: s.replace("\n", "\r\n").encode("utf-8"),
    ],
    ids=["utf8", "utf8-bom", "utf16", "utf16-be", "utf16-le-nobom", "crlf"],
)
def test_text_encodings(tmp_path: Path, encode: Callable[[str], bytes]) -> None:
    p = tmp_path / "sample.txt"
    p.write_bytes(encode(SAMPLE))
    assert load_file(p).sections == [Section(SAMPLE.strip())]


def test_legacy_single_byte_text(tmp_path: Path) -> None:
    p = tmp_path / "old.txt"
    p.write_bytes("Caf\u00e9 \u201cquoted\u201d".encode("cp1252"))
    assert load_file(p).sections[0].text == "Caf\u00e9 \u201cquoted\u201d"


def test_binary_file(tmp_path: Path) -> None:
    p = tmp_path / "binary.txt"
    p.write_bytes(b"\x00\x01\x02garbage\x00" * 50)
    with pytest.raises(DocumentLoadError, match="binary file"):
        load_file(p)
    q = tmp_path / "controls.md"
    q.write_bytes(bytes(range(1, 32)) * 40 + b"\xff\xfe\xfd")
    with pytest.raises(DocumentLoadError, match="binary file"):
        load_file(q)


def test_undecodable_text(tmp_path: Path) -> None:
    p = tmp_path / "odd.txt"
    p.write_bytes(b"\xff\xfe" + "ok".encode("utf-16-le") + b"\x00\xd8")  # lone surrogate
    with pytest.raises(DocumentLoadError, match="cannot decode as UTF-16"):
        load_file(p)


@pytest.mark.parametrize("content", [b"", b"   \n\n\t  \r\n", b"\xef\xbb\xbf"])
def test_empty_files_have_no_sections(tmp_path: Path, content: bytes) -> None:
    for name in ("empty.txt", "empty.md", "empty.rst", "empty.html"):
        p = tmp_path / name
        p.write_bytes(content)
        doc = load_file(p)
        assert doc.sections == [] and doc.title == "empty"


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file"
)
def test_permission_denied(tmp_path: Path) -> None:
    p = tmp_path / "secret.md"
    p.write_text("# Secret\n")
    p.chmod(0)
    try:
        with pytest.raises(DocumentLoadError, match="permission denied"):
            load_file(p)
    finally:
        p.chmod(0o644)


def test_unsupported_missing_directory_and_broken_link(tmp_path: Path) -> None:
    (tmp_path / "photo.jpeg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(DocumentLoadError, match=r"unsupported file type '\.jpeg'; supported"):
        load_file(tmp_path / "photo.jpeg")
    with pytest.raises(DocumentLoadError, match="no such file"):
        load_file(tmp_path / "gone.md")
    (tmp_path / "folder.md").mkdir()
    with pytest.raises(DocumentLoadError, match="is a directory"):
        load_file(tmp_path / "folder.md")
    (tmp_path / "dangling.md").symlink_to(tmp_path / "nowhere.md")
    with pytest.raises(DocumentLoadError, match="broken symbolic link"):
        load_file(tmp_path / "dangling.md")


def test_oversized_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loaders, "MAX_FILE_BYTES", 1024)
    p = tmp_path / "big.txt"
    p.write_text("word " * 1000)
    with pytest.raises(DocumentLoadError, match="limit; split it"):
        load_file(p)


def test_every_fixture_loads_deterministically() -> None:
    for p in sorted(DOCS.iterdir()):
        first, second = load_file(p), load_file(p)
        assert first == second and first.sections
        assert all(s.text == s.text.strip() and s.text for s in first.sections)


# ---- walking folders ----------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "kb"
    for rel in (
        "a.md",
        "b.txt",
        "image.png",
        "notes.log",
        "docs/guide.rst",
        "docs/api/ref.html",
        "docs/api/old.htm",
        "docs/manual.pdf",
        "build/out.md",
        "z/deep/er/file.md",
        ".hidden.md",
        ".git/HEAD.md",
        "__pycache__/x.md",
        "node_modules/pkg/readme.md",
    ):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("text\n")
    return root


def rels(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def test_iter_files_defaults(tree: Path) -> None:
    found = list(iter_files([tree]))
    assert all(p.is_absolute() for p in found)
    assert rels(found, tree) == [
        "a.md",
        "b.txt",
        "build/out.md",
        "docs/api/old.htm",
        "docs/api/ref.html",
        "docs/guide.rst",
        "docs/manual.pdf",
        "z/deep/er/file.md",
    ]
    assert list(iter_files([tree])) == found  # deterministic


ALL = "a.md b.txt build/out.md docs/api/old.htm docs/api/ref.html docs/guide.rst docs/manual.pdf "
ALL += "z/deep/er/file.md"


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        ("**/*.md", "", "a.md build/out.md z/deep/er/file.md"),
        ("*.md", "", "a.md build/out.md z/deep/er/file.md"),
        ("*.pdf", "", "docs/manual.pdf"),
        ("docs/**", "", "docs/api/old.htm docs/api/ref.html docs/guide.rst docs/manual.pdf"),
        ("./docs/*.rst", "", "docs/guide.rst"),
        ("docs/api", "", "docs/api/old.htm docs/api/ref.html"),
        ("**/api/*.htm?", "", "docs/api/ref.html"),
        ("docs/api/[o]*", "", "docs/api/old.htm"),
        ("", "build docs/**", "a.md b.txt z/deep/er/file.md"),
        ("", "**/*.html *.htm z/", "a.md b.txt build/out.md docs/guide.rst docs/manual.pdf"),
        ("**/*.md", "z/deep/**", "a.md build/out.md"),
        ("*.md b.txt", "/build", "a.md b.txt z/deep/er/file.md"),
        ("**/*.md", "/deep ./er", "a.md build/out.md z/deep/er/file.md"),  # anchored: no match
        ("**/*.md", "deep", "a.md build/out.md"),  # a folder name anywhere
        ("*.log", "", "notes.log"),  # names a kind of file: yielded although unsupported
        ("**", "", ALL),
        ("*", "", ALL),  # wildcards alone do not ask for unsupported files
    ],
)
def test_iter_files_globs(tree: Path, include: str, exclude: str, expected: str) -> None:
    found = list(iter_files([tree], include.split(), exclude.split()))
    assert rels(found, tree) == expected.split()


def test_iter_files_explicit_files(tree: Path) -> None:
    named = [tree / "image.png", tree / "docs" / "guide.rst", tree / "a.md"]
    found = list(iter_files(named + [tree / "docs"], exclude=["*.html"]))
    # Named files come first in the order given, unsupported ones included (so that loading
    # reports them); the folder adds what was not already yielded.
    assert rels(found, tree) == [
        "image.png",
        "docs/guide.rst",
        "a.md",
        "docs/api/old.htm",
        "docs/manual.pdf",
    ]
    assert list(iter_files([tree / "image.png"], exclude=["*.png"])) == []
    with pytest.raises(DocumentLoadError, match="unsupported"):
        load_file(found[0])


def test_iter_files_symlinks(tree: Path, tmp_path: Path) -> None:
    (tree / "z" / "loop").symlink_to(tree / "z", target_is_directory=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "shared.md").write_text("shared\n")
    (tree / "linked").symlink_to(outside, target_is_directory=True)
    found = rels(list(iter_files([tree])), tree)
    assert "linked/shared.md" in found  # links to folders are followed, path kept under root
    assert found.count("z/deep/er/file.md") == 1
    assert [f for f in found if f.startswith("z/")] == ["z/deep/er/file.md"]  # no loop


def test_iter_files_given_through_a_relative_path(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree)
    found = list(iter_files([Path("docs")], include=["*.rst"]))
    assert found == [tree.resolve() / "docs" / "guide.rst"]


def test_iter_files_hidden_root_is_walked(tmp_path: Path) -> None:
    hidden = tmp_path / ".notes"
    hidden.mkdir()
    (hidden / "todo.md").write_text("- buy milk\n")
    assert rels(list(iter_files([hidden])), hidden) == ["todo.md"]


def test_copy_of_fixture_tree(tmp_path: Path) -> None:
    shutil.copytree(DOCS, tmp_path / "docs")
    found = rels(list(iter_files([tmp_path / "docs"])), tmp_path / "docs")
    assert found == sorted(p.name for p in DOCS.iterdir())
