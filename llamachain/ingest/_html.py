"""HTML to sections with the standard library's parser.

Drops what is not content (scripts, styles, navigation, footers, forms), turns ``h1``-``h6``
into headings, keeps paragraph and line breaks, keeps ``<pre>`` text as it is, and decodes
entities.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from llamachain.ingest._text import Outline

_SKIP = frozenset(
    {"script", "style", "nav", "footer", "noscript", "template", "svg", "head", "form", "button"}
)
_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_PARAGRAPH = frozenset(
    {
        "p", "div", "section", "article", "main", "header", "aside", "blockquote", "pre",
        "figure", "figcaption", "table", "ul", "ol", "dl", "hr", "address", "details",
        "summary", "fieldset",
    }
)  # fmt: skip
_LINE = frozenset({"br", "li", "tr", "dt", "dd", "caption", "option"})
_CELL = frozenset({"td", "th"})
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)
_WS = re.compile(r"\s+")
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def declared_charset(data: bytes) -> str | None:
    """The encoding an HTML document declares in a ``<meta>`` tag near its start."""
    m = _CHARSET.search(data[:4096])
    return m.group(1).decode("ascii") if m else None


class _Extractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out = Outline()
        self.title = ""
        self._skip: dict[str, int] = {}
        self._pre = 0
        self._in_title = False
        self._heading: tuple[int, list[str]] | None = None
        self._at_line_start = True
        self._newlines = 0

    # ---- output helpers ----
    def _text(self, data: str) -> None:
        if self._heading is not None:
            self._heading[1].append(data)
            return
        if not self._pre:
            data = _WS.sub(" ", data)
            if self._newlines or self._at_line_start:
                data = data.lstrip()
            if not data:
                return
        if self._newlines:
            self.out.add("\n" * self._newlines)
            self._newlines = 0
        self.out.add(data)
        self._at_line_start = data.endswith("\n")

    def _break(self, newlines: int) -> None:
        """Ask for a line (1) or paragraph (2) break before the next text; breaks merge."""
        if self._heading is None:
            self._newlines = max(self._newlines, newlines)
            self._at_line_start = True

    # ---- parser callbacks ----
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            if tag not in _VOID:
                self._skip[tag] = self._skip.get(tag, 0) + 1
            return
        if tag == "title":
            # Only the document's own title, not an <svg>'s.
            self._in_title = not self.title and all(
                n == 0 or t == "head" for t, n in self._skip.items()
            )
        if any(self._skip.values()):
            return
        if self._heading is not None and (tag in _HEADINGS or tag in _PARAGRAPH):
            self._close_heading()  # an unclosed <hN> ends where the next block starts
        if tag in _HEADINGS:
            self._heading = (_HEADINGS[tag], [])
        elif tag == "pre":
            self._break(2)
            self._pre += 1
        elif tag in _PARAGRAPH:
            self._break(2)
        elif tag in _LINE:
            self._break(1)
        elif tag in _CELL:
            self._text(" | " if not self._at_line_start else "")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            if self._skip.get(tag):
                self._skip[tag] -= 1
            return
        if tag == "title":
            self._in_title = False
        if any(self._skip.values()):
            return
        if tag in _HEADINGS and self._heading is not None:
            self._close_heading()
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
            self._break(2)
        elif tag in _PARAGRAPH:
            self._break(2)
        elif tag in _LINE and tag != "br":
            self._break(1)

    def _close_heading(self) -> None:
        assert self._heading is not None
        level, parts = self._heading
        self._heading = None
        self.out.heading(level, "".join(parts))
        self._at_line_start = True
        self._newlines = 0

    def finish(self) -> list[tuple[str, str]]:
        if self._heading is not None:
            self._close_heading()
        return self.out.finish()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
            return
        if any(self._skip.values()):
            return
        self._text(data)


def parse_html(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``(title, [(heading path, section text), ...])``; the title is ``<title>`` or the
    first top-level heading."""
    p = _Extractor()
    p.feed(text)
    p.close()
    sections = p.finish()
    title = " ".join(p.title.split()) or p.out.best_title()
    return title, sections
