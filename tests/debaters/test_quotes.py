"""Tests for debaters.quotes: extraction, normalised exact matching, fuzzy scores, segments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from debaters.quotes import (
    QuoteCheck,
    SourceIndex,
    check_quotes,
    extract_quotes,
    normalize,
    quote_word_count,
    segments,
)

_ROOT = Path(__file__).resolve().parents[2]
# The project ships its own copy; the shared one beside the checkout is the fallback.
_DATA_CANDIDATES = (
    _ROOT / "arena" / "data" / "quality-questions.jsonl",
    _ROOT.parent / "shared" / "data" / "quality-questions.jsonl",
)

_SOURCE = (
    "He pressed it; the door slid aside and disappeared. Maitland glanced in at\n"
    "the disclosed bathroom, then went over to look at the other door.\n\n"
    '"Don\'t move," said Ingrid--quietly. It was then—what? Blackout....\n\n'
    "There was no button beside this one, nor any other visible means of opening it."
)


def _quality_story() -> str:
    for path in _DATA_CANDIDATES:
        if path.exists():
            with path.open(encoding="utf-8") as handle:
                row = json.loads(handle.readline())
            text = row["source"]["text"]
            assert isinstance(text, str)
            return text
    pytest.fail("quality-questions.jsonl is in neither arena/data nor ../shared/data: the product ships it")


@pytest.fixture(scope="module")
def story() -> str:
    return _quality_story()


@pytest.fixture(scope="module")
def story_index(story: str) -> SourceIndex:
    return SourceIndex(story)


@pytest.fixture
def index() -> SourceIndex:
    return SourceIndex(_SOURCE)


def test_it_verifies_an_exact_quote_from_a_real_story(story: str, story_index: SourceIndex) -> None:
    sentence = "It was absolutely incredible that anyone had managed to abduct him from"
    assert sentence in story

    verified, similarity, span = story_index.check(sentence)

    assert verified
    assert similarity == 1.0
    assert span is not None
    assert story[span[0] : span[1]] == sentence


def test_it_verifies_a_quote_that_differs_in_case_punctuation_and_line_breaks(
    index: SourceIndex,
) -> None:
    verified, similarity, span = index.check(
        "MAITLAND glanced in at the disclosed bathroom then went over"
    )

    assert verified and similarity == 1.0
    assert span is not None
    assert _SOURCE[span[0] : span[1]] == (
        "Maitland glanced in at\nthe disclosed bathroom, then went over"
    )


def test_it_verifies_curly_quotes_and_dashes_against_ascii_ones(index: SourceIndex) -> None:
    assert index.check("\u201cDon\u2019t move,\u201d said Ingrid\u2014quietly.")[0]
    # The source's em dash matches an ASCII hyphen, spaced or not.
    assert index.check("It was then - what? Blackout...")[0]
    assert index.check("then-what")[0]


def test_it_verifies_real_story_text_with_an_em_dash(story: str, story_index: SourceIndex) -> None:
    assert "then—what? Blackout" in story

    assert story_index.check("and then -- what? blackout")[0]


def test_it_does_not_verify_an_invented_quote(story_index: SourceIndex) -> None:
    verified, similarity, span = story_index.check(
        "The aliens landed on the moon and ate cheese sandwiches with Maitland."
    )

    assert not verified
    assert 0.0 < similarity < 1.0
    assert span is None


def test_it_scores_a_paraphrase_high_but_does_not_verify_it(story_index: SourceIndex) -> None:
    real = (
        "Maitland glanced in at the disclosed bathroom, then went over to look at the other door."
    )
    paraphrase = "Maitland looked in at the bathroom, then went over to look at the other door."
    invented = "The aliens landed on the moon and ate cheese sandwiches with Maitland."

    assert story_index.check(real)[0]
    verified, similarity, _ = story_index.check(paraphrase)

    assert not verified
    assert 0.75 <= similarity < 1.0
    assert similarity > story_index.check(invented)[1]


def test_it_requires_a_match_to_start_and_end_on_word_boundaries(index: SourceIndex) -> None:
    verified, similarity, span = index.check("ressed it; the door slid asid")

    assert not verified
    assert span is None
    assert 0.9 < similarity < 1.0


def test_it_does_not_verify_a_quote_stitched_from_distant_fragments(
    story: str, story_index: SourceIndex
) -> None:
    first = "It was absolutely incredible that anyone had managed to abduct him"
    second = "There was no button beside this one, nor any other visible means"
    assert first in story and second in story

    verified, similarity, span = story_index.check(f"{first} {second}")

    assert not verified
    assert similarity < 1.0
    assert span is None


def test_it_does_not_verify_a_long_stitched_quote(story: str, story_index: SourceIndex) -> None:
    words = story.split()
    stitched = " ".join(words[200:300] + words[3000:3100])

    verified, similarity, _ = story_index.check(stitched)

    assert not verified
    assert similarity < 0.9


def test_it_verifies_a_very_long_exact_quote(story: str, story_index: SourceIndex) -> None:
    words = story.split()
    long_quote = " ".join(words[1000:2500])

    verified, similarity, span = story_index.check(long_quote)

    assert verified and similarity == 1.0
    assert span is not None and normalize(story[span[0] : span[1]]) == normalize(long_quote)


def test_it_bounds_the_cost_of_a_very_long_unverified_quote(
    story: str, story_index: SourceIndex
) -> None:
    words = story.split()
    altered = " ".join(w.replace("e", "a") for w in words[1000:2500])

    verified, similarity, _ = story_index.check(altered)

    assert not verified
    assert 0.0 < similarity < 1.0


def test_it_does_not_verify_a_quote_holding_the_whole_story_and_more(
    story: str, story_index: SourceIndex
) -> None:
    verified, similarity, span = story_index.check(story + " And then the moon exploded.")

    assert not verified
    assert similarity < 1.0
    assert span is None
    assert story_index.check(story)[0]


@pytest.mark.parametrize("inner", ["", "   ", "\n\t", "...!?", "\u201c\u201d\u2014"])
def test_it_never_verifies_an_empty_or_punctuation_only_quote(
    index: SourceIndex, inner: str
) -> None:
    [check] = check_quotes(f"Look: <quote>{inner}</quote>.", index)

    assert check.text == inner
    assert not check.verified
    assert check.similarity == 0.0
    assert check.source_span is None


def test_it_keeps_markup_inside_a_quote_literal(index: SourceIndex) -> None:
    speech = 'See <quote><script>alert("x")</script><b>the door</b></quote> now.'

    [check] = check_quotes(speech, index)
    parts = segments(speech, [check])

    assert check.text == '<script>alert("x")</script><b>the door</b>'
    assert not check.verified
    assert [p["text"] for p in parts] == ["See ", check.text, " now."]


def test_it_ignores_an_unclosed_quote_tag_at_the_end() -> None:
    speech = "First <quote>the door slid aside</quote> and then <quote>the other door"

    quotes = extract_quotes(speech)

    assert [text for _, _, text in quotes] == ["the door slid aside"]


def test_it_ignores_a_stray_closing_tag() -> None:
    assert extract_quotes("nothing </quote> here") == []


def test_it_accepts_tags_in_any_case_and_with_whitespace() -> None:
    speech = "A < Quote >one</QUOTE> b <quote\n>two< / quote > c"

    quotes = extract_quotes(speech)

    assert [text for _, _, text in quotes] == ["one", "two"]
    assert [speech[s:e] for s, e, _ in quotes] == [
        "< Quote >one</QUOTE>",
        "<quote\n>two< / quote >",
    ]


def test_it_treats_nested_tags_literally() -> None:
    speech = "<quote>a <quote>b</quote> c</quote>"

    quotes = extract_quotes(speech)

    assert quotes == [(0, len("<quote>a <quote>b</quote>"), "a <quote>b")]


def test_it_finds_no_quote_in_many_unclosed_tags() -> None:
    # 50,000 open tags: a backtracking pattern would not come back from this (the linear scan does).
    assert extract_quotes("<quote>" * 50_000) == []


def test_it_reports_offsets_of_the_whole_element(index: SourceIndex) -> None:
    speech = "He says <quote>the door slid aside</quote> but <quote>no door</quote>."

    checks = check_quotes(speech, index)

    assert [speech[c.start : c.end] for c in checks] == [
        "<quote>the door slid aside</quote>",
        "<quote>no door</quote>",
    ]
    assert [c.verified for c in checks] == [True, False]


def test_it_round_trips_checks_through_json(index: SourceIndex) -> None:
    speech = "<quote>the door slid aside</quote> and <quote>a purple door</quote>"
    checks = check_quotes(speech, index)

    restored = [QuoteCheck.from_dict(json.loads(json.dumps(c.to_dict()))) for c in checks]

    assert restored == checks
    assert restored[0].source_span is not None
    assert _SOURCE[restored[0].source_span[0] : restored[0].source_span[1]] == (
        "the door slid aside"
    )


@pytest.mark.parametrize(
    "broken",
    [
        {"text": 1, "start": 0, "end": 5, "verified": True, "similarity": 1.0, "source_span": None},
        {"text": "x", "start": True, "end": 5, "verified": True, "similarity": 1.0},
        {"text": "x", "start": 0, "end": 5, "verified": "yes", "similarity": 1.0},
        {"text": "x", "start": 0, "end": 5, "verified": True, "similarity": "high"},
        {"text": "x", "start": 0, "end": 5, "verified": True, "similarity": 1, "source_span": [1]},
    ],
)
def test_it_rejects_malformed_stored_checks(broken: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        QuoteCheck.from_dict(broken)


def test_it_tiles_the_speech_with_segments(index: SourceIndex) -> None:
    speech = (
        "Opening. <quote>the door slid aside</quote><quote></quote> middle "
        "<QUOTE >invented words</ quote>\nend <quote>unclosed"
    )
    checks = check_quotes(speech, index)

    parts = segments(speech, checks)

    assert "".join(speech[p["start"] : p["end"]] for p in parts) == speech
    assert [p["start"] for p in parts[1:]] == [p["end"] for p in parts[:-1]]
    assert [p["kind"] for p in parts] == ["text", "quote", "quote", "text", "quote", "text"]
    assert all(p["text"] == speech[p["start"] : p["end"]] for p in parts if p["kind"] == "text")
    quotes = [p for p in parts if p["kind"] == "quote"]
    assert [(q["text"], q["verified"]) for q in quotes] == [
        ("the door slid aside", True),
        ("", False),
        ("invented words", False),
    ]


def test_it_reproduces_a_canonical_speech_from_segment_texts_and_tags(
    story_index: SourceIndex,
) -> None:
    speech = (
        "My opponent is wrong. <quote>He pivoted to inspect the room.</quote> Also "
        "<quote>There was a thump.</quote> and <quote>he was on the moon</quote>"
    )

    parts = segments(speech, check_quotes(speech, story_index))

    rebuilt = "".join(
        f"<quote>{p['text']}</quote>" if p["kind"] == "quote" else p["text"] for p in parts
    )
    assert rebuilt == speech


def test_it_gives_one_text_segment_for_a_speech_without_quotes() -> None:
    assert segments("no quotes here", []) == [
        {"kind": "text", "text": "no quotes here", "start": 0, "end": 14}
    ]
    assert segments("", []) == []


def test_it_rejects_checks_that_do_not_belong_to_the_speech(index: SourceIndex) -> None:
    speech = "<quote>a</quote> <quote>b</quote>"
    checks = check_quotes(speech, index)

    with pytest.raises(ValueError):
        segments(speech, list(reversed(checks)))
    with pytest.raises(ValueError):
        segments("a different speech entirely", checks)


def test_it_counts_the_words_inside_quotes(index: SourceIndex) -> None:
    speech = (
        "Words outside. <quote>the door slid aside</quote> <quote>then—what?</quote> "
        "<quote>...</quote>"
    )

    assert quote_word_count(check_quotes(speech, index)) == 6


def test_it_normalises_unicode_forms_case_and_punctuation() -> None:
    assert normalize("  \uff28\uff25\uff2c\uff2c\uff2f,  Stra\u00dfe!\n\u2018fi\ufb01\u2019 ") == (
        "hello strasse fifi"
    )
    assert normalize("don\u2019t\u2014stop\u2026now") == "dont stop now"
    assert normalize("don\u00b4t `it\u2032s\u201d") == "dont its"
    assert normalize("soft\u00adhyphen zero\u200bwidth") == "softhyphen zerowidth"
    assert normalize("cafe\u0301 caf\u00e9") == "caf\u00e9 caf\u00e9"
    assert normalize("$5 + 3 = <8>") == "$5 + 3 = <8>"
    assert normalize("") == ""


@pytest.mark.parametrize(
    "text",
    [
        _SOURCE,
        "Caf\u00e9 \uff21 \u2014 e\u0301t\u00e9\u2019s   \u00df\u2026end",
        "plain ascii, text.",
    ],
)
def test_it_normalises_the_index_exactly_as_it_normalises_quotes(text: str) -> None:
    assert SourceIndex(text).normalized == normalize(text)


def test_it_maps_matches_back_to_original_offsets_through_combining_marks() -> None:
    source = "The cafe\u0301 was closed\u2014for good."
    index = SourceIndex(source)

    verified, _, span = index.check("CAF\u00c9 WAS CLOSED - for")

    assert verified
    assert span is not None
    assert source[span[0] : span[1]] == "cafe\u0301 was closed\u2014for"


def test_it_checks_twenty_quotes_against_a_real_story_in_milliseconds(
    story: str, story_index: SourceIndex
) -> None:
    words = story.split()
    quotes = [" ".join(words[i * 250 : i * 250 + 15]) for i in range(10)]
    quotes += [f"Maitland said that the {i} robots were hiding the truth" for i in range(10)]
    speech = " ".join(f"<quote>{q}</quote>" for q in quotes)

    checks = check_quotes(speech, story_index)

    assert [c.verified for c in checks] == [True] * 10 + [False] * 10
