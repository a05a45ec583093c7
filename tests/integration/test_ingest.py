"""Incremental ingestion into a real embedded Chroma, with FakeEmbeddings for speed."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pytest
from kb_helpers import make_corpus

from llamachain.errors import EmbeddingMismatchError, KnowledgeBaseError
from llamachain.knowledge import KnowledgeBase
from llamachain.settings import Settings
from llamachain.testing import FakeEmbeddings


def _kb(home: Path, name: str = "kbt", **kw: object) -> KnowledgeBase:
    settings = Settings(home=home, embedding_batch_size=8, chunk_overlap=8)
    emb = kw.pop("embeddings", None) or FakeEmbeddings(max_chunk_tokens=48)
    return KnowledgeBase(name, settings=settings, embeddings=emb, **kw)  # type: ignore[arg-type]


def _chunks(kb: KnowledgeBase) -> dict[str, dict]:
    got = kb.vectorstore.collection.get(include=["metadatas"])
    return dict(zip(got["ids"], got["metadatas"], strict=True))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return make_corpus(tmp_path / "corpus", n_files=12)


def test_first_run_ingests_every_file_with_metadata(tmp_path: Path, corpus: Path) -> None:
    kb = _kb(tmp_path / "home")
    s = kb.ingest([corpus])
    assert (s.added, s.updated, s.skipped, s.removed, s.failed) == (12, 0, 0, 0, [])
    chunks = _chunks(kb)
    assert s.chunks_added == len(chunks) > 12
    assert s.chunks_embedded == len({m["text_hash"] for m in chunks.values()})
    sources = {m["source"] for m in chunks.values()}
    assert sources == {str(p) for p in corpus.rglob("*") if p.is_file()}
    md = [m for m in chunks.values() if m["file_type"] == "md"]
    assert md and all(m["heading"] for m in md), "markdown chunks keep their section heading"
    for m in chunks.values():
        assert m["file_name"] == os.path.basename(m["source"])
        assert m["sources"] == [m["source"]]
        assert m["n_tokens"] <= 48
    assert kb.stats()["files"] == 12


def test_unchanged_rerun_does_no_work(tmp_path: Path, corpus: Path) -> None:
    emb = FakeEmbeddings(max_chunk_tokens=48)
    kb = _kb(tmp_path / "home", embeddings=emb)
    kb.ingest([corpus])
    before, calls = _chunks(kb), emb.calls
    s = kb.ingest([corpus])
    assert (s.added, s.updated, s.skipped, s.removed) == (0, 0, 12, 0)
    assert s.chunks_added == s.chunks_embedded == s.chunks_removed == 0
    assert emb.calls == calls
    assert _chunks(kb) == before


def test_chunk_ids_are_deterministic_across_knowledge_bases(tmp_path: Path, corpus: Path) -> None:
    a, b = _kb(tmp_path / "a"), _kb(tmp_path / "b", name="other")
    a.ingest([corpus])
    b.ingest([corpus])
    assert set(_chunks(a)) == set(_chunks(b))


def test_changed_file_is_replaced_and_unchanged_text_is_not_re_embedded(
    tmp_path: Path, corpus: Path
) -> None:
    emb = FakeEmbeddings(max_chunk_tokens=48)
    kb = _kb(tmp_path / "home", embeddings=emb)
    kb.ingest([corpus])
    target = max(corpus.rglob("*.txt"), key=lambda p: p.stat().st_size)
    old_ids = {i for i, m in _chunks(kb).items() if m["source"] == str(target)}
    target.write_text(target.read_text() + "\n\nA brand new closing paragraph about zebras.\n")
    s = kb.ingest([corpus])
    assert (s.added, s.updated, s.skipped) == (0, 1, 11)
    new = {i: m for i, m in _chunks(kb).items() if m["source"] == str(target)}
    assert not old_ids & set(new), "a new content gets new chunk ids"
    assert any("zebras" in d.page_content for d in kb.vectorstore.get_by_ids(list(new)))
    assert all(i in new or i not in _chunks(kb) for i in old_ids), "old chunks are gone"
    assert s.chunks_reused > 0 and s.chunks_embedded < s.chunks_added
    assert s.chunks_removed == len(old_ids)
    assert kb.stats()["contents"] == 12


def test_deleted_file_is_removed(tmp_path: Path, corpus: Path) -> None:
    kb = _kb(tmp_path / "home")
    kb.ingest([corpus])
    gone = sorted(corpus.rglob("*.md"))[0]
    n_gone = sum(1 for m in _chunks(kb).values() if m["source"] == str(gone))
    gone.unlink()
    s = kb.ingest([corpus])
    assert (s.removed, s.skipped) == (1, 11)
    assert s.chunks_removed == n_gone
    assert all(m["source"] != str(gone) for m in _chunks(kb).values())
    assert kb.stats()["files"] == 11


def test_identical_content_is_stored_once_with_both_sources(tmp_path: Path, corpus: Path) -> None:
    kb = _kb(tmp_path / "home")
    original = sorted(corpus.rglob("*.txt"))[0]
    copy = corpus / "zz-copy.txt"
    shutil.copyfile(original, copy)
    kb.ingest([corpus])
    chunks = [m for m in _chunks(kb).values() if str(original) in m["sources"]]
    assert chunks and all(m["sources"] == sorted([str(original), str(copy)]) for m in chunks)
    assert kb.stats()["contents"] == 12 and kb.stats()["files"] == 13
    copy.unlink()
    s = kb.ingest([corpus])
    assert s.removed == 1 and s.chunks_removed == 0
    chunks = [m for m in _chunks(kb).values() if str(original) in m["sources"]]
    assert chunks and all(m["sources"] == [str(original)] for m in chunks)


def test_unreadable_and_unsupported_files_are_reported_and_skipped(
    tmp_path: Path, corpus: Path
) -> None:
    (corpus / "binary.txt").write_bytes(b"\x00\x01\x02garbage\x00" * 50)
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    kb = _kb(tmp_path / "home")
    s = kb.ingest([corpus])
    failed = dict(s.failed)
    assert set(failed) == {str(corpus / "binary.txt"), str(corpus / "broken.pdf")}
    assert all(reason for reason in failed.values())
    assert s.added == 12
    # Failed files are not recorded, so they are retried (and reported) next time.
    s2 = kb.ingest([corpus])
    assert set(dict(s2.failed)) == set(failed) and s2.skipped == 12


def test_a_missing_path_is_an_error_and_changes_nothing(tmp_path: Path, corpus: Path) -> None:
    kb = _kb(tmp_path / "home")
    kb.ingest([corpus])
    before = _chunks(kb)
    with pytest.raises(KnowledgeBaseError, match="no such file"):
        kb.ingest([corpus / "typo"])
    assert _chunks(kb) == before


def test_changing_the_chunk_size_recuts_without_leftovers(tmp_path: Path, corpus: Path) -> None:
    kb = _kb(tmp_path / "home")
    kb.ingest([corpus])
    big = set(_chunks(kb))
    s = kb.ingest([corpus], chunk_tokens=24)
    small = _chunks(kb)
    assert s.updated == 12 and len(small) > len(big)
    assert all(m["n_tokens"] <= 24 for m in small.values())
    assert not big & set(small) or all(small[i]["n_tokens"] <= 24 for i in big & set(small))


def test_another_embedding_model_is_a_clear_error(tmp_path: Path, corpus: Path) -> None:
    _kb(tmp_path / "home").ingest([corpus])
    other = _kb(tmp_path / "home", embeddings=FakeEmbeddings(dimension=32))
    with pytest.raises(EmbeddingMismatchError):
        other.ingest([corpus])


def test_two_ingestions_at_once_are_refused(tmp_path: Path, corpus: Path) -> None:
    kb = _kb(tmp_path / "home")
    lock = kb.settings.kb_dir / "locks" / "kbt.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(KnowledgeBaseError, match="another ingestion"):
            kb.ingest([corpus])


def test_progress_is_reported(tmp_path: Path, corpus: Path) -> None:
    seen = []
    _kb(tmp_path / "home").ingest([corpus], progress=seen.append)
    assert seen and seen[-1].files_done == seen[-1].files_total == 12
    assert seen[-1].chunks > 0
    assert [p.files_done for p in seen] == sorted(p.files_done for p in seen)


def test_list_stats_delete(tmp_path: Path, corpus: Path) -> None:
    kb = _kb(tmp_path / "home")
    kb.ingest([corpus])
    listed = KnowledgeBase.list(kb.settings)
    assert [r["name"] for r in listed] == ["kbt"]
    assert listed[0]["embedding_model"] == "fake-embeddings-64"
    kb.delete()
    assert KnowledgeBase.list(kb.settings) == []
    with pytest.raises(KnowledgeBaseError, match="no knowledge base named"):
        _kb(tmp_path / "home", create=False)


def test_include_and_exclude(tmp_path: Path, corpus: Path) -> None:
    kb = _kb(tmp_path / "home")
    s = kb.ingest([corpus], include=["**/*.md"])
    assert s.added == 4
    s = kb.ingest([corpus], exclude=["**/*.html"])
    assert s.added == 4  # the txt files; md unchanged; html excluded
    assert s.removed == 0
