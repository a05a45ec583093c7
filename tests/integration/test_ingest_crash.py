"""Crash safety: kill -9 ingestion at random points; a re-run gives the uninterrupted store."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kb_helpers import make_corpus, mutate_corpus

WORKER = Path(__file__).with_name("ingest_worker.py")


def _ingest(home: Path, corpus: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(WORKER), "ingest", str(home), "crashkb", str(corpus)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.splitlines()[-1])


def _dump(home: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(WORKER), "dump", str(home), "crashkb"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout)


def _killed_run(home: Path, corpus: Path, delay: float) -> bool:
    """Start an ingestion, kill -9 it ``delay`` s after it is ready; True if it was killed."""
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), "ingest", str(home), "crashkb", str(corpus)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", line
    time.sleep(delay)
    killed = proc.poll() is None
    if killed:
        proc.kill()
    proc.wait(timeout=60)
    return killed


def test_kill_9_at_random_points_then_rerun_equals_uninterrupted_run(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", n_files=30)
    ref, crash = tmp_path / "ref", tmp_path / "crash"
    rng = random.Random(20261129)
    kills = 0
    for phase in ("first ingestion", "after edits, deletions, copies and moves"):
        if phase != "first ingestion":
            mutate_corpus(corpus)
        summary = _ingest(ref, corpus)
        duration = max(summary["seconds"], 0.2)
        for _ in range(8):
            kills += _killed_run(crash, corpus, rng.uniform(0.0, duration * 1.2))
        resumed = _ingest(crash, corpus)
        assert resumed["failed"] == []
        expected, got = _dump(ref), _dump(crash)
        assert got == expected, phase
        # And the resumed store is complete: a further run has nothing to do.
        again = _ingest(crash, corpus)
        assert again["added"] == again["updated"] == again["removed"] == 0
        assert again["chunks_added"] == again["chunks_removed"] == 0
    assert kills >= 8, "too few runs were actually killed mid-way to prove anything"
