import pytest
from hypothesis import given
from hypothesis import strategies as st

from llamachain.engine.generation import SamplingParams, StopMatcher
from llamachain.errors import ConfigError


def run(matcher: StopMatcher, pieces: list[str]) -> str:
    return "".join(matcher.feed(p) for p in pieces) + matcher.flush()


def expected(text: str, stops: list[str]) -> str:
    cut = [text.find(s) for s in stops if s and s in text]
    return text[: min(cut)] if cut else text


@given(
    text=st.text(alphabet="ab#\n", max_size=40),
    stops=st.lists(st.text(alphabet="ab#\n", min_size=1, max_size=4), max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=10),
)
def test_stop_matcher_is_independent_of_how_text_is_split(text, stops, cuts):
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    assert run(StopMatcher(stops), pieces) == expected(text, stops)


def test_a_longer_stop_starting_earlier_wins_over_a_match_further_on():
    # "#a" contains the stop "a", but "#aa" may still follow from position 0
    m = StopMatcher(["a", "#aa"])
    assert m.feed("#a") == "" and not m.stopped
    assert m.feed("a") == "" and m.stopped
    m = StopMatcher(["a", "#aa"])
    assert m.feed("#a") == "" and m.feed("b") == "#" and m.stopped
    m = StopMatcher(["a", "#aa"])
    assert m.feed("#a") == "" and m.flush() == "#" and m.stopped


def test_stop_matcher_holds_back_a_possible_prefix():
    m = StopMatcher(["###"])
    assert m.feed("answer #") == "answer "
    assert m.feed("#") == ""
    assert m.feed("x") == "##x"
    assert m.feed(" ###tail") == " "
    assert m.stopped


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_tokens": 0},
        {"temperature": -1},
        {"top_p": 0},
        {"top_p": 1.5},
        {"top_k": -1},
        {"min_p": 2},
        {"logprobs": 50},
        {"grammar": 'root ::= "a"', "json_schema": {}},
    ],
)
def test_sampling_params_reject_bad_values(kwargs):
    with pytest.raises(ConfigError):
        SamplingParams(**kwargs)


def test_with_stop_merges_without_duplicates():
    p = SamplingParams(stop=("a", "b")).with_stop(["b", "c", ""])
    assert p.stop == ("a", "b", "c")
