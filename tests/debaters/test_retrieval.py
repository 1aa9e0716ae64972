"""Tests for debaters.retrieval: passage splitting, BM25 selection under a budget, rendering."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from debaters.retrieval import (
    EXCERPT_SEPARATOR,
    Passage,
    estimate_tokens,
    render_excerpts,
    score_passages,
    select_passages,
    split_passages,
)

_ROOT = Path(__file__).resolve().parents[2]
# The project ships its own copy; the shared one beside the checkout is the fallback.
_DATA_CANDIDATES = (
    _ROOT / "arena" / "data" / "quality-questions.jsonl",
    _ROOT.parent / "shared" / "data" / "quality-questions.jsonl",
)


def _quality_rows() -> list[dict[str, object]]:
    for path in _DATA_CANDIDATES:
        if path.exists():
            with path.open(encoding="utf-8") as handle:
                return [json.loads(line) for line in handle if line.strip()]
    pytest.fail("quality-questions.jsonl is in neither arena/data nor ../shared/data: the product ships it")


@pytest.fixture(scope="module")
def quality_row() -> dict[str, object]:
    return _quality_rows()[0]


@pytest.fixture(scope="module")
def story(quality_row: dict[str, object]) -> str:
    source = quality_row["source"]
    assert isinstance(source, dict)
    text = source["text"]
    assert isinstance(text, str)
    return text


@pytest.fixture(scope="module")
def query(quality_row: dict[str, object]) -> str:
    answers = quality_row["answers"]
    assert isinstance(answers, list)
    return f"{quality_row['question']} {answers[0]}"


def _char_counter(text: str) -> int:
    # Deliberately unlike the default: about 4 characters a token, so not additive over joins.
    return (len(text) + 3) // 4


def _synthetic_story() -> str:
    filler = (
        "The village lay quiet under the hills and the people went about their work. "
        "Nobody spoke of the harvest or the weather that year. "
    )
    paragraphs = [filler * 3 for _ in range(12)]
    paragraphs[7] = (
        "In the cellar the old clockmaker kept a brass orrery that showed every planet. "
        "The orrery was his secret, and he wound it each night before sleeping. "
        + filler * 2
    )
    return "\n\n".join(paragraphs)


def test_it_splits_a_real_story_into_whole_sentence_passages(story: str) -> None:
    passages = split_passages(story, target_words=120)

    assert len(passages) > 20
    assert [p.index for p in passages] == list(range(len(passages)))
    for p in passages:
        assert p.text == story[p.start : p.end]
        assert p.text == p.text.strip()
    for before, after in zip(passages, passages[1:]):
        assert before.end <= after.start
        # Nothing but whitespace between passages: a sentence never straddles two of them.
        assert story[before.end : after.start].strip() == ""
        assert re.search(r"""[.!?…]["'”’)\]]*$""", before.text) or "\n\n" in story[
            before.end : after.start
        ]
    assert "".join("".join(p.text.split()) for p in passages) == "".join(story.split())
    assert max(len(p.text.split()) for p in passages) <= 240


def test_it_does_not_end_sentences_after_abbreviations_or_initials() -> None:
    # Each six-word sentence fills a passage, so a false sentence end would show: its first
    # fragment would join the short sentence before it.
    text = (
        'They talked. Mr. Smith met Dr. L. Jones. He smiled. "Where?" he asked the old man. '
        "Then left."
    )

    passages = split_passages(text, target_words=6)

    assert [p.text for p in passages] == [
        "They talked.",
        "Mr. Smith met Dr. L. Jones.",
        "He smiled.",
        '"Where?" he asked the old man.',
        "Then left.",
    ]


def test_it_cuts_a_run_on_sentence_longer_than_twice_the_target() -> None:
    text = " ".join(f"word{i}" for i in range(100))

    passages = split_passages(text, target_words=10)

    assert [len(p.text.split()) for p in passages] == [10] * 10
    assert " ".join(p.text for p in passages) == text


def test_it_returns_no_passages_for_blank_text() -> None:
    assert split_passages("  \n\n \t") == []
    assert select_passages("   ", "anything", 100) == []


@pytest.mark.parametrize("budget", [150, 400, 1000, 2500])
def test_it_respects_the_budget_with_the_default_counter(
    story: str, query: str, budget: int
) -> None:
    chosen = select_passages(story, query, budget)

    assert chosen
    assert estimate_tokens(render_excerpts(chosen)) <= budget
    assert sum(estimate_tokens(p.text) for p in chosen) <= budget


@pytest.mark.parametrize("budget", [150, 400, 1000, 2500])
def test_it_respects_the_budget_with_a_custom_counter(story: str, query: str, budget: int) -> None:
    chosen = select_passages(story, query, budget, count_tokens=_char_counter)

    assert chosen
    assert _char_counter(render_excerpts(chosen)) <= budget
    # The budget is used, not wasted: nothing else would have fitted after the last pick, or
    # close to all of it is spent.
    assert _char_counter(render_excerpts(chosen)) > budget * 0.5


def test_it_returns_passages_in_story_order(story: str, query: str) -> None:
    chosen = select_passages(story, query, 1500)

    assert len(chosen) > 3
    assert [p.start for p in chosen] == sorted(p.start for p in chosen)
    assert [p.index for p in chosen] == sorted(p.index for p in chosen)
    for p in chosen:
        assert p.text == story[p.start : p.end]


def test_it_selects_the_passage_holding_the_querys_rare_words() -> None:
    story = _synthetic_story()

    chosen = select_passages(story, "What did the clockmaker keep in the cellar? An orrery", 100)

    assert len(chosen) == 1
    assert "orrery" in chosen[0].text


def test_it_selects_the_real_passage_that_mentions_a_rare_query_word(story: str) -> None:
    passages = split_passages(story)
    holders = [p for p in passages if "bathroom" in p.text.lower()]
    assert len(holders) == 1

    chosen = select_passages(story, "What did Maitland find behind the door? A bathroom", 300)

    assert holders[0].index in [p.index for p in chosen]


def test_it_ranks_rare_terms_above_common_ones_and_matches_plurals() -> None:
    passages = split_passages(_synthetic_story())

    scores = score_passages(passages, "clockmakers orreries village")

    best = max(range(len(passages)), key=lambda i: scores[i])
    assert "orrery" in passages[best].text
    assert all(s >= 0.0 for s in scores)
    assert score_passages(passages, "the of and") == [0.0] * len(passages)


def test_it_is_deterministic_and_breaks_ties_by_position(story: str, query: str) -> None:
    first = select_passages(story, query, 800, count_tokens=_char_counter)

    assert select_passages(story, query, 800, count_tokens=_char_counter) == first
    # No query term matches anywhere: every score ties, so the story's opening comes first.
    no_match = select_passages(story, "zzzzqx", 400)
    assert [p.index for p in no_match][:2] == [0, 1]


def test_it_truncates_the_best_passage_at_a_word_boundary_for_a_tiny_budget(
    story: str,
) -> None:
    query = "What did Maitland find behind the door? A bathroom"
    whole = select_passages(story, query, 300)
    best = next(p for p in whole if "bathroom" in p.text.lower())

    [cut] = select_passages(story, query, 10)

    assert cut.index == best.index
    assert cut.start == best.start
    assert best.text.startswith(cut.text)
    assert cut.text == story[cut.start : cut.end]
    assert story[cut.end].isspace()
    assert estimate_tokens(cut.text) <= 10
    assert estimate_tokens(best.text[: cut.end - cut.start + 1] + "x x") > 10


def test_it_returns_nothing_when_not_one_word_fits(story: str, query: str) -> None:
    assert select_passages(story, query, 0) == []
    assert select_passages(story, query, 5, count_tokens=lambda text: 10 + len(text)) == []


def test_it_returns_the_whole_story_when_the_budget_covers_it(story: str, query: str) -> None:
    budget = estimate_tokens(story)

    assert select_passages(story, query, budget) == [Passage(0, 0, len(story), story)]
    assert len(select_passages(story, query, budget - 1)) > 1


def test_it_marks_gaps_between_non_adjacent_passages() -> None:
    a = Passage(0, 0, 5, "Alpha")
    b = Passage(1, 7, 11, "Beta")
    d = Passage(3, 20, 25, "Delta")

    rendered = render_excerpts([a, b, d])

    assert rendered == f"Alpha\n\nBeta\n\n{EXCERPT_SEPARATOR}\n\nDelta"
    assert render_excerpts([]) == ""
    assert render_excerpts([d]) == "Delta"
