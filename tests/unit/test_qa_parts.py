"""The grounded-QA building blocks without a model: evidence, relevance, packing, citations."""

from __future__ import annotations

import pytest

from llamachain.qa import citations as cit
from llamachain.qa.evidence import best_passages, split_units
from llamachain.qa.memory import ConversationMemory
from llamachain.qa.packing import pack
from llamachain.qa.relevance import assess, coverage, everyday_words, unknown_names

RST = """\
Missing EOF Marker
==================

If you call ``read()`` on the input stream your application will hang. The input stream
has no end-of-file marker. This is intentional, e.g. for streaming.

- first item of a list
- second item, which goes on
  over two lines

    def view():
        return stream_with_context(generate())

| a | b |
"""


def test_split_units_keeps_code_and_items_whole_and_drops_rules():
    units = split_units(RST)
    assert "Missing EOF Marker" not in units  # headings are not quotable
    assert not any(set(u) <= set("= ") for u in units)
    assert "The input stream has no end-of-file marker." in units
    assert any(u.startswith("This is intentional, e.g. for streaming") for u in units)
    assert "- first item of a list" in units
    assert "- second item, which goes on over two lines" in units
    assert "def view(): return stream_with_context(generate())" in units
    assert "| a | b |" in units


def test_best_passage_is_the_matching_sentence_with_its_neighbours():
    texts = [
        "Unrelated text about templates. Templates have blocks.",
        RST,
    ]
    [p] = best_passages("Why does calling read() on the input stream hang?", texts)
    assert p.chunk == 1
    assert "hang" in p.sentence
    assert "no end-of-file marker" in p.text  # the next sentence comes along
    two = best_passages("input stream hang", texts, top=2)
    assert len(two) == 2 and two[0].text != two[1].text


def test_best_passage_can_use_an_embedder_and_handles_nothing():
    calls = []

    def embed(q, sentences):
        calls.append(len(sentences))
        return [1.0 if "marker" in s else 0.0 for s in sentences]

    [p] = best_passages("what is absent?", [RST], embed=embed)
    assert calls and "marker" in p.text
    assert best_passages("anything", ["", "   "]) == []


def test_coverage_weights_rare_words_and_unknown_names_are_found():
    df = {"prometheus": 0, "metric": 3, "flask": 90, "export": 10, "default": 40}
    texts = ["Flask exports nothing by default. Metrics are up to you."]
    low = coverage("Which Prometheus metrics does Flask export by default?", texts, 100, df)
    high = coverage("Which metrics does Flask export by default?", texts, 100, df)
    assert 0 < low < high <= 1.0
    assert unknown_names("Which Prometheus metrics does Flask export?", df) == ["Prometheus"]
    assert unknown_names("Which metrics does Flask export?", {"flask": 3, "metric": 2}) == []
    assert unknown_names("How do I use OAuth2 and CORS?", {}) == ["OAuth2", "CORS"]
    # the first word of a question is capitalised anyway
    assert unknown_names("Where is the config?", {"config": 1}) == []
    rel = assess("Which Prometheus metrics?", texts, (100, df))
    assert rel.unknown_names == ("Prometheus",) and rel.weak(0.1)
    local = assess("flask metrics", texts, None)
    assert local.coverage == 1.0 and not local.weak(0.5)


def test_unseen_everyday_words_do_not_count_against_coverage():
    # a small store that never saw "suggested" or "library": the asker's paraphrase
    df = {"generat": 2, "secret": 5, "key": 6, "gzip": 0}
    texts = ["Use secrets.token_bytes to generate a secret key."]
    question = "Which library function is suggested for generating secret keys?"
    everyday = {"which", "library", "function", "suggested", "for", "generating", "secret"}
    counted = coverage(question, texts, 20, df)
    paraphrase = coverage(question, texts, 20, df, lambda w: w.lower() in everyday)
    assert counted < 0.4 < paraphrase == 1.0
    # an unseen word that is not everyday English still weighs the most
    gzip = coverage("Does it gzip keys?", texts, 20, df, lambda w: w.lower() in everyday)
    assert gzip < 0.4
    # the bundled embedder's vocabulary supplies the everyday words
    words = everyday_words()
    assert {"whether", "suggested", "library"} <= words and "mypy" not in words


def test_pack_fits_the_budget_skips_what_does_not_fit_and_cuts_a_lone_giant():
    def count(t):
        return len(t.split())

    rendered = ["a " * 50, "b " * 200, "c " * 30, "d " * 40]
    p = pack(rendered, 100, count)
    assert p.indices == (0, 2) and p.total <= 100
    assert pack(rendered, 100, count, max_chunks=1).indices == (0,)
    giant = pack(["word " * 500], 40, count)
    assert giant.truncated and giant.total <= 40 and giant.texts[0].endswith("…")
    assert pack(rendered, 0, count).indices == ()


def test_markers_are_kept_only_for_packed_sources():
    text, cited = cit.keep_valid("Use X [1] and Y [3], or Z [1, 2].", [1, 2])
    assert cited == [1, 2]
    assert "[3]" not in text and "[1]" in text and "[2]" in text
    assert cit.markers("see [2][1] and 【3】") == [2, 1, 3]
    assert cit.strip_markers("Use X [1].") == "Use X."


@pytest.mark.parametrize(
    "reply",
    [
        "The documents do not say.",
        "The sources don't mention it.",
        "This is not mentioned in the context.",
        "I don't know.",
        "There is no information about that.",
    ],
)
def test_abstentions_are_recognised(reply):
    assert cit.says_not_found(reply)


def test_an_answer_is_not_an_abstention():
    assert not cit.says_not_found("Set `WERKZEUG_DEBUG_PIN` to a number [1].")


def test_support_is_high_for_copied_specifics_and_low_for_invented_ones():
    sources = ["An explicit PIN can be set with the ``WERKZEUG_DEBUG_PIN`` environment variable."]
    q = "Which variable sets the PIN?"
    assert cit.support("Set `WERKZEUG_DEBUG_PIN` [1].", sources, q) >= 0.9
    assert cit.support("Use FLASK_DEBUG_PASSWORD=1234 with hashlib.sha512.", sources, q) < 0.5
    assert cit.support("", sources) == 1.0


def test_structured_schema_limits_citations_to_the_packed_numbers():
    schema = cit.structured_schema([1, 2, 3])
    assert schema["properties"]["citations"]["items"]["enum"] == [1, 2, 3]
    assert schema["required"] == ["answer", "citations"]


def test_memory_rewrites_only_follow_ups_and_checks_the_rewrite():
    m = ConversationMemory(max_turns=2)
    assert not m.needs_rewrite("How do I set the PIN?")  # nothing to follow up on
    m.add("How do I set the debugger PIN?", "How do I set the debugger PIN?", "Use X [1].")
    assert m.needs_rewrite("And how do I turn it off?")
    assert not m.needs_rewrite("Which port does the server use?")
    good = m.accept("And how do I turn it off?", "How do I turn the debugger PIN off?")
    assert good == "How do I turn the debugger PIN off?"
    bad = m.accept("And how do I turn it off?", "Bananas are yellow and tasty and long.")
    assert bad == "How do I set the debugger PIN? And how do I turn it off?"
    msgs = m.rewrite_messages("And how do I turn it off?")
    assert msgs[0]["role"] == "system" and "debugger PIN" in msgs[1]["content"]
    for i in range(3):
        m.add(f"q{i}", f"q{i}", "a")
    assert len(m) == 2
    m.clear()
    assert len(m) == 0


def test_replies_are_tidied_to_a_short_answer():
    assert cit.tidy_reply("The answer is: Use `X` [1]. It works. More text. Even more.") == (
        "Use `X` [1]. It works."
    )
    assert cit.tidy_reply("The answer to this question is:\n\n`contextvars`") == "`contextvars`"
    assert cit.tidy_reply("It is:\n\n- `a`\n\nand then b. c.") == "It is: - `a` and then b."
    assert cit.tidy_reply("word " * 100).endswith("…")


def test_a_reply_that_restates_the_question_has_no_novelty():
    q = "In what order are the secret keys tried during validation?"
    assert cit.novelty("In what order are secret keys tried during validation?", q) == 0.0
    assert cit.novelty("From the newest to the oldest.", q) == 1.0


def test_quotes_drop_markup_but_keep_names():
    from llamachain.qa.evidence import readable

    text = (
        "Use :func:`~flask.stream_with_context` (see :ref:`Streaming <streaming>`), "
        "``x = 1`` and [the guide](https://example.org/guide). .. py:data:: SESSION_X Sets it."
    )
    assert readable(text) == (
        "Use `flask.stream_with_context` (see `Streaming`), `x = 1` and the guide. "
        "SESSION_X Sets it."
    )


def test_a_streaming_reply_is_complete_after_the_kept_sentences():
    assert not cit.reply_complete("The answer is: it uses")
    assert not cit.reply_complete("It is X. And")  # one sentence done
    assert not cit.reply_complete("It is:\n\nX. Y")  # a colon line does not count
    assert cit.reply_complete("It is X. It works. More")
    assert cit.reply_complete("It is X.\n\nIt works.\n\nMore", sentences=2)
    assert cit.reply_complete("One. Two", sentences=1)


def test_the_streamed_view_is_the_shown_reply_as_it_grows():
    pieces = ["The", " answer", " is", ":", " It", " listens", " on port", " 5000", " [", "1",
              "]", " [", "7", "]", ".", "\n\n", "Use", " --port", " to", " change", " it", ".",
              " Also", " see"]  # fmt: skip
    view, text, streamed = cit.ReplyView(2, [1, 2]), "", []
    for p in pieces:
        text += p
        streamed.append(view.update(text))
        assert "answer" not in "".join(streamed)  # the opener is never shown
        assert "[7" not in "".join(streamed)  # nor a marker naming no packed source
    streamed.append(view.update(text, final=True))
    shown = cit.tidy_reply(cit.keep_valid(text, [1, 2])[0], sentences=2)
    assert "".join(streamed) == shown == "It listens on port 5000 [1]. Use --port to change it."
    # a whole (or structured) reply passes through
    raw = cit.ReplyView(0, [1])
    assert raw.update('{"answer": "x"') == '{"answer": "x"'


def test_a_multi_word_name_the_retrieved_chunks_never_mention_is_unknown():
    from llamachain.qa.relevance import missing_phrases, name_phrases

    q = "How do you deploy a Flask application to AWS Lambda?"
    assert name_phrases(q) == ["AWS Lambda"]
    assert name_phrases("Do Flask, Jinja and Click work together?") == []  # a list, no name
    assert missing_phrases(q, ["Deploy to AWS Elastic Beanstalk.", "A lambda filter."])
    assert not missing_phrases(q, ["Run it on AWS  Lambda with an adapter."])
    # the store knows every word, but no chunk names the thing: abstain
    from llamachain.qa.evidence import terms

    df = dict.fromkeys(terms(q), 3)
    packed = ["Deploy a Flask application to AWS Elastic Beanstalk."]
    rel = assess(q, packed, (60, df), [*packed, "A lambda filter."])
    assert rel.unknown_names == ("AWS Lambda",) and rel.weak(0.0)
