"""Manual pages: roff source (man(7) and the common mdoc(7) macros) and rendered man text.

Roff: requests and macros are stripped, font and character escapes decoded, ``.SH``/``.SS``
(``.Sh``/``.Ss``) become headings.  Rendered text (``man ls > ls.txt``, or ``MANPAGER=cat``):
terminal overstrike (``X\\bX``) and colour codes are removed, the running header and footer
dropped, ALL-CAPS lines at the margin become headings and 3-space-indented lines that
introduce an indented block become subheadings.
"""

from __future__ import annotations

import re
import textwrap

from llamachain.ingest._text import Outline, strip_overstrike

_ROFF_MARKERS = re.compile(r"^[.'][ \t]*(TH|SH|Dd|Dt|Sh)\b", re.MULTILINE)
_RENDERED_NAME = re.compile(r"^NAME[ \t]*$", re.MULTILINE)
_RENDERED_BODY = re.compile(r"^(SYNOPSIS|DESCRIPTION)[ \t]*$", re.MULTILINE)


def is_roff(text: str) -> bool:
    return _ROFF_MARKERS.search(text[:16384]) is not None


def looks_like_man(text: str) -> bool:
    """Roff man source, or rendered man text with NAME and SYNOPSIS/DESCRIPTION sections."""
    if is_roff(text):
        return True
    sample = strip_overstrike(text[:32768])
    return bool(_RENDERED_NAME.search(sample) and _RENDERED_BODY.search(sample))


# ---- roff escapes -------------------------------------------------------------------------

_SPECIAL = {
    "em": "\u2014", "en": "\u2013", "hy": "-", "mi": "-", "aq": "'", "dq": '"', "lq": "\u201c",
    "rq": "\u201d", "oq": "\u2018", "cq": "\u2019", "bu": "\u2022", "co": "\u00a9",
    "rg": "\u00ae", "tm": "\u2122", "mu": "\u00d7", "di": "\u00f7", "de": "\u00b0",
    "ga": "`", "ti": "~", "ha": "^", "rs": "\\", "sl": "/", "ba": "|", "bv": "|", "or": "|",
    "pl": "+", "eq": "=", "lt": "<", "gt": ">", "<=": "\u2264", ">=": "\u2265", "!=": "\u2260",
    "->": "\u2192", "<-": "\u2190", "aa": "\u00b4", "fm": "\u2032", "sc": "\u00a7",
    "ps": "\u00b6", "Fo": "\u00ab", "Fc": "\u00bb", "R": "\u00ae", "Tm": "\u2122",
}  # fmt: skip
_ESCAPE = re.compile(
    r"""\\(?:
        (?P<comment>["#].*)
      | [fFsmM](?:\[[^\]]*\]|\([^\n]{2}|[+-]?\d{1,2}|.)      # fonts, sizes, colours
      | (?P<star>\*)(?:\[(?P<sl>[^\]]*)\]|\((?P<s2>..)|(?P<s1>.))  # strings
      | \[(?P<long>[^\]]*)\]                                # \[name], \[u00E9]
      | \((?P<two>..)                                       # \(xx
      | [nNgkVYwhvlLoxbDSZHR](?:\[[^\]]*\]|\([^\n]{2}|'[^']*'|.)  # registers, motions
      | (?P<dash>-)
      | (?P<space>[ ~0t])
      | [&|^%c:)!?{}TaEpzdur/,]
      | (?P<e>[e\\])
      | (?P<other>.)
    )""",
    re.VERBOSE,
)


def _escape(m: re.Match[str]) -> str:
    if m.group("comment") is not None:
        return ""
    name = m.group("long") or m.group("two") or m.group("sl") or m.group("s2") or m.group("s1")
    if name is not None:
        if name.startswith("u") and len(name) >= 5:
            try:
                return "".join(chr(int(part[1:] if part.startswith("u") else part, 16))
                               for part in name.split("_"))  # fmt: skip
            except ValueError:
                return ""
        return _SPECIAL.get(name, "")
    if m.group("dash"):
        return "-"
    if m.group("space"):
        return " "
    if m.group("e"):
        return "\\"
    if m.group("other"):
        return m.group("other")
    return ""


def unescape(s: str) -> str:
    return _ESCAPE.sub(_escape, s) if "\\" in s else s


# ---- roff source ----------------------------------------------------------------------------


def _names(words: str) -> frozenset[str]:
    return frozenset(words.split())


_IGNORED = _names(
    """PP P LP HP TP TQ IP RS RE PD UE ME EE EX YS br sp nf fi in ti ft ps vs ll na ad hy nh ne
    bp ta ds nr so if ie el tr cc c2 ec eo lf mk rt rm rn as am ns rs ev fl ch wh it cu ul
    cs bd fp ss pl pn po pc lt nm nn mc tl hc hw cf sv os Pp Bl El Bd Ed Ek Bk Os Dd Lp IX
    Vb Ve Sp"""
)

_BREAKS = _names("PP P LP HP TP TQ IP Pp Lp Bl El Bd Ed sp RS RE EX EE")

_JOINED = _names("BR BI IB IR RB RI")

_SPACED = _names("B I R SM SB SY UR MT Nm Ar Pa Cm Ic Ev Va Dv Er Fn Fa Ft Li Em Sy")


_ARG = re.compile(r'"((?:[^"]|"")*)"?|(\S+)')
_COMMENT = re.compile(r'\\".*')


def _args(rest: str) -> list[str]:
    """A macro's arguments: blank-separated, double quotes group (``""`` is a quote)."""
    out = []
    for m in _ARG.finditer(_COMMENT.sub("", rest)):
        quoted, word = m.group(1), m.group(2)
        out.append(unescape(quoted.replace('""', '"') if quoted is not None else word))
    return out


def parse_roff(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``(title, sections)`` of roff man source."""
    out = Outline()
    th = ""
    pending_heading = 0
    skip_until: str | None = None
    name_lines: list[str] = []
    in_name = False
    fill = True  # roff's fill mode: text lines flow into paragraphs
    tag_next = False  # the next text line is a .TP tag, on a line of its own
    defined: set[str] = set()  # macros the page defines itself: we cannot interpret them
    for raw in text.split("\n"):
        if skip_until is not None:
            if raw.strip() == skip_until:
                skip_until = None
            continue
        if raw[:1] in (".", "'"):
            body = raw[1:].lstrip()
            if body.startswith(('\\"', '"')) or not body:
                continue
            parts = body.split(None, 1)
            macro, rest = parts[0], (parts[1] if len(parts) > 1 else "")
            if macro in ("de", "de1", "am", "ig"):
                if macro != "ig" and rest.split():
                    defined.add(rest.split()[0])
                skip_until = ".." if macro != "ig" or not rest.strip() else "." + rest.strip()
                continue
            args = _args(rest)
            if macro in ("TH", "Dt"):
                if args:
                    th = f"{args[0]}({args[1]})" if len(args) > 1 else args[0]
                continue
            if macro in ("SH", "Sh", "SS", "Ss"):
                level = 1 if macro in ("SH", "Sh") else 2
                if args:
                    out.heading(level, " ".join(args))
                    in_name = level == 1 and " ".join(args).upper() == "NAME"
                else:
                    pending_heading = level
                continue
            if macro in ("nf", "EX", "Bd"):
                fill = False
            elif macro in ("fi", "EE", "Ed"):
                fill = True
            elif macro == "br":
                out.add("\n")
                continue
            if macro in _BREAKS:
                out.add("\n\n")
                if macro == "IP" and args:
                    out.add(args[0] + "\n")
                tag_next = macro in ("TP", "TQ")
                continue
            if macro in _IGNORED or macro in defined:
                continue
            if not args and (macro in _JOINED or macro in _SPACED):
                continue  # applies to the next line, which is read as text
            if macro in _JOINED:
                line = "".join(args)
            elif macro == "Nd":
                line = "- " + " ".join(args)
            elif macro == "Fl":
                line = " ".join("-" + a for a in args) if args else "-"
            elif macro == "OP":
                line = "[" + " ".join(args) + "]"
            elif macro in _SPACED or macro[:1].isupper():
                line = " ".join(args)
            else:
                continue  # an unknown low-level request
        else:
            line = unescape(raw)
        if pending_heading:
            out.heading(pending_heading, line)
            in_name = pending_heading == 1 and line.strip().upper() == "NAME"
            pending_heading = 0
            continue
        if in_name and line.strip():
            name_lines.append(line.strip())
        if not line.strip():
            out.add("\n\n" if fill else "\n")
        else:
            out.add(line + ("\n" if tag_next or not fill else " "))
        tag_next = False
    sections = out.finish()
    title = " ".join(name_lines) or th
    return title, sections


# ---- rendered man text ------------------------------------------------------------------------

_HEADER = re.compile(r"^(\S+\(\w+\))\s.*\s\1\s*$")
_CAPS_HEADING = re.compile(r"^[A-Z][A-Z0-9 ,/&()'-]{0,58}[A-Z0-9)]$|^[A-Z]$")
_SUBHEADING = re.compile(r"^ {2,4}\S")
_BROKEN_WORD = re.compile(r"(\w)\u2010\n[ \t]*(\w)")
_JUSTIFIED = re.compile(r"(?<=\S)  +(?=\S)")


def parse_rendered(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``(title, sections)`` of a man page as a terminal shows it."""
    text = strip_overstrike(text).replace("\r\n", "\n")
    text = _BROKEN_WORD.sub(r"\1\2", text)  # words hyphenated across lines
    lines = [_JUSTIFIED.sub(" ", line) for line in text.split("\n")]
    page_id = ""
    for line in lines[:5]:
        m = _HEADER.match(line.strip())
        if m:
            page_id = m.group(1)
            break
    out = Outline()
    body: list[str] = []
    name_lines: list[str] = []
    section = ""

    def flush() -> None:
        if body:
            out.add(textwrap.dedent("\n".join(body)) + "\n")
            body.clear()

    for i, line in enumerate(lines):
        stripped = line.strip()
        if page_id and (stripped.startswith(page_id) or stripped.endswith(page_id)):
            continue  # running header or footer
        if _CAPS_HEADING.match(line):
            flush()
            section = stripped
            out.heading(1, stripped)
            continue
        if (
            _SUBHEADING.match(line)
            and (i == 0 or not lines[i - 1].strip())
            and i + 1 < len(lines)
            and _indent(lines[i + 1]) > _indent(line)
        ):
            flush()
            out.heading(2, stripped)
            continue
        if section == "NAME" and stripped:
            name_lines.append(stripped)
        body.append(line)
    flush()
    sections = out.finish()
    return " ".join(name_lines) or page_id, sections


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" ")) if line.strip() else -1
