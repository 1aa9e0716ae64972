"""Actions on verdicts."""

from __future__ import annotations

import math

from django.db import IntegrityError, transaction
from django.utils import timezone

from arena.models import Debate
from judging.models import Assignment, Verdict

PROBABILITY_TOLERANCE = 1e-6


class VerdictError(ValueError):
    """The verdict cannot be accepted; the message says why, for the judge."""


def check_probabilities(p_first: float, p_second: float) -> None:
    for p in (p_first, p_second):
        if not math.isfinite(p) or not 0.0 <= p <= 1.0:
            raise VerdictError("each probability must be between 0 and 1")
    if abs(p_first + p_second - 1.0) > PROBABILITY_TOLERANCE:
        raise VerdictError(f"the two probabilities must sum to 1 (they sum to {p_first + p_second:g})")
    if abs(p_first - 0.5) <= PROBABILITY_TOLERANCE:
        raise VerdictError("50/50 is not a verdict: lean towards one answer")


def submit_human_verdict(assignment: Assignment, p_first: float, p_second: float, reason: str) -> Verdict:
    """Record a judge's verdict. ``p_first`` is for the answer shown first to this judge."""
    check_probabilities(p_first, p_second)
    reason = reason.strip()
    if len(reason) < 10:
        raise VerdictError("give a reason of at least 10 characters")
    debate = Debate.objects.select_related("question").get(pk=assignment.debate_id)
    if debate.status != Debate.Status.FINISHED:
        raise VerdictError("the debate is not over yet")
    probs = [0.0, 0.0]
    probs[assignment.shown_first] = p_first
    probs[1 - assignment.shown_first] = p_second
    correct_index = debate.question.correct_index
    time_spent = None
    if assignment.opened_at is not None:
        time_spent = (timezone.now() - assignment.opened_at).total_seconds()
    try:
        with transaction.atomic():
            return Verdict.objects.create(
                debate=debate,
                kind=Verdict.Kind.HUMAN,
                judge=assignment.judge,
                shown_first=assignment.shown_first,
                p_a=probs[0],
                p_b=probs[1],
                reason=reason,
                time_spent_s=time_spent,
                correct=probs[correct_index] > probs[1 - correct_index],
            )
    except IntegrityError:
        raise VerdictError("you have already judged this debate") from None
