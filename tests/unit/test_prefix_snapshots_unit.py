"""The bounded LRU of prefix snapshots, without a model (byte strings stand in for KV states)."""

import pytest

from llamachain.engine._snapshots import PrefixSnapshots, Snapshot, common_blocks
from llamachain.errors import ConfigError

BLOCK = 4


def snap(tokens, size=100):
    return Snapshot(tuple(tokens), b"x" * size, size)


def test_common_blocks_counts_whole_blocks_only():
    assert common_blocks([1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 0], 100, BLOCK) == 4
    assert common_blocks([1, 2, 3], [1, 2, 3], 100, BLOCK) == 0
    assert common_blocks(list(range(12)), list(range(12)), 9, BLOCK) == 8
    assert common_blocks([9, 2, 3, 4], [1, 2, 3, 4], 100, BLOCK) == 0


def test_best_picks_the_snapshot_sharing_the_most_blocks():
    s = PrefixSnapshots(8, 10_000)
    a = snap(range(8))  # 0..7
    b = snap([0, 1, 2, 3, 9, 9, 9, 9, 9, 9, 9, 9])
    s.add(a), s.add(b)
    prompt = [0, 1, 2, 3, 9, 9, 9, 9, 9, 9, 9, 9, 5, 5]
    assert s.best(prompt, limit=12, block=BLOCK) == (b, 12)
    assert s.best(prompt, limit=7, block=BLOCK)[1] == 4  # limited to the prompt's boundary
    assert s.best([7, 7, 7, 7, 7], limit=4, block=BLOCK) == (None, 0)


def test_a_snapshot_can_serve_a_prompt_that_shares_only_its_first_blocks():
    s = PrefixSnapshots(8, 10_000)
    a = snap(range(12))
    s.add(a)
    assert s.best([0, 1, 2, 3, 4, 5, 6, 7, 42, 43], limit=9, block=BLOCK) == (a, 8)


def test_covers_is_true_for_any_prefix_of_a_snapshot():
    s = PrefixSnapshots(8, 10_000)
    s.add(snap(range(8)))
    assert s.covers(range(4)) and s.covers(range(8))
    assert not s.covers(range(9)) and not s.covers([1, 2, 3, 4])


def test_adding_drops_snapshots_the_new_one_extends():
    s = PrefixSnapshots(8, 10_000)
    s.add(snap(range(4)))
    s.add(snap([0, 1, 2, 3, 7, 7, 7, 7]))
    s.add(snap(range(8)))
    assert len(s) == 2  # (0..3) is a prefix of both later ones
    assert s.stats()["tokens"] == 16


def test_count_bound_evicts_the_least_recently_used():
    s = PrefixSnapshots(2, 10_000)
    a, b, c = snap([1] * 4), snap([2] * 4), snap([3] * 4)
    s.add(a), s.add(b)
    s.used(a, 4)  # a is now more recent than b
    s.add(c)
    assert s.covers([1] * 4) and s.covers([3] * 4) and not s.covers([2] * 4)
    assert s.stats()["evictions"] == 1


def test_byte_bound_evicts_and_rejects_oversized_snapshots():
    s = PrefixSnapshots(8, 250)
    s.add(snap([1] * 4, 100)), s.add(snap([2] * 4, 100)), s.add(snap([3] * 4, 100))
    st = s.stats()
    assert st["count"] == 2 and st["bytes"] == 200 and st["evictions"] == 1
    assert not s.add(snap([4] * 4, 251))
    assert len(s) == 2


def test_covers_refreshes_recency():
    s = PrefixSnapshots(2, 10_000)
    s.add(snap([1] * 4)), s.add(snap([2] * 4))
    assert s.covers([1] * 4)
    s.add(snap([3] * 4))
    assert s.covers([1] * 4) and not s.covers([2] * 4)


def test_hits_clear_and_configure():
    s = PrefixSnapshots(8, 10_000)
    a = snap(range(8))
    s.add(a)
    s.used(a, 8)
    st = s.stats()
    assert (st["hits"], st["hit_tokens"], st["saves"]) == (1, 8, 1)
    s.clear()
    assert s.stats()["count"] == 0 and s.stats()["bytes"] == 0 and s.stats()["hits"] == 1
    s.add(snap([1] * 4)), s.add(snap([2] * 4)), s.add(snap([3] * 4))
    s.configure(1, 10_000)  # shrinking evicts at once
    assert len(s) == 1 and s.covers([3] * 4)
    s.configure(0, 10_000)
    assert not s.enabled and len(s) == 0 and not s.add(snap([5] * 4))


def test_discard_removes_one_snapshot():
    s = PrefixSnapshots(8, 10_000)
    a = snap(range(4))
    s.add(a)
    s.discard(a)
    s.discard(a)  # twice is fine
    assert len(s) == 0


@pytest.mark.parametrize(("count", "nbytes"), [(-1, 10), (1, -10)])
def test_negative_bounds_are_config_errors(count, nbytes):
    with pytest.raises(ConfigError, match="prefix_snapshot"):
        PrefixSnapshots(count, nbytes)
