"""The held-out corpus: the documentation of the Falcon web framework, and its question set.

The first question set (``corpus.py``, the Pallets docs) is the one we tune on; this one exists
only to check that the tuning generalises.  The corpus is the ``docs/`` tree of one Apache-2.0
licensed source distribution on PyPI, ``falcon==4.4.0``: 72 pages of reStructuredText and
Markdown (about 0.5 MB of text).  Nothing is committed: on first use the sdist is fetched with
``pip download --no-binary :all:``, checked against a pinned SHA-256 digest, and only its
documentation pages are unpacked, to::

    ~/.cache/llamachain/corpora/falcon-docs-1/falcon/<page path under docs/>

(``$XDG_CACHE_HOME`` is honoured.)  A marker file is written last; later runs find it and
download nothing.

The question set ``benchmarks/data/falcon-docs-questions.jsonl`` has the same format as the
Pallets one, and ``--check-questions`` applies the same checks (see ``corpus.py``).

    .venv/bin/python benchmarks/heldout_corpus.py                   # locate or fetch; print it
    .venv/bin/python benchmarks/heldout_corpus.py --check-questions # and check the question set
"""

from __future__ import annotations

import sys
from pathlib import Path

try:  # run as a script: benchmarks/ is on sys.path
    from corpus import Log, Sdist, _stderr, cache_root, corpus_cli, fetch_corpus
except ImportError:  # imported as benchmarks.heldout_corpus
    from benchmarks.corpus import Log, Sdist, _stderr, cache_root, corpus_cli, fetch_corpus

NAME = "falcon-docs"
VERSION = "1"  # bump when the pinned sdist or the unpacking rules change
HERE = Path(__file__).resolve().parent
QUESTIONS = HERE / "data" / f"{NAME}-questions.jsonl"
LICENSE = "Apache-2.0 (the LICENSE file of the falcon sdist)"

PINNED = Sdist(
    "falcon", "falcon==4.4.0", "9f3ffbddc8baed4573295642eddb18a37eea37baba9f20c5be379c8b3d3d79e6"
)


def default_path() -> Path:
    return cache_root() / f"{NAME}-{VERSION}"


def ensure_corpus(path: Path | None = None, *, log: Log = _stderr) -> Path:
    """The corpus directory; on first use at the default location, fetch and unpack it.

    A ``path`` other than the default must name an existing directory (a corpus of your own).
    """
    return fetch_corpus(NAME, VERSION, [PINNED], LICENSE, path, log)


def main(argv: list[str] | None = None) -> int:
    description = (__doc__ or NAME).split("\n\n")[0]
    return corpus_cli(argv, description, default_path(), ensure_corpus, QUESTIONS)


if __name__ == "__main__":
    sys.exit(main())
