"""Actions of human judges: verdicts (checked against the protocol's judging rules) and the
questions a judge asks between the rounds of an interactive debate."""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from arena.engine.protocol import JudgingRules, Protocol, ProtocolError, make_protocol
from arena.models import Debate, JudgeQuestion
from judging.models import Assignment, Verdict, verdict_correct
from judging.studies import link_verdict

PROBABILITY_TOLERANCE = 1e-6
MAX_QUESTION_CHARS = 500


class VerdictError(ValueError):
    """The verdict cannot be accepted; the message says why, for the judge."""


class QuestionError(ValueError):
    """The judge's question cannot be accepted; the message says why."""


def check_probabilities(p_first: float, p_second: float, *, allow_even: bool = False) -> None:
    for p in (p_first, p_second):
        if not math.isfinite(p) or not 0.0 <= p <= 1.0:
            raise VerdictError("each probability must be between 0 and 1")
    if abs(p_first + p_second - 1.0) > PROBABILITY_TOLERANCE:
        raise VerdictError(f"the two probabilities must sum to 1 (they sum to {p_first + p_second:g})")
    if not allow_even and abs(p_first - 0.5) <= PROBABILITY_TOLERANCE:
        raise VerdictError("50/50 is not a verdict: lean towards one answer")


def debate_protocol(debate: Debate) -> Protocol:
    return make_protocol(debate.protocol, debate.settings, seed=debate.seed, first_side=debate.first_side)


def verdict_open(debate: Debate, protocol: Protocol | None = None, turns_done: int | None = None) -> tuple[bool, str]:
    """Whether a verdict may be given now, and if not, why (for the judge). ``turns_done``: the
    debate's committed speeches when the caller has just counted them (else counted here)."""
    protocol = protocol or debate_protocol(debate)
    if debate.status in (Debate.Status.FAILED, Debate.Status.CANCELLED):
        return False, f"the debate is not over yet: it {debate.status}"
    needed = protocol.required_turns()
    if needed >= protocol.total_turns():
        if debate.status != Debate.Status.FINISHED:
            return False, "the debate is not over yet"
        return True, ""
    done = debate.turns.count() if turns_done is None else turns_done
    if done < needed:
        return False, f"at least {needed} speeches must be given before a verdict ({done} so far)"
    return True, ""


def rounds_seen(debate: Debate) -> int:
    """Rounds with at least one committed speech: what the judge waited for so far."""
    return len(set(debate.turns.order_by().values_list("round", flat=True)))


def submit_human_verdict(
    assignment: Assignment, p_first: float, p_second: float, reason: str, *, debate: Debate | None = None,
) -> Verdict:
    """Record a judge's verdict. ``p_first`` is for the answer shown first to this judge.

    The protocol's judging rules apply: whether 50/50 is allowed, and how many speeches must have
    been given. The score under the protocol's scoring rule is stored in ``meta`` with the rounds
    the judge had seen.

    ``debate``: the assignment's debate with its question, when the caller (the judge's page) has
    just read it in this request; otherwise it is read here. Everything the checks need is read
    before the transaction, which then holds the write lock (all of SQLite's, under the embedded
    setup) only for the insert and the study link.
    """
    if debate is None or debate.pk != assignment.debate_id:
        debate = Debate.objects.select_related("question").get(pk=assignment.debate_id)
    try:
        protocol = debate_protocol(debate)
    except ProtocolError as exc:
        raise VerdictError(f"this debate's settings are broken: {exc}") from exc
    check_probabilities(p_first, p_second, allow_even=protocol.rules.allow_even)
    reason = reason.strip()
    if len(reason) < 10:
        raise VerdictError("give a reason of at least 10 characters")
    # The committed speeches, once: how many (the protocol's minimum, the record) and in which rounds.
    turn_rounds = list(debate.turns.order_by().values_list("round", flat=True))
    allowed, why = verdict_open(debate, protocol, turns_done=len(turn_rounds))
    if not allowed:
        raise VerdictError(why)
    probs = [0.0, 0.0]
    probs[assignment.shown_first] = p_first
    probs[1 - assignment.shown_first] = p_second
    correct_index = debate.question.correct_index
    seen = len(set(turn_rounds))
    rules = protocol.scoring_rules()
    time_spent = None
    if assignment.opened_at is not None:
        time_spent = (timezone.now() - assignment.opened_at).total_seconds()
    verdict = Verdict(
        debate=debate,
        kind=Verdict.Kind.HUMAN,
        judge_id=assignment.judge_id,
        shown_first=assignment.shown_first,
        p_a=probs[0],
        p_b=probs[1],
        reason=reason,
        time_spent_s=time_spent,
        correct=verdict_correct(probs, correct_index),
        meta={
            "scoring": rules.scoring,
            "turn_penalty": rules.turn_penalty,
            "rounds_seen": seen,
            "turns_seen": len(turn_rounds),
            "score": rules.score(probs[correct_index], probs[1 - correct_index], seen),
        },
    )
    try:
        with transaction.atomic():
            verdict.save(force_insert=True)
            # In the same transaction: a study's progress and its scheduler count the verdict at once.
            link_verdict(verdict, new=True)
            return verdict
    except IntegrityError:
        raise VerdictError("you have already judged this debate") from None


@dataclass(frozen=True)
class Score:
    rule: str
    value: float
    rounds_seen: int
    penalty: float


def verdict_score(verdict: Verdict, debate: Debate, rules: JudgingRules) -> Score:
    """The verdict's score under ``rules`` (as stored when it was given, else computed now)."""
    meta = verdict.meta or {}
    seen = meta.get("rounds_seen")
    if not isinstance(seen, int):
        seen = rounds_seen(debate)
    gold = debate.question.correct_index
    value = rules.score(verdict.p_correct(gold), verdict.p_correct(1 - gold), seen)
    stored = meta.get("score")
    same_penalty = meta.get("turn_penalty", rules.turn_penalty) == rules.turn_penalty
    same_rule = meta.get("scoring") == rules.scoring and same_penalty
    if same_rule and isinstance(stored, (int, float)):
        value = float(stored)
    return Score(rule=rules.scoring, value=value, rounds_seen=seen, penalty=rules.turn_penalty * max(0, seen - 1))


def ask_question(assignment: Assignment, text: str) -> JudgeQuestion:
    """An interactive debate's judge asks the question both debaters answer next round.

    Accepted only while the debate waits for it (``settings["waiting_for_judge"]``, set by the
    runner when a round ends), and never from a judge who has given a verdict (it revealed the
    gold). Clears the wait and queues the debate again once committed. The row lock serialises
    this with the runner's pause, so the question is never missed.
    """
    from arena.protocol_services import WAITING_KEY

    text = " ".join(text.split())
    if not text:
        raise QuestionError("type a question for the debaters")
    if len(text) > MAX_QUESTION_CHARS:
        raise QuestionError(f"keep the question under {MAX_QUESTION_CHARS} characters")
    with transaction.atomic():
        debate = Debate.objects.select_for_update().get(pk=assignment.debate_id)
        if Verdict.objects.filter(debate=debate, judge=assignment.judge).exists():
            # The verdict revealed the gold answer: a question now would carry it into the debate.
            raise QuestionError("you have given your verdict on this debate; it takes no more questions from you")
        protocol = debate_protocol(debate)
        if not protocol.interactive:
            raise QuestionError("judges ask questions only in interactive debates")
        waiting = debate.settings.get(WAITING_KEY)
        if not isinstance(waiting, int) or isinstance(waiting, bool):
            raise QuestionError("the debate is not waiting for a question now")
        if JudgeQuestion.objects.filter(debate=debate, after_round=waiting).exists():
            raise QuestionError(f"a question for round {waiting + 1} was already asked")
        question = JudgeQuestion.objects.create(debate=debate, after_round=waiting, text=text, asked_by=assignment.judge)
        settings = {k: v for k, v in debate.settings.items() if k != WAITING_KEY}
        if debate.status == Debate.Status.WAITING:
            Debate.objects.filter(pk=debate.pk).update(settings=settings, status=Debate.Status.QUEUED)
        else:
            Debate.objects.filter(pk=debate.pk).update(settings=settings)
        if debate.status in (Debate.Status.QUEUED, Debate.Status.WAITING):
            from arena.services import enqueue_debate

            debate_id = debate.pk
            transaction.on_commit(lambda: enqueue_debate(debate_id))
    return question
