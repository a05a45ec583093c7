"""PDF (pypdf) and Word .docx (python-docx) documents."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from typing import Any

from llamachain.ingest._text import LoadProblem, Outline, normalize

log = logging.getLogger(__name__)

_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.IGNORECASE)


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())[:160]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# ---- PDF -----------------------------------------------------------------------------------


def _outline_entries(reader: Any) -> list[tuple[int, int, str]]:
    """``(page index, level, title)`` of the PDF's bookmarks, in outline order."""
    entries: list[tuple[int, int, str]] = []

    def walk(items: list[Any], level: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
                continue
            page = reader.get_destination_page_number(item)
            title = " ".join(str(getattr(item, "title", "") or "").split())
            if page is not None and page >= 0 and title:
                entries.append((page, level, title))

    try:
        walk(list(reader.outline), 1)
    except Exception as e:  # bookmarks are a nicety; a broken outline must not fail the load
        log.debug("ignoring the PDF outline: %s", _reason(e))
        return []
    return entries


def parse_pdf(data: bytes) -> tuple[str, list[tuple[str, str, int]]]:
    """``(title, [(heading path, page text, page number), ...])``; one section per page.

    The heading of a page is the path of the last bookmark that starts on or before it.
    """
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    try:
        reader = PdfReader(io.BytesIO(data))
        encrypted = reader.is_encrypted
    except Exception as e:
        raise LoadProblem(f"corrupt or unreadable PDF ({_reason(e)})") from e
    if encrypted:
        try:
            opened = reader.decrypt("")  # restrictions only, no password to open
        except DependencyError as e:
            raise LoadProblem(
                "encrypted PDF that needs the 'cryptography' package to decrypt; "
                "run `pip install cryptography`, or save an unencrypted copy"
            ) from e
        except Exception as e:
            raise LoadProblem(f"encrypted PDF that could not be decrypted ({_reason(e)})") from e
        if not opened:
            raise LoadProblem(
                "encrypted PDF that needs a password; save an unencrypted copy "
                "(for example `qpdf --decrypt --password=... in.pdf out.pdf`) and ingest that"
            )
    try:
        pages = list(reader.pages)
        meta = reader.metadata
        title = " ".join(str(meta.title or "").split()) if meta is not None else ""
    except Exception as e:
        raise LoadProblem(f"corrupt or unreadable PDF ({_reason(e)})") from e
    entries = sorted(_outline_entries(reader), key=lambda t: t[0])
    stack: list[tuple[int, str]] = []
    sections: list[tuple[str, str, int]] = []
    k = 0
    for number, page in enumerate(pages, start=1):
        while k < len(entries) and entries[k][0] < number:
            _, level, heading = entries[k]
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, heading))
            k += 1
        try:
            raw = page.extract_text() or ""
        except Exception as e:
            log.warning("page %d: no text extracted (%s)", number, _reason(e))
            continue
        text = normalize(raw, collapse_spaces=True)
        if text:
            sections.append((" > ".join(t for _, t in stack), text, number))
    if not sections:
        raise LoadProblem("no extractable text (scanned PDF?); run OCR on it first")
    return title, sections


# ---- Word --------------------------------------------------------------------------------


def _table_rows(table: Any) -> Iterator[str]:
    for row in table.rows:
        cells: list[str] = []
        seen: set[int] = set()
        for cell in row.cells:  # a merged cell is repeated once per grid column it spans
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            text = " ".join(cell.text.split())
            if text:
                cells.append(text)
        if cells:
            yield " | ".join(cells)


def _style_name(paragraph: Any) -> str:
    try:
        style = paragraph.style
        return str(style.name or style.style_id or "") if style is not None else ""
    except Exception:  # a dangling style reference
        return ""


def parse_docx(data: bytes) -> tuple[str, list[tuple[str, str]]]:
    """``(title, [(heading path, section text), ...])``: "Heading N" styles are headings,
    tables become one line per row with cells separated by `` | ``."""
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        title = " ".join((document.core_properties.title or "").split())
        blocks = list(document.iter_inner_content())
    except Exception as e:
        raise LoadProblem(f"corrupt or unreadable Word document ({_reason(e)})") from e
    out = Outline()
    for block in blocks:
        if isinstance(block, Table):
            for row in _table_rows(block):
                out.add(row + "\n")
            out.add("\n")
            continue
        text = block.text
        style = _style_name(block)
        m = _HEADING_STYLE.match(style)
        if m:
            out.heading(int(m.group(1)), text)
        elif style.lower() == "title" and text.strip():
            title = title or " ".join(text.split())
        elif text.strip():
            out.add(text + "\n\n")
    sections = out.finish()
    return title or out.best_title(), sections
