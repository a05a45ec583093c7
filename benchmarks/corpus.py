"""The benchmark corpus: the documentation of the Pallets projects, and its question set.

The corpus is the ``docs/`` tree of six BSD-3-Clause licensed source distributions on PyPI --
Flask, Werkzeug, Jinja, Click, ItsDangerous and MarkupSafe, at pinned versions: 181 pages of
reStructuredText and Markdown (about 0.95 MB of text), the documentation a web developer would
feed a knowledge base.  Nothing is committed: on first use it is fetched with
``pip download --no-binary :all:`` (the sdists are checked against pinned SHA-256 digests),
and only the documentation pages are unpacked, to::

    ~/.cache/llamachain/corpora/pallets-docs-1/<project>/<page path under docs/>

(``$XDG_CACHE_HOME`` is honoured.)  Later runs find it there and download nothing.

The question set ``benchmarks/data/pallets-docs-questions.jsonl`` has one JSON object per line::

    {"id": "q01", "question": "...", "answers": ["short answer", "alt form"],
     "source": "flask/quickstart.rst"}

``source`` is relative to the corpus root; unanswerable questions have ``"answers": []`` and
``"source": null``.  ``--check-questions`` verifies that every answer is stated in its source
page.

    .venv/bin/python benchmarks/corpus.py                   # locate or fetch; print the path
    .venv/bin/python benchmarks/corpus.py --check-questions # and check the question set
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

NAME = "pallets-docs"
VERSION = "1"  # bump when the pinned set or the unpacking rules change
SUFFIXES = (".rst", ".md")
HERE = Path(__file__).resolve().parent
QUESTIONS = HERE / "data" / f"{NAME}-questions.jsonl"
MARKER = ".corpus.json"  # written last; hidden, so neither loader ingests it

Log = Callable[[str], None]


@dataclass(frozen=True)
class Sdist:
    project: str  # the directory name inside the corpus
    requirement: str  # what pip is asked for
    sha256: str


PINNED: tuple[Sdist, ...] = (
    Sdist(
        "flask", "flask==3.1.3", "0ef0e52b8a9cd932855379197dd8f94047b359ca0a78695144304cb45f87c9eb"
    ),
    Sdist(
        "werkzeug",
        "werkzeug==3.1.9",
        "55ca7c70a75689be937aa27f8ff4b018f06ff4838fc73045560bf0f5a1291060",
    ),
    Sdist(
        "jinja", "jinja2==3.1.6", "0137fb05990d35f1275a587e9aee6d56da821fc83491a0fb838183be43f66d6d"
    ),
    Sdist(
        "click", "click==8.5.1", "9bbfada76703fd1d784b83eea012e3e8c6a001a876543ef104fa56aaaeb072b4"
    ),
    Sdist(
        "itsdangerous",
        "itsdangerous==2.2.0",
        "e0050c0b7da1eea53ffaf149c0cfbb5c6e2e2b69c4bef22c81fa6eb73e5f6173",
    ),
    Sdist(
        "markupsafe",
        "markupsafe==3.0.4",
        "2e9ad7dd851bf45fab9f75cbff4cb493fee9979e8d8c7c9c3ee119022518edd6",
    ),
)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llamachain" / "corpora"


def default_path() -> Path:
    return cache_root() / f"{NAME}-{VERSION}"


def corpus_files(root: Path) -> list[Path]:
    """The pages of a corpus directory: every non-hidden file, sorted."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def ensure_corpus(path: Path | None = None, *, log: Log = _stderr) -> Path:
    """Return the corpus directory, fetching and unpacking it first if it is missing.

    ``path`` given and not the default location: it must already exist (a corpus of your own).
    """
    return fetch_corpus(
        NAME, VERSION, PINNED, "BSD-3-Clause (each project's docs/license page)", path, log
    )


def fetch_corpus(
    name: str,
    version: str,
    pinned: Sequence[Sdist],
    license: str,
    path: Path | None,
    log: Log,
) -> Path:
    """The corpus ``name-version`` of the ``pinned`` sdists' docs pages, fetched on first use
    into the cache; ``path`` other than that location: an existing corpus of your own."""
    default = cache_root() / f"{name}-{version}"
    root = Path(path).expanduser().resolve() if path else default
    if root != default.resolve() and root != default:
        if not root.is_dir():
            raise SystemExit(f"corpus directory {root} does not exist")
        log(f"corpus: using {root} ({len(corpus_files(root))} files)")
        return root
    marker = root / MARKER
    if marker.is_file():
        info = json.loads(marker.read_text(encoding="utf-8"))
        log(f"corpus: {name}-{version} found at {root} ({info['files']} files)")
        return root
    log(f"corpus: {name}-{version} not found at {root}; fetching the pinned sdists with pip")
    _install(root, name, version, pinned, license, log)
    return root


def _install(
    root: Path, name: str, version: str, pinned: Sequence[Sdist], license: str, log: Log
) -> None:
    """Download, verify and unpack into a scratch directory, then move it into place."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=f".{name}-") as tmp:
        downloads, staging = Path(tmp) / "sdists", Path(tmp) / "corpus"
        staging.mkdir()
        sources = []
        for sd in pinned:
            archive = _download(sd, downloads, log)
            n = _unpack_docs(archive, staging / sd.project)
            if n == 0:
                raise SystemExit(f"{archive.name} holds no docs pages; refusing to build a corpus")
            log(f"corpus: {sd.requirement}: {n} pages from {archive.name}")
            sources.append({"project": sd.project, "sdist": archive.name, "sha256": sd.sha256})
        files = corpus_files(staging)
        info = {
            "name": name,
            "version": version,
            "files": len(files),
            "chars": sum(len(p.read_text(encoding="utf-8")) for p in files),
            "sources": sources,
            "license": license,
        }
        (staging / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if root.exists():  # a partial directory without the marker: replace it
            shutil.rmtree(root)
        staging.rename(root)
    log(f"corpus: {name}-{version} ready at {root} ({info['files']} files, {info['chars']} chars)")


def _download(sd: Sdist, dest: Path, log: Log) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.iterdir())
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += ["--disable-pip-version-check", "-q", "-d", str(dest), sd.requirement]
    log(f"corpus: $ {' '.join(cmd[2:])}")
    done = subprocess.run(cmd, capture_output=True, text=True)
    new = sorted(set(dest.iterdir()) - before)
    if done.returncode != 0 or len(new) != 1:
        raise SystemExit(
            f"pip could not download {sd.requirement} (exit {done.returncode}):\n"
            f"{done.stderr.strip()[-2000:]}\nCheck that PyPI is reachable, or pass --corpus DIR."
        )
    digest = hashlib.sha256(new[0].read_bytes()).hexdigest()
    if digest != sd.sha256:
        raise SystemExit(
            f"{new[0].name}: sha256 {digest} is not the pinned {sd.sha256}; refusing to use it"
        )
    return new[0]


def _unpack_docs(archive: Path, dest: Path) -> int:
    """Copy ``<top>/docs/**/*.{rst,md}`` out of an sdist into ``dest``; return the count."""
    n = 0
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts
            if (
                not member.isfile()
                or len(parts) < 3
                or parts[1] != "docs"
                or PurePosixPath(member.name).suffix not in SUFFIXES
                or any(p in ("..", "") or p.startswith(".") for p in parts[2:])
            ):
                continue
            target = dest.joinpath(*parts[2:])
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None
            target.write_bytes(src.read())
            n += 1
    return n


# --- the question set -------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answers: tuple[str, ...]
    source: str | None  # relative to the corpus root; None: not answerable from the corpus

    @property
    def answerable(self) -> bool:
        return self.source is not None


def load_questions(path: Path = QUESTIONS) -> list[Question]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            out.append(Question(obj["id"], obj["question"], tuple(obj["answers"]), obj["source"]))
        except (ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"{path}:{n}: not a question record ({e})") from e
    return out


def _norm(text: str) -> str:
    """Lower case, markup quotes dropped, whitespace collapsed: how answers are matched."""
    text = re.sub(r"[`*\\]", "", text.lower())
    return re.sub(r"\s+", " ", text).strip()


def _title(text: str) -> str:
    """The first heading of an rst or md page."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# "):
            return line[2:].strip()
        if (
            i + 1 < len(lines)
            and line.strip()
            and re.fullmatch(r"([=\-~^*#+])\1{2,}", lines[i + 1].strip())
            and not re.fullmatch(r"([=\-~^*#+])\1{2,}", line.strip())
        ):
            return line.strip()
    return ""


def check_questions(questions: Iterable[Question], root: Path) -> tuple[list[str], list[str]]:
    """Return (problems, notes).  Problems make the set unusable; notes are for the author."""
    questions = list(questions)
    problems: list[str] = []
    notes: list[str] = []
    ids = [q.id for q in questions]
    problems += [f"duplicate id {i}" for i in sorted({i for i in ids if ids.count(i) > 1})]
    texts = [_norm(q.question) for q in questions]
    problems += [
        f"duplicate question {t!r}" for t in sorted({t for t in texts if texts.count(t) > 1})
    ]
    pages = {str(p.relative_to(root).as_posix()): p for p in corpus_files(root)}
    normed = {rel: _norm(p.read_text(encoding="utf-8")) for rel, p in pages.items()}
    naming = 0
    for q in questions:
        if not q.question.strip().endswith("?"):
            problems.append(f"{q.id}: the question does not end with '?'")
        if q.source is None:
            if q.answers:
                problems.append(f"{q.id}: unanswerable (source null) but has answers")
            continue
        if not q.answers:
            problems.append(f"{q.id}: has a source but no answers")
            continue
        if q.source not in pages:
            problems.append(f"{q.id}: source {q.source!r} is not a page of the corpus")
            continue
        body = normed[q.source]
        missing = [a for a in q.answers if _norm(a) not in body]
        if len(missing) == len(q.answers):
            problems.append(f"{q.id}: no answer is stated in {q.source}: {missing}")
        elif missing:
            notes.append(f"{q.id}: alternative answers not verbatim in the page: {missing}")
        elsewhere = [r for r, b in normed.items() if r != q.source and _norm(q.answers[0]) in b]
        if elsewhere:
            notes.append(f"{q.id}: answer also appears in {len(elsewhere)} other page(s)")
        stem = PurePosixPath(q.source).stem.replace("_", " ").replace("-", " ").lower()
        title = _norm(_title(pages[q.source].read_text(encoding="utf-8")))
        asked = _norm(q.question)
        if (len(stem) > 3 and stem in asked) or (title and title in asked):
            naming += 1
    answerable = sum(q.answerable for q in questions)
    if answerable < 40:
        problems.append(f"only {answerable} answerable questions; want at least 40")
    if len(questions) - answerable < 10:
        problems.append(f"only {len(questions) - answerable} unanswerable questions; want 10")
    if naming > answerable / 2:
        problems.append(f"{naming} of {answerable} questions name their page's title or file")
    notes.append(
        f"{answerable} answerable + {len(questions) - answerable} unanswerable questions; "
        f"{naming} name their page's title or file name"
    )
    return problems, notes


def corpus_cli(
    argv: list[str] | None,
    description: str,
    default: Path,
    ensure: Callable[[Path | None], Path],
    questions: Path,
) -> int:
    """``--corpus DIR`` and ``--check-questions [FILE]``: the command line of a corpus module."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--corpus", type=Path, help=f"corpus directory (default: {default})")
    ap.add_argument(
        "--check-questions",
        nargs="?",
        const=questions,
        type=Path,
        metavar="FILE",
        help=f"verify a question set against the corpus (default file: {questions.name})",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="print the checker's notes")
    args = ap.parse_args(argv)
    root = ensure(args.corpus)
    print(root)
    if args.check_questions is None:
        return 0
    problems, notes = check_questions(load_questions(args.check_questions), root)
    for note in notes if args.verbose else notes[-1:]:
        _stderr(f"note: {note}")
    for p in problems:
        _stderr(f"PROBLEM: {p}")
    _stderr(f"{args.check_questions}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    return corpus_cli(argv, __doc__.split("\n\n")[0], default_path(), ensure_corpus, QUESTIONS)


if __name__ == "__main__":
    sys.exit(main())
