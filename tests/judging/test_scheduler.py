"""The scheduler's pure core: exposure rules and the choice of the next debate, without a database."""

from __future__ import annotations

import random

import pytest

from judging import scheduler
from judging.scheduler import Candidate, ExposureRules, JudgeState


def _candidate(debate_id: int, *, question: int | None = None, story: str | None = None,
               cell: tuple[str, str, int] = ("debate", "a|b", 0), target: int = 2, filled: int = 0,
               gold: bool = False) -> Candidate:
    return Candidate(
        debate_id=debate_id,
        question=f"q{question if question is not None else debate_id}",
        story=story if story is not None else f"story-{debate_id}",
        cell=cell,
        target=target,
        filled=filled,
        gold=gold,
    )


def test_it_names_every_rule_a_debate_would_break() -> None:
    judge = JudgeState(1, debates=frozenset({7}), questions=frozenset({"q70"}), stories=frozenset({"s"}),
                       read_stories=frozenset({"s"}), study_count=3)
    broken = scheduler.violations(_candidate(7, question=70, story="s"), judge, ExposureRules(per_judge_cap=3))
    assert broken == ["same-debate", "same-question", "same-story", "read-story", "per-judge-cap"]
    assert scheduler.violations(_candidate(8), judge, ExposureRules()) == []


def test_it_allows_the_same_story_only_when_the_study_says_so() -> None:
    judge = JudgeState(1, questions=frozenset({"q1"}), stories=frozenset({"s"}))
    other_question_same_story = _candidate(2, question=2, story="s")
    assert scheduler.violations(other_question_same_story, judge, ExposureRules()) == ["same-story"]
    assert scheduler.violations(other_question_same_story, judge, ExposureRules(distinct_story=False)) == []
    # The question rule holds whatever the study says.
    same_question = _candidate(3, question=1, story="t")
    assert scheduler.violations(same_question, judge, ExposureRules(distinct_story=False)) == ["same-question"]


def test_it_never_gives_a_story_the_judge_read_as_a_debater() -> None:
    judge = JudgeState(1, read_stories=frozenset({"s"}))
    assert scheduler.choose([_candidate(1, story="s")], judge, ExposureRules(distinct_story=False)) is None


def test_it_picks_the_debate_furthest_from_its_target() -> None:
    judge = JudgeState(1)
    candidates = [_candidate(1, filled=1), _candidate(2, filled=0), _candidate(3, target=3, filled=0)]
    assert [c.debate_id for c in scheduler.rank(candidates, judge, ExposureRules())] == [3, 2, 1]


def test_it_skips_debates_that_reached_their_target() -> None:
    assert scheduler.choose([_candidate(1, filled=2)], JudgeState(1), ExposureRules()) is None


def test_it_fills_the_emptier_cell_first_when_debates_are_equally_short() -> None:
    full_cell = ("debate", "a|b", 0)
    empty_cell = ("consultancy", "a|a", 1)
    candidates = [
        _candidate(1, cell=full_cell, filled=1), _candidate(2, cell=full_cell, filled=0),
        _candidate(3, cell=empty_cell, filled=0), _candidate(4, cell=empty_cell, filled=0),
    ]
    # Debates 2, 3 and 4 all miss two verdicts; 3 and 4 are in the cell with none yet.
    first = scheduler.choose(candidates, JudgeState(9), ExposureRules())
    assert first is not None and first.cell == empty_cell


def test_it_mixes_in_a_gold_check_when_one_is_due() -> None:
    rules = ExposureRules(gold_every=3)
    candidates = [_candidate(1), _candidate(2, gold=True)]
    assert scheduler.choose(candidates, JudgeState(1, study_count=0), rules).debate_id == 1  # type: ignore[union-attr]
    assert scheduler.choose(candidates, JudgeState(1, study_count=2), rules).debate_id == 2  # type: ignore[union-attr]
    # Without a due check, a gold debate is never handed out in place of a study debate.
    assert scheduler.choose([_candidate(2, gold=True)], JudgeState(1, study_count=0), rules) is None


def test_it_spreads_judges_who_ask_at_once_over_equal_debates() -> None:
    candidates = [_candidate(i) for i in range(1, 21)]
    firsts = {scheduler.choose(candidates, JudgeState(j), ExposureRules()).debate_id for j in range(20)}  # type: ignore[union-attr]
    assert len(firsts) > 5


def test_it_refuses_a_nonsense_cap() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ExposureRules(per_judge_cap=0)


def _random_study(rng: random.Random) -> list[Candidate]:
    stories = [f"story-{i}" for i in range(rng.randint(1, 6))]
    questions = {q: rng.choice(stories) for q in range(rng.randint(1, 10))}
    cells = [("debate", "x|y", 0), ("debate", "x|y", 1), ("consultancy", "x|x", 0)]
    candidates = []
    for debate_id in range(rng.randint(1, 25)):
        q = rng.choice(list(questions))
        candidates.append(_candidate(
            debate_id, question=q, story=questions[q], cell=rng.choice(cells),
            target=rng.randint(1, 4), gold=rng.random() < 0.1,
        ))
    return candidates


def test_no_schedule_ever_breaks_an_exposure_rule() -> None:
    """Property: whatever the study, the judges and the order they ask in, every debate handed out
    is allowed for its judge at the moment it is handed out, no debate gets more than its target,
    and no judge gets two debates on one question (nor one story, when the rule is on).

    A seeded random search (hypothesis is not among the project's dependencies): 400 studies, each
    scheduled until no judge can be given anything.
    """
    for seed in range(400):
        rng = random.Random(seed)
        candidates = {c.debate_id: c for c in _random_study(rng)}
        stories = sorted({c.story for c in candidates.values()})
        rules = ExposureRules(
            distinct_story=rng.random() < 0.7,
            per_judge_cap=rng.choice([None, 1, 2, 5]),
            gold_every=rng.choice([0, 0, 2, 3]),
        )
        judges = {
            j: JudgeState(j, read_stories=frozenset(rng.sample(stories, rng.randint(0, min(2, len(stories))))))
            for j in range(rng.randint(1, 8))
        }
        given: dict[int, list[Candidate]] = {j: [] for j in judges}
        active = list(judges)
        while active:
            j = rng.choice(active)
            choice = scheduler.choose(list(candidates.values()), judges[j], rules)
            if choice is None:
                active.remove(j)
                continue
            assert scheduler.violations(choice, judges[j], rules) == [], (seed, j, choice)
            assert choice.remaining > 0
            candidates[choice.debate_id], judges[j] = scheduler.take(choice, judges[j])
            given[j].append(choice)
        for j, debates in given.items():
            questions = [c.question for c in debates]
            assert len(questions) == len(set(questions)), seed
            if rules.distinct_story:
                assert len({c.story for c in debates}) == len(debates), seed
            assert not {c.story for c in debates} & judges[j].read_stories, seed
            if rules.per_judge_cap is not None:
                assert len(debates) <= rules.per_judge_cap, seed
        for c in candidates.values():
            assert c.filled <= c.target, seed


def test_a_tournaments_human_block_is_read_with_every_mistake_named() -> None:
    from judging.studies import HumanVerdicts, parse_human_verdicts

    problems: list[str] = []
    assert parse_human_verdicts(None, problems) is None and parse_human_verdicts(True, problems) == HumanVerdicts()
    read = parse_human_verdicts({"fraction": 0.25, "verdicts": 2, "mode": "live"}, problems)
    assert read == HumanVerdicts(fraction=0.25, verdicts=2, mode="live") and problems == []
    assert parse_human_verdicts(read.to_config(), problems) == read
    parse_human_verdicts({"fraction": 0, "verdicts": 0, "mode": "later", "colour": 1, "per_judge_cap": -1}, problems)
    assert len(problems) == 5
    assert any("human.fraction" in p for p in problems) and any("unknown key(s) colour" in p for p in problems)
