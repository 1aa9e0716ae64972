"""The pure core of the judge scheduler: which debates a judge may judge, and which one next.

No Django, no I/O: the claiming layer (``judging.studies``) reads the state from the database
into these dataclasses, asks :func:`rank` for this judge's preference order, and claims the first
debate in that order that still has a free slot. Everything here is a function of its arguments,
so the rules are tested without a database (tests/judging/test_scheduler.py), including a
property test that no schedule breaks an exposure rule.

Exposure rules (docs/judging.md; they follow Michael et al. 2023):

============== ===========================================================================
rule           a judge may not be given a debate when ...
============== ===========================================================================
same-debate    they already hold or judged this debate
same-question  they already judged (or hold) a debate on the same question, in any study
same-story     they already judged (or hold) a debate on the same story (study setting,
               on by default: once the reveal showed the gold answer, later verdicts on
               that story are contaminated)
read-story     they read the story as a debater or as an expert judge
per-judge-cap  they reached the study's cap of debates per judge
============== ===========================================================================

Choice among the eligible debates that still need verdicts (:func:`rank`):

1. a gold check, when one is due (every ``gold_every``-th debate of this judge in the study);
2. the debate furthest from its verdict target (most verdicts still missing, leases in flight
   counted as given);
3. the least filled cell (protocol × debater pairing × correct side), as a fraction of the
   cell's target, so a study's cells fill evenly;
4. a tie-break that is a stable hash of (judge, debate), so judges asking at the same moment
   spread over the pool instead of all trying the same debate first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

SAME_DEBATE = "same-debate"
SAME_QUESTION = "same-question"
SAME_STORY = "same-story"
READ_STORY = "read-story"
PER_JUDGE_CAP = "per-judge-cap"

RULE_TEXT = {
    SAME_DEBATE: "this judge already has this debate",
    SAME_QUESTION: "a judge never judges the same question twice",
    SAME_STORY: "a judge never judges the same story twice (once the reveal showed its gold answer)",
    READ_STORY: "a judge never judges a story they read as a debater or an expert",
    PER_JUDGE_CAP: "the study's cap of debates per judge is reached",
}


@dataclass(frozen=True)
class ExposureRules:
    """A study's exposure rules. ``per_judge_cap`` None means no cap; ``gold_every`` 0 means no
    gold checks are mixed in."""

    distinct_story: bool = True
    per_judge_cap: int | None = None
    gold_every: int = 0

    def __post_init__(self) -> None:
        if self.per_judge_cap is not None and self.per_judge_cap < 1:
            raise ValueError("the per-judge cap must be at least 1 (or empty for no cap)")
        if self.gold_every < 0:
            raise ValueError("gold_every must be 0 (no gold checks) or more")


Cell = tuple[str, str, int]


@dataclass(frozen=True)
class Candidate:
    """A debate of a study as the scheduler sees it.

    ``question`` and ``story`` are identities that hold across question sets (the question's
    fingerprint and the story's hash, ``arena.identity``); ``filled`` counts verdicts given plus
    leases in flight; ``cell`` is (protocol, debater pairing, correct side).
    """

    debate_id: int
    question: str
    story: str
    cell: Cell
    target: int
    filled: int
    gold: bool = False

    @property
    def remaining(self) -> int:
        return max(0, self.target - self.filled)


@dataclass(frozen=True)
class JudgeState:
    """What the rules need to know about one judge, across every study.

    ``debates``, ``questions`` and ``stories`` include debates the judge holds now (a lease or a
    hand assignment) as well as judged ones: holding a debate will show its gold. ``study_count``
    counts this study's debates the judge judged or holds.
    """

    judge_id: int
    debates: frozenset[int] = field(default_factory=frozenset)
    questions: frozenset[str] = field(default_factory=frozenset)
    stories: frozenset[str] = field(default_factory=frozenset)
    read_stories: frozenset[str] = field(default_factory=frozenset)
    study_count: int = 0


def violations(candidate: Candidate, judge: JudgeState, rules: ExposureRules) -> list[str]:
    """The exposure rules that giving ``candidate`` to ``judge`` would break (empty: allowed)."""
    broken: list[str] = []
    if candidate.debate_id in judge.debates:
        broken.append(SAME_DEBATE)
    if candidate.question in judge.questions:
        broken.append(SAME_QUESTION)
    if rules.distinct_story and candidate.story in judge.stories:
        broken.append(SAME_STORY)
    if candidate.story in judge.read_stories:
        broken.append(READ_STORY)
    if rules.per_judge_cap is not None and judge.study_count >= rules.per_judge_cap:
        broken.append(PER_JUDGE_CAP)
    return broken


def eligible(candidates: Iterable[Candidate], judge: JudgeState, rules: ExposureRules) -> list[Candidate]:
    """Candidates that still need verdicts and that no exposure rule keeps from ``judge``."""
    return [c for c in candidates if c.remaining > 0 and not violations(c, judge, rules)]


def cell_fill(candidates: Iterable[Candidate]) -> dict[Cell, float]:
    """Each cell's filled fraction of its target (verdicts and leases over verdicts needed)."""
    filled: dict[Cell, int] = {}
    target: dict[Cell, int] = {}
    for c in candidates:
        filled[c.cell] = filled.get(c.cell, 0) + min(c.filled, c.target)
        target[c.cell] = target.get(c.cell, 0) + c.target
    return {cell: filled[cell] / target[cell] if target[cell] else 1.0 for cell in target}


def _spread(judge_id: int, debate_id: int) -> int:
    digest = hashlib.blake2b(f"{judge_id}:{debate_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def gold_due(judge: JudgeState, rules: ExposureRules) -> bool:
    """Whether this judge's next debate in the study should be a gold check."""
    return rules.gold_every > 0 and (judge.study_count + 1) % rules.gold_every == 0


def rank(candidates: Sequence[Candidate], judge: JudgeState, rules: ExposureRules) -> list[Candidate]:
    """The eligible candidates in the order the judge should get them (best first).

    Gold checks are used only when one is due, and then come first; otherwise they are left out,
    so they never take the place of a study debate.
    """
    fill = cell_fill(c for c in candidates if not c.gold)
    pool = eligible(candidates, judge, rules)
    due = gold_due(judge, rules)
    gold = [c for c in pool if c.gold] if due else []
    regular = [c for c in pool if not c.gold]
    regular.sort(key=lambda c: (-c.remaining, fill.get(c.cell, 1.0), _spread(judge.judge_id, c.debate_id)))
    gold.sort(key=lambda c: (-c.remaining, _spread(judge.judge_id, c.debate_id)))
    return gold + regular


def choose(candidates: Sequence[Candidate], judge: JudgeState, rules: ExposureRules) -> Candidate | None:
    """The debate ``judge`` should judge now, or None when nothing is eligible."""
    ranked = rank(candidates, judge, rules)
    return ranked[0] if ranked else None


def take(candidate: Candidate, judge: JudgeState) -> tuple[Candidate, JudgeState]:
    """The state after ``judge`` claims ``candidate`` (used to simulate schedules)."""
    return (
        Candidate(
            candidate.debate_id, candidate.question, candidate.story, candidate.cell,
            candidate.target, candidate.filled + 1, candidate.gold,
        ),
        JudgeState(
            judge.judge_id,
            judge.debates | {candidate.debate_id},
            judge.questions | {candidate.question},
            judge.stories | {candidate.story},
            judge.read_stories,
            judge.study_count + 1,
        ),
    )
