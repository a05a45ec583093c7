"""Document loaders: files to titled, sectioned text.

:func:`load_file` reads one file into a :class:`LoadedDocument` -- its title and its sections
(text under one heading path, or one page of a PDF) -- and raises
:class:`~llamachain.errors.DocumentLoadError` with a one-line reason for anything it cannot
read.  :func:`iter_files` walks the files and folders a user names, deterministically.

Supported: plain text (``.txt``), Markdown (``.md``, ``.markdown``), reStructuredText
(``.rst``), HTML (``.html``, ``.htm``), PDF (``.pdf``), Word (``.docx``) and manual pages
(roff source or rendered text: ``.1``-``.9`` and ``.man``, optionally gzipped, recognised by
their content).
"""

from __future__ import annotations

import errno
import gzip
import io
import logging
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llamachain.errors import DocumentLoadError
from llamachain.ingest._globs import Globs
from llamachain.ingest._text import LoadProblem, decode_bytes, normalize, strip_overstrike

log = logging.getLogger(__name__)

SUPPORTED_TYPES: tuple[str, ...] = ("txt", "md", "rst", "html", "pdf", "docx", "man")

#: Files larger than this are refused (a knowledge base is not the place for a log dump).
MAX_FILE_BYTES = 256 * 1024 * 1024

_SUFFIXES = {
    ".txt": "txt",
    ".text": "txt",
    ".md": "md",
    ".markdown": "md",
    ".rst": "rst",
    ".rest": "rst",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".man": "man",
}
_MAN_SECTION = re.compile(r"^\.[1-9][a-z]{0,6}$")
_JUNK_DIRS = frozenset({"__pycache__", "node_modules", "__MACOSX", "site-packages"})


@dataclass(frozen=True)
class Section:
    """Text under one heading path (or one page of a paged format)."""

    text: str
    heading: str = ""  # heading path, "Installation > From source"; "" before any heading
    page: int | None = None  # 1-based page number for paged formats (PDF)


@dataclass(frozen=True)
class LoadedDocument:
    """A file read into sections, in document order (none for an empty file)."""

    path: Path
    file_type: str
    title: str
    sections: list[Section] = field(default_factory=list)


# ---- type detection -------------------------------------------------------------------------


def _man_suffixes(path: Path) -> tuple[bool, bool]:
    """``(is a manual-page name, is gzipped)`` judged by the file name alone."""
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes = suffixes[:-1]
    return bool(suffixes) and (
        _MAN_SECTION.match(suffixes[-1]) is not None or suffixes[-1] == ".man"
    ), gz


def _read_head(path: Path, gz: bool, size: int = 32768) -> bytes:
    if gz:
        with gzip.open(path, "rb") as f:
            return f.read(size)
    with path.open("rb") as f:
        return f.read(size)


def detect_type(path: Path) -> str | None:
    """The document type of ``path`` (one of :data:`SUPPORTED_TYPES`), or None.

    By suffix, case-insensitively.  Names ending in a manual section (``ls.1``, ``ls.1.gz``,
    ``openssl.1ssl``) are sniffed: only roff source or rendered man text counts, so a rotated
    log such as ``app.log.1`` is not taken for a man page.  A file that cannot be opened to
    sniff is given the benefit of the doubt, so that loading it reports why.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    is_man, gz = _man_suffixes(path)
    if not is_man:
        return None
    if path.name.lower().endswith((".man", ".man.gz")):
        return "man"
    from llamachain.ingest._man import looks_like_man

    try:
        head = _read_head(path, gz)
    except (OSError, EOFError, zlib.error):
        return "man"
    if b"\x00" in head:
        return None
    return "man" if looks_like_man(head.decode("utf-8", "replace")) else None


# ---- loading --------------------------------------------------------------------------------


def _read(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise DocumentLoadError(path, "is a directory, not a file")
        if size > MAX_FILE_BYTES:
            raise DocumentLoadError(
                path,
                f"file is {size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB limit; "
                "split it into smaller files",
            )
        return path.read_bytes()
    except DocumentLoadError:
        raise
    except PermissionError as e:
        raise DocumentLoadError(
            path, "permission denied; make the file readable (chmod +r) or leave it out"
        ) from e
    except FileNotFoundError as e:
        what = "broken symbolic link" if path.is_symlink() else "no such file"
        raise DocumentLoadError(path, what) from e
    except OSError as e:
        if e.errno == errno.EISDIR:
            raise DocumentLoadError(path, "is a directory, not a file") from e
        raise DocumentLoadError(path, f"cannot read: {e.strerror or e}") from e


def _gunzip(data: bytes) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            out = f.read(MAX_FILE_BYTES + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise LoadProblem(f"corrupt gzip file ({e})") from e
    if len(out) > MAX_FILE_BYTES:
        raise LoadProblem(f"decompresses to over {MAX_FILE_BYTES // 2**20} MiB")
    return out


def _text_sections(text: str) -> list[tuple[str, str]]:
    text = normalize(strip_overstrike(text))
    return [("", text)] if text else []


def _parse(file_type: str, data: bytes, path: Path) -> tuple[str, list[Section]]:
    if file_type == "pdf":
        from llamachain.ingest._office import parse_pdf

        title, paged = parse_pdf(data)
        return title, [Section(text, heading, page) for heading, text, page in paged]
    if file_type == "docx":
        from llamachain.ingest._office import parse_docx

        title, parts = parse_docx(data)
    elif file_type == "html":
        from llamachain.ingest._html import declared_charset, parse_html

        title, parts = parse_html(decode_bytes(data, declared_charset(data)))
    else:
        if file_type == "man" and _man_suffixes(path)[1]:
            data = _gunzip(data)
        text = decode_bytes(data)
        if file_type == "md":
            from llamachain.ingest._markup import parse_markdown

            title, parts = parse_markdown(text)
        elif file_type == "rst":
            from llamachain.ingest._markup import parse_rst

            title, parts = parse_rst(text)
        elif file_type == "man":
            from llamachain.ingest._man import is_roff, parse_rendered, parse_roff

            title, parts = parse_roff(text) if is_roff(text) else parse_rendered(text)
        else:
            title, parts = "", _text_sections(text)
    return title, [Section(text, heading) for heading, text in parts]


def load_file(path: Path) -> LoadedDocument:
    """Read ``path`` into a :class:`LoadedDocument`.

    Raises :class:`~llamachain.errors.DocumentLoadError` (with ``.problem``, one line) for an
    unsupported type, a file that cannot be read (missing, permissions, a directory, too
    big), binary or undecodable content, and corrupt, encrypted or text-less PDF and Word
    files.  An empty (or whitespace-only) text file loads as a document with no sections.
    """
    path = Path(os.path.abspath(Path(path).expanduser()))
    file_type = detect_type(path)
    if file_type is None:
        kind = f"'{path.suffix}'" if path.suffix else "(no file name extension)"
        raise DocumentLoadError(
            path,
            f"unsupported file type {kind}; supported: .txt, .md, .rst, .html, .pdf, .docx "
            "and man pages",
        )
    data = _read(path)
    try:
        title, sections = _parse(file_type, data, path)
    except LoadProblem as e:
        raise DocumentLoadError(path, str(e)) from e
    title = " ".join(title.split())
    if not title:
        title = path.name.split(".")[0] if file_type == "man" else path.stem
    log.debug("loaded %s: %s, %d sections", path, file_type, len(sections))
    return LoadedDocument(path, file_type, title, sections)


# ---- walking ------------------------------------------------------------------------------


def iter_files(
    roots: Sequence[Path], include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> Iterator[Path]:
    """The files to ingest under ``roots`` (files and folders), as absolute paths.

    Folders are walked depth-first in name order (deterministic), following symbolic links
    to folders but never around a loop; hidden files and folders (``.git``, ``.venv``...)
    and junk folders (``__pycache__``, ``node_modules``...) are skipped.  Paths found in a
    folder are the resolved root joined with their path under it.

    ``include``/``exclude`` are glob patterns matched against the path relative to its root
    (see :mod:`llamachain.ingest._globs`: ``"**/*.md"``, ``"*.pdf"``, ``"docs/**"``).  With
    no ``include`` every file whose type :func:`detect_type` recognises is yielded; a file
    that an include pattern names by kind (``"*.log"``) is yielded even if its type is not
    supported, and so is every file named directly in ``roots`` (unless excluded), so that
    :func:`load_file` reports it rather than it being silently ignored.  Each path is
    yielded once.
    """
    inc, exc = Globs(include), Globs(exclude)
    seen: set[str] = set()
    for given in roots:
        root = Path(given).expanduser().resolve()
        if root.is_dir():
            found: Iterator[Path] = _walk(root, "", inc, exc, set())
        elif exc.match(root.name):
            continue
        else:
            found = iter([root])
        for path in found:
            key = str(path)
            if key not in seen:
                seen.add(key)
                yield path


def _walk(
    folder: Path, rel: str, inc: Globs, exc: Globs, ancestors: set[tuple[int, int]]
) -> Iterator[Path]:
    try:
        st = folder.stat()
        key = (st.st_dev, st.st_ino)
        if key in ancestors:
            log.warning("skipping %s: a symbolic link loop leads back to it", folder)
            return
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        log.warning("cannot list %s: %s", folder, e.strerror or e)
        return
    ancestors.add(key)
    try:
        yield from _walk_entries(folder, rel, entries, inc, exc, ancestors)
    finally:
        ancestors.discard(key)


def _walk_entries(
    folder: Path,
    rel: str,
    entries: list[os.DirEntry[str]],
    inc: Globs,
    exc: Globs,
    ancestors: set[tuple[int, int]],
) -> Iterator[Path]:
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        sub = f"{rel}/{name}" if rel else name
        path = folder / name
        try:
            is_dir = entry.is_dir()  # follows symbolic links
        except OSError:
            is_dir = False
        if is_dir:
            if name not in _JUNK_DIRS and not exc.match(sub):
                yield from _walk(path, sub, inc, exc, ancestors)
            continue
        if exc.match(sub) or (inc and not inc.match(sub)):
            continue
        if inc.names(sub) or detect_type(path) is not None:
            yield path
