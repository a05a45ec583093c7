"""Markdown and reStructuredText: split into sections by their headings.

Neither parser renders markup; they only find headings (the text keeps its markup, which
embedders and BM25 read fine).  Code blocks are never mistaken for headings.
"""

from __future__ import annotations

import re

from llamachain.ingest._text import Outline

# ---- Markdown ---------------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_LIST_ITEM = re.compile(r"^ {0,3}(?:[-*+]|\d{1,9}[.)])(?:[ \t]|$)")
_FRONT_TITLE = re.compile(r"""^title\s*[:=]\s*["']?(.*?)["']?\s*$""", re.IGNORECASE)
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_NOISE = re.compile(r"\{#[^}]*\}\s*$|<[^>]+>|`+|\*{1,3}")


def _front_matter(lines: list[str]) -> tuple[int, str]:
    """Lines taken by a leading YAML (``---``) or TOML (``+++``) block, and its title."""
    if not lines or lines[0].strip() not in ("---", "+++"):
        return 0, ""
    fence = lines[0].strip()
    ends = {fence, "..."} if fence == "---" else {fence}
    for i in range(1, min(len(lines), 500)):
        if lines[i].strip() in ends:
            title = ""
            for line in lines[1:i]:
                m = _FRONT_TITLE.match(line)
                if m:
                    title = m.group(1)
                    break
            return i + 1, title
    return 0, ""


def _md_heading_text(raw: str) -> str:
    return _MD_NOISE.sub("", _MD_LINK.sub(r"\1", raw)).strip()


def parse_markdown(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``(title, [(heading path, section text), ...])`` of a Markdown document.

    ATX (``#``) and setext (underlined) headings; fenced code blocks are copied verbatim, so a
    ``# comment`` inside them is text; YAML/TOML front matter is skipped (its ``title`` is
    the preferred document title).
    """
    lines = text.split("\n")
    start, front_title = _front_matter(lines)
    out = Outline()
    fence: str | None = None
    para: list[str] = []  # lines of the paragraph being read (candidate setext heading)
    i = start
    n = len(lines)
    while i < n:
        line = lines[i]
        i += 1
        if fence is not None:
            out.add(line + "\n")
            stripped = line.strip()
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                fence = None
            continue
        m = _FENCE.match(line)
        if m and not (m.group(1)[0] == "`" and "`" in line[m.end() :]):
            fence = m.group(1)
            para = []
            out.add(line + "\n")
            continue
        m = _ATX.match(line)
        if m:
            para = []
            out.heading(len(m.group(1)), _md_heading_text(m.group(2) or ""))
            continue
        if (
            len(para) == 1
            and _SETEXT.match(line)
            and not _LIST_ITEM.match(para[0])
            and not para[0].startswith("    ")
        ):
            # Take the paragraph line back out of the section: it is the heading.
            out.retract()
            out.heading(1 if line.strip()[0] == "=" else 2, _md_heading_text(para[0]))
            para = []
            continue
        if line.strip():
            para.append(line)
        else:
            para = []
        out.add(line + "\n")
    sections = out.finish()
    return front_title or out.best_title(), sections


# ---- reStructuredText ---------------------------------------------------------------------

_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1+[ \t]*$")
_LINK_TARGET = re.compile(r"^\.\. _[^:]*:\s*$")
_RST_ROLE = re.compile(r":[\w.+-]+(?::[\w.+-]+)*:`([^`<]*?)\s*(?:<[^>]*>)?`")
_RST_NOISE = re.compile(r"``|\*{1,2}|`_{0,2}")


def _rst_heading_text(raw: str) -> str:
    return _RST_NOISE.sub("", _RST_ROLE.sub(r"\1", raw)).strip()


def _adornment(line: str) -> str | None:
    m = _ADORNMENT.match(line)
    return m.group(1) if m else None


def parse_rst(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``(title, [(heading path, section text), ...])`` of a reStructuredText document.

    Section titles are text lines underlined (and optionally overlined) with a repeated
    punctuation character; as in docutils, heading levels follow the order in which the
    adornment styles first appear.
    """
    lines = text.split("\n")
    out = Outline()
    styles: list[tuple[str, bool]] = []
    prev_blank = True
    i, n = 0, len(lines)

    def level_of(style: tuple[str, bool]) -> int:
        if style not in styles:
            styles.append(style)
        return styles.index(style) + 1

    while i < n:
        line = lines[i]
        # Overlined title: adornment, title text (may be indented), same adornment.
        c = _adornment(line) if prev_blank else None
        if c and i + 2 < n:
            title, under = lines[i + 1].strip(), lines[i + 2]
            if (
                title
                and _adornment(lines[i + 1]) is None
                and _adornment(under) == c
                and len(under.rstrip()) == len(line.rstrip())
                and len(line.rstrip()) >= len(title)
            ):
                out.heading(level_of((c, True)), _rst_heading_text(title))
                i += 3
                prev_blank = True
                continue
        # Underlined title: unindented text line, adornment at least as long (or >= 4).
        if prev_blank and line.strip() and not line[0].isspace() and i + 1 < n:
            under = lines[i + 1].rstrip()
            c = _adornment(under)
            title = line.strip()
            if (
                c
                and _adornment(line) is None
                and not title.startswith(".. ")
                and (len(under) >= len(title) or len(under) >= 4)
            ):
                out.heading(level_of((c, False)), _rst_heading_text(title))
                i += 2
                prev_blank = True
                continue
        if not _LINK_TARGET.match(line):  # ".. _name:" labels are not content
            out.add(line + "\n")
        prev_blank = not line.strip()
        i += 1
    sections = out.finish()
    return out.best_title(), sections
