"""Actions the runner takes for the protocols of issue 4: record draws and choices, commit a turn
with what the referee and Constitutional AI produced, pause for a judge's question.

Each one holds the debate's row lock (``select_for_update``) and checks the lease, like
``arena.services.commit_turn``, so a worker that lost its debate cannot write to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from arena import services
from arena.models import Candidate, Debate, JudgeQuestion, Revision, Turn

WAITING_KEY = "waiting_for_judge"
# When the pause began: the judge's question deadline counts from here (judging/deadlines.py).
WAITING_SINCE_KEY = "waiting_since"


def _locked(debate_id: int, owner: str) -> Debate | None:
    return Debate.objects.select_for_update().filter(pk=debate_id, lease_owner=owner).first()


def record_settings(debate_id: int, owner: str, updates: Mapping[str, object]) -> bool:
    """Add keys to ``Debate.settings`` (a draw the protocol made, e.g. the consultant's side).

    Keys already set (not null) are left alone: a draw is recorded once and never changes.
    """
    with transaction.atomic():
        debate = _locked(debate_id, owner)
        if debate is None:
            return False
        merged = dict(debate.settings)
        for key, value in updates.items():
            if merged.get(key) is None:
                merged[key] = value
        if merged != debate.settings:
            Debate.objects.filter(pk=debate_id).update(settings=merged)
        return True


def record_open_choice(debate_id: int, owner: str, choice: Mapping[str, object]) -> bool:
    """Record an open protocol's choice and seat the protagonist on the side it chose.

    The protagonist is the profile created as ``debater_a``. When it chooses answer 1 the two
    profiles are swapped, so that ``debater_a`` argues ``answers[0]`` as everywhere else; the
    choice (with ``swapped``) is kept in ``settings["open_choice"]``. Only before any turn exists,
    and only once.
    """
    side = choice.get("side")
    if side not in (0, 1):
        raise ValueError("the choice must be answer 0 or 1")
    with transaction.atomic():
        debate = _locked(debate_id, owner)
        if debate is None:
            return False
        if "open_choice" in debate.settings or Turn.objects.filter(debate_id=debate_id).exists():
            return True
        swapped = side == 1 and debate.debater_a_id != debate.debater_b_id
        settings = {**debate.settings, "open_choice": {**choice, "swapped": swapped}}
        fields: dict[str, object] = {"settings": settings}
        if swapped:
            fields.update(debater_a_id=debate.debater_b_id, debater_b_id=debate.debater_a_id)
        Debate.objects.filter(pk=debate_id).update(**fields)
        return True


@dataclass(frozen=True)
class RevisionRecord:
    step: int
    draft: str
    principle_id: str
    principle: str
    critique: str
    revision: str
    prompt: Sequence[Mapping[str, str]]


@dataclass(frozen=True)
class CandidateRecord:
    index: int
    text: str
    score: float
    chosen: bool
    completion_tokens: int


def commit_turn(
    debate_id: int,
    owner: str,
    record: services.TurnRecord,
    *,
    violations: Sequence[Mapping[str, object]] = (),
    truncated: bool = False,
    revisions: Sequence[RevisionRecord] = (),
    candidates: Sequence[CandidateRecord] = (),
) -> Turn | None:
    """``services.commit_turn`` plus the referee's findings and the CAI records, in one transaction.

    Returns None when the owner lost the debate or the turn already exists (then nothing is written).
    """
    with transaction.atomic():
        turn = services.commit_turn(debate_id, owner, record)
        if turn is None:
            return None
        Turn.objects.filter(pk=turn.pk).update(violations=list(violations), truncated=truncated)
        turn.violations = list(violations)
        turn.truncated = truncated
        Revision.objects.bulk_create(
            Revision(
                turn=turn,
                step=r.step,
                draft=r.draft,
                principle_id=r.principle_id,
                principle=r.principle,
                critique=r.critique,
                revision=r.revision,
                prompt=list(r.prompt),
            )
            for r in revisions
        )
        Candidate.objects.bulk_create(
            Candidate(
                turn=turn,
                index=c.index,
                text=c.text,
                score=c.score,
                chosen=c.chosen,
                completion_tokens=c.completion_tokens,
            )
            for c in candidates
        )
        return turn


def judge_question(debate_id: int, after_round: int) -> JudgeQuestion | None:
    return JudgeQuestion.objects.filter(debate_id=debate_id, after_round=after_round).first()


def pause_for_judge(debate_id: int, owner: str, after_round: int) -> bool:
    """Put the debate aside until a judge asks the question due after ``after_round``.

    Returns False, changing nothing, when the question already exists (a judge asked while the
    runner was finishing the round) or the owner lost the debate. The debate becomes
    ``waiting`` with ``settings["waiting_for_judge"]`` set and no lease (no worker claims it, no
    restart re-queues it); asking the question
    (``judging.services.ask_question``) clears the flag and queues it again. Both take the row
    lock, so a question cannot fall between the check and the pause.
    """
    with transaction.atomic():
        debate = _locked(debate_id, owner)
        if debate is None or JudgeQuestion.objects.filter(debate_id=debate_id, after_round=after_round).exists():
            return False
        Debate.objects.filter(pk=debate_id).update(
            status=Debate.Status.WAITING,
            settings={**debate.settings, WAITING_KEY: after_round, WAITING_SINCE_KEY: timezone.now().isoformat()},
            lease_owner="",
            lease_expires=None,
        )
        return True


def store_ai_question(debate_id: int, owner: str, after_round: int, text: str, ai_judge: str) -> JudgeQuestion | None:
    """Record the question an AI judge asked; an existing question for that round wins."""
    with transaction.atomic():
        if _locked(debate_id, owner) is None:
            return None
        question, _ = JudgeQuestion.objects.get_or_create(
            debate_id=debate_id, after_round=after_round, defaults={"text": text, "ai_judge": ai_judge}
        )
        return question


def waiting_round(debate: Debate) -> int | None:
    """The round after which ``debate`` waits for its judge's question, or None."""
    value = (debate.settings or {}).get(WAITING_KEY)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
