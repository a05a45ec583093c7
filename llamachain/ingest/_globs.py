"""Glob patterns for ``include``/``exclude``, matched against paths relative to a root.

* ``*`` and ``?`` stay within one path segment, ``[abc]``/``[!abc]`` are character sets and
  ``**`` spans any number of folders (none included): ``**/*.md`` also matches ``README.md``.
* A pattern without ``/`` is matched against every segment -- the file name and each folder
  name -- so ``*.pdf`` means PDFs anywhere and ``build`` means anything under any ``build``
  folder (as in ``.gitignore``).
* A pattern with ``/`` inside or in front (``/build``, ``./build``: only at the top) is
  matched against the whole relative path and each of its folders: ``docs/api`` and
  ``docs/api/**`` mean everything under ``docs/api``.  A trailing ``/`` changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


def _segment(seg: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(seg):
        c = seg[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = seg.find("]", i + 2 if seg[i + 1 : i + 2] in ("!", "^") else i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = seg[i + 1 : j]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern[str]
    anywhere: bool  # no "/": match any single segment
    names_files: bool  # its last segment is more than wildcards: "*.log", "NOTES"


def _compile(pattern: str) -> _Pattern:
    p = pattern.strip().replace("\\", "/")
    anchored = p.startswith(("/", "./"))
    while p.startswith("./"):
        p = p[2:]
    p = p.strip("/")
    segs = [s for s in p.split("/") if s] or ["**"]
    parts = []
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg == "**":
            parts.append(".*" if last else "(?:[^/]*/)*")
        else:
            parts.append(_segment(seg) + ("" if last else "/"))
    return _Pattern(
        re.compile("^" + "".join(parts) + "$"),
        anywhere=len(segs) == 1 and segs[0] != "**" and not anchored,
        names_files=bool(segs[-1].strip("*?")),
    )


class Globs:
    """A set of patterns; :meth:`match` is true when any of them matches."""

    def __init__(self, patterns: Sequence[str]) -> None:
        if isinstance(patterns, str):
            patterns = [patterns]
        self.patterns = [_compile(p) for p in patterns if p.strip()]

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def match(self, rel: str) -> bool:
        """``rel`` (a ``/``-separated relative path) or one of its folders matches."""
        segs = rel.split("/")
        for p in self.patterns:
            if p.anywhere:
                if any(p.regex.match(s) for s in segs):
                    return True
            elif any(p.regex.match("/".join(segs[:k])) for k in range(1, len(segs) + 1)):
                return True
        return False

    def names(self, rel: str) -> bool:
        """A pattern that names a kind of file (not just ``*`` or ``**``) matches ``rel``
        itself: the user asked for this file even if its type is not supported."""
        name = rel.rsplit("/", 1)[-1]
        return any(
            p.names_files and p.regex.match(name if p.anywhere else rel) for p in self.patterns
        )
