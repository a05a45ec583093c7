"""Bytes to text: encoding detection, binary sniffing, moderate whitespace normalisation."""

from __future__ import annotations

import codecs
import re

_SAMPLE = 8192
# Control bytes that real text files contain: tab, newline, carriage return, form feed,
# backspace (overstrike in rendered man pages), escape (ANSI colours), vertical tab.
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\b\x1b\x0b")
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\u200b\ufeff]")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_BLANK_RUN = re.compile(r"\n{3,}")
_SPACE_RUN = re.compile(r"[ \t]{2,}")


class LoadProblem(Exception):
    """A parser's reason for rejecting a file; the message is the user-facing problem."""


def looks_binary(data: bytes) -> bool:
    """True when a sample of ``data`` has NUL bytes or many non-text control bytes."""
    sample = data[:_SAMPLE]
    if not sample:
        return False
    if b"\x00" in sample:
        return True
    controls = sum(1 for b in sample if b < 0x20 and b not in _TEXT_CONTROLS)
    return controls / len(sample) > 0.05


def _utf16_without_bom(sample: bytes) -> str | None:
    """Guess UTF-16 from the pattern of NUL bytes that ASCII-range text leaves behind."""
    if len(sample) < 4:
        return None
    even, odd = sample[0::2], sample[1::2]
    even_nul = even.count(0) / len(even)
    odd_nul = odd.count(0) / max(1, len(odd))
    if odd_nul > 0.3 and even_nul < 0.02:
        return "utf-16-le"
    if even_nul > 0.3 and odd_nul < 0.02:
        return "utf-16-be"
    return None


def decode_bytes(data: bytes, declared: str | None = None) -> str:
    """Decode a text file's bytes.

    A byte-order mark wins; then UTF-16 recognised by its pattern of NUL bytes; anything else
    with NUL bytes or many control bytes is binary; then UTF-8, the ``declared`` encoding (an
    HTML ``<meta charset>``), Windows-1252 and finally Latin-1.  Raises :class:`LoadProblem`.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(encoding)
            except UnicodeDecodeError as e:
                raise LoadProblem(
                    f"cannot decode as {encoding.upper()} despite its byte-order mark "
                    f"(bad bytes at offset {e.start + len(bom)})"
                ) from e
    guess = _utf16_without_bom(data[:_SAMPLE])
    if guess is not None:
        try:
            return data.decode(guess)
        except UnicodeDecodeError:
            pass
    if looks_binary(data):  # NUL and control bytes are valid UTF-8, so check first
        raise LoadProblem("binary file, not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if declared:
        try:
            return data.decode(codecs.lookup(declared).name)
        except (LookupError, UnicodeDecodeError):
            pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def strip_overstrike(text: str) -> str:
    """Remove terminal bold/underline (``X\\bX``, ``_\\bX``) and ANSI colour codes."""
    if "\b" in text:
        text = re.sub(".\b", "", text)
        text = text.replace("\b", "")
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    return text


def normalize(text: str, *, collapse_spaces: bool = False) -> str:
    """Moderate clean-up: unify newlines, drop control characters and trailing spaces, keep
    at most one blank line between paragraphs.  Indentation is kept (code blocks) unless
    ``collapse_spaces`` (for PDF text, where runs of spaces are layout, not content)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\f", "\n\n").replace("\v", "\n").replace("\u00a0", " ")
    text = _CONTROL_CHARS.sub("", text)
    if collapse_spaces:
        text = _SPACE_RUN.sub(" ", text)
    text = _TRAILING_SPACE.sub("\n", text)
    text = _BLANK_RUN.sub("\n\n", text)
    return text.strip()


class Outline:
    """Collects ``(heading path, text)`` sections while a parser walks a document.

    ``heading(level, title)`` closes the current section and opens a new one under the
    heading path built from the enclosing headings; ``add(text)`` appends to the open section.
    Sections whose text is empty after normalisation are dropped (a heading alone is not
    worth a chunk: its title lives on in the path of the sections below it).
    """

    def __init__(self, *, collapse_spaces: bool = False) -> None:
        self._stack: list[tuple[int, str]] = []
        self._parts: list[str] = []
        self._collapse = collapse_spaces
        self.headings: list[tuple[int, str]] = []
        self.sections: list[tuple[str, str]] = []

    @property
    def path(self) -> str:
        return " > ".join(t for _, t in self._stack if t)

    def add(self, text: str) -> None:
        self._parts.append(text)

    def retract(self) -> None:
        """Take back the last ``add`` (a line that turned out to be a heading)."""
        if self._parts:
            self._parts.pop()

    def flush(self) -> None:
        if self._parts:
            text = normalize("".join(self._parts), collapse_spaces=self._collapse)
            if text:
                self.sections.append((self.path, text))
            self._parts = []

    def heading(self, level: int, title: str) -> None:
        self.flush()
        title = " ".join(title.split())
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))
        if title:
            self.headings.append((level, title))

    def best_title(self) -> str:
        """The first heading of the highest rank (lowest level) seen, or ""."""
        if not self.headings:
            return ""
        top = min(level for level, _ in self.headings)
        return next(t for level, t in self.headings if level == top)

    def finish(self) -> list[tuple[str, str]]:
        self.flush()
        return self.sections
