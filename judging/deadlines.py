"""Interactive debates never stall: a judge's question has a deadline.

When an interactive debate with human judges reaches the end of a round, the runner pauses it
(``arena.protocol_services.pause_for_judge``, which records when in ``settings["waiting_since"]``)
and schedules :func:`expire_question` for when the deadline passes. If no judge asked by then, the
debate goes on:

- with an AI judge's question, when the debate's study names one (``Study.ai_questioner``);
- otherwise with no question for that round.

The record says which: ``Debate.settings["question_fallbacks"][str(after_round)]`` holds
``{"used": "ai" | "none", "deadline_s": ..., "expired_at": ..., "ai_judge": name}``, and an AI
question is stored as a ``JudgeQuestion`` with its ``ai_judge`` label.

Several judges on one live interactive debate: the first question committed for a round is the
one both debaters answer (``JudgeQuestion`` is unique per debate and round); later questions are
refused with "a question for round N was already asked", and every judge sees the question used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from arena.dispatch import enqueue
from arena.models import Debate, JudgeQuestion
from arena.protocol_services import WAITING_KEY, WAITING_SINCE_KEY, waiting_round
from arena.services import enqueue_debate
from judging.models import Assignment, Study, StudyDebate

FALLBACKS_KEY = "question_fallbacks"


@dataclass(frozen=True)
class QuestionRule:
    """How long a judge has to ask, and who asks after that (None: nobody)."""

    deadline_s: int
    ai_judge: str | None


@dataclass(frozen=True)
class Fallback:
    used: str  # "ai" or "none"
    ai_judge: str | None


def expects_human_questions(debate_id: int) -> bool:
    """Whether an interactive debate waits for a human judge's question: it has a judge, or it is
    in a live study (its judges may still arrive through "Next debate"). Otherwise an AI judge asks."""
    return (
        Assignment.objects.filter(debate_id=debate_id).exists()
        or StudyDebate.objects.filter(debate_id=debate_id, study__mode=Study.Mode.LIVE).exists()
    )


def question_rule(debate: Debate) -> QuestionRule:
    """The deadline and fallback of ``debate``: from its (first) study, else the defaults."""
    study = (
        Study.objects.filter(entries__debate=debate).select_related("ai_questioner").order_by("created_at").first()
    )
    deadline = settings.ARENA_JUDGE_QUESTION_SECONDS
    ai = None
    if study is not None:
        deadline = study.question_deadline_s or deadline
        ai = study.ai_questioner.name if study.ai_questioner else None
    return QuestionRule(deadline_s=deadline, ai_judge=ai)


def deadline_of(debate: Debate) -> datetime | None:
    """When the judge's question for the round the debate waits on is due (None: not waiting)."""
    if waiting_round(debate) is None:
        return None
    since = parse_datetime(str((debate.settings or {}).get(WAITING_SINCE_KEY, "")))
    if since is None:
        return None
    return since + timedelta(seconds=question_rule(debate).deadline_s)


def schedule_deadline(debate_id: int, after_round: int) -> None:
    """Have a worker run :func:`expire_question` when the deadline of ``debate_id`` passes (the
    periodic sweep, :func:`expire_due_questions`, catches it too if that task is lost).

    Sent by task name: the runner calls this and must not import the judging tasks module.
    """
    debate = Debate.objects.get(pk=debate_id)
    enqueue("judging.tasks.question_deadline_task", debate_id, after_round, countdown=question_rule(debate).deadline_s + 1)


def fallback_for(debate_settings: dict[str, object], after_round: int) -> Fallback | None:
    """What the runner does for ``after_round`` when the judge's deadline passed (None: wait)."""
    record = (debate_settings.get(FALLBACKS_KEY) or {})
    if not isinstance(record, dict):
        return None
    entry = record.get(str(after_round))
    if not isinstance(entry, dict) or entry.get("used") not in ("ai", "none"):
        return None
    name = entry.get("ai_judge")
    return Fallback(used=str(entry["used"]), ai_judge=name if isinstance(name, str) and name else None)


def expire_question(debate_id: int, after_round: int, now: datetime | None = None) -> Fallback | None:
    """If ``debate_id`` still waits for the question due after ``after_round`` and its deadline
    passed, record the fallback, stop waiting and queue the debate again. Returns the fallback, or
    None when there was nothing to do (asked in time, not yet due, or not waiting).

    Holds the debate's row lock, like ``judging.services.ask_question``: a question and the
    deadline cannot both win.
    """
    now = now or timezone.now()
    with transaction.atomic():
        debate = Debate.objects.select_for_update().filter(pk=debate_id).first()
        if debate is None or debate.status != Debate.Status.WAITING or waiting_round(debate) != after_round:
            return None
        if JudgeQuestion.objects.filter(debate_id=debate_id, after_round=after_round).exists():
            return None
        due = deadline_of(debate)
        if due is None or due > now:
            return None
        rule = question_rule(debate)
        fallback = Fallback(used="ai" if rule.ai_judge else "none", ai_judge=rule.ai_judge)
        fallbacks = dict(debate.settings.get(FALLBACKS_KEY) or {})
        fallbacks[str(after_round)] = {
            "used": fallback.used,
            "ai_judge": fallback.ai_judge or "",
            "deadline_s": rule.deadline_s,
            "expired_at": now.isoformat(),
        }
        new_settings = {k: v for k, v in debate.settings.items() if k not in (WAITING_KEY, WAITING_SINCE_KEY)}
        new_settings[FALLBACKS_KEY] = fallbacks
        Debate.objects.filter(pk=debate_id).update(settings=new_settings, status=Debate.Status.QUEUED)
        transaction.on_commit(lambda: enqueue_debate(debate_id))
    return fallback


def expire_due_questions(now: datetime | None = None) -> list[int]:
    """Apply :func:`expire_question` to every waiting debate whose deadline passed (the sweep)."""
    now = now or timezone.now()
    expired = []
    for debate in Debate.objects.filter(status=Debate.Status.WAITING).only("pk", "settings"):
        after = waiting_round(debate)
        if after is not None and expire_question(debate.pk, after, now) is not None:
            expired.append(debate.pk)
    return expired
