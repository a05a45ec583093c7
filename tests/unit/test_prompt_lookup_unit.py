"""The prompt-lookup draft finder, the parameter's validation and its LangChain pass-through."""

import pytest

from llamachain import ChatLlama, LlamaLLM
from llamachain._lc_common import CALL_KWARGS
from llamachain.engine import SamplingParams
from llamachain.engine._lookup import NgramDrafter
from llamachain.engine._speculative import next_limit
from llamachain.errors import ConfigError


def test_a_full_trigram_match_proposes_what_followed_it():
    d = NgramDrafter([5, 6, 7, 8, 9, 10, 11, 12, 5, 6, 7])
    assert d.draft(4) == [8, 9, 10, 11]
    assert d.draft(100) == [8, 9, 10, 11, 12, 5, 6, 7]  # runs to the end of the sequence


def test_the_longest_matching_ngram_wins_over_a_more_recent_shorter_one():
    # "6 7" occurs last at the end of [.., 1, 6, 7, 2]; "5 6 7" only at the start
    d = NgramDrafter([5, 6, 7, 8, 9, 1, 6, 7, 2, 3, 4, 5, 6, 7])
    assert d.draft(3) == [8, 9, 1]


def test_the_most_recent_occurrence_of_an_ngram_is_used():
    d = NgramDrafter([1, 2, 3, 10, 11, 1, 2, 3, 20, 21, 1, 2, 3])
    assert d.draft(3) == [20, 21, 1]


def test_a_shorter_match_earns_a_proportionally_shorter_draft():
    d = NgramDrafter([1, 2, 3, 4, 5, 6, 7, 8, 9, 99, 2, 3])  # only the bigram "2 3" matches
    assert d.draft(6) == [4, 5, 6, 7]
    assert d.draft(1) == [4]


def test_single_token_matches_are_not_drafted_by_default():
    assert NgramDrafter([1, 2, 3, 9, 3]).draft(6) == []
    assert NgramDrafter([1, 2, 3, 9, 3], min_ngram=1).draft(3) == [9]


def test_no_match_gives_an_empty_draft():
    assert NgramDrafter([1, 2, 3, 4]).draft(5) == []
    assert NgramDrafter().draft(5) == []
    assert NgramDrafter([1, 2, 1, 2]).draft(0) == []


def test_the_suffix_never_matches_itself():
    # the only "1 2" is the suffix itself: nothing earlier to copy from
    assert NgramDrafter([7, 1, 2]).draft(4) == []
    # a run of one token: the previous occurrence proposes the token once more
    assert NgramDrafter([4, 4, 4]).draft(3) == [4]


def test_extending_incrementally_equals_building_at_once():
    seq = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2, 6, 4, 3, 3, 8, 3]
    grown = NgramDrafter(seq[:5])
    for i in range(5, len(seq)):
        grown.append(seq[i])
        whole = NgramDrafter(seq[: i + 1])
        assert grown.draft(6) == whole.draft(6), i
    assert len(grown) == len(seq)


def test_generated_tokens_become_draftable():
    d = NgramDrafter([10, 11, 12])
    d.extend([20, 21, 22, 23, 20, 21])
    assert d.draft(3) == [22, 23]


def test_a_rejected_draft_shortens_the_next_one_to_what_was_accepted_plus_one():
    assert next_limit(6, drafted=6, agreed=2, max_draft=6) == 3
    assert next_limit(6, drafted=4, agreed=0, max_draft=6) == 1  # never below one token


def test_a_fully_accepted_draft_grows_the_next_one_back_up_to_the_maximum():
    limit = 1
    seen = []
    for _ in range(4):
        limit = next_limit(limit, drafted=limit, agreed=limit, max_draft=6)
        seen.append(limit)
    assert seen == [3, 5, 6, 6]
    # a short draft (the n-gram index found fewer tokens) that was fully accepted also grows
    assert next_limit(2, drafted=1, agreed=1, max_draft=6) == 4


def test_bad_ngram_bounds_are_rejected():
    with pytest.raises(ValueError):
        NgramDrafter(min_ngram=0)
    with pytest.raises(ValueError):
        NgramDrafter(min_ngram=4, max_ngram=3)


@pytest.mark.parametrize("bad", [-1, 33, 2.5, True, "6"])
def test_prompt_lookup_must_be_a_small_non_negative_int(bad):
    with pytest.raises(ConfigError, match="prompt_lookup"):
        SamplingParams(prompt_lookup=bad)


def test_prompt_lookup_defaults_to_off():
    assert SamplingParams().prompt_lookup == 0
    assert SamplingParams(prompt_lookup=6).prompt_lookup == 6


@pytest.mark.parametrize("cls", [ChatLlama, LlamaLLM])
def test_langchain_classes_pass_prompt_lookup_through(cls):
    model = cls(prompt_lookup=6, temperature=0)
    assert model.sampling_params(None, {}).prompt_lookup == 6
    assert model.sampling_params(None, {"prompt_lookup": 0}).prompt_lookup == 0
    assert "prompt_lookup" in CALL_KWARGS  # accepted per call by both classes
