"""Actions that change debates. Views, commands and tasks call these; nothing else writes."""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from arena import dispatch
from arena.constitution import default_constitution
from arena.engine.protocol import Limits, draw_first_side, make_protocol
from arena.models import Constitution, Debate, Question, Turn
from debaters.models import DebaterProfile
from judging.models import Assignment

# The Celery task that runs a debate (arena/tasks.py), queued by name: see arena/dispatch.py.
RUN_DEBATE_TASK = "arena.tasks.run_debate_task"


def create_debate(
    *,
    question: Question,
    debater_a: DebaterProfile,
    debater_b: DebaterProfile,
    limits: Limits,
    protocol: str = "debate",
    constitution: Constitution | None = None,
    created_by: AbstractBaseUser | None = None,
    judges: Iterable[AbstractBaseUser] = (),
    seed: int | None = None,
    enqueue: bool = True,
) -> Debate:
    """Create a debate with its judge assignments and queue it to Celery once committed.

    The seed is drawn when not given, and the answer whose debater speaks first in every round
    (``first_side``) is drawn from the seed (:func:`~arena.engine.protocol.draw_first_side`), so the
    speaking order does not reveal which answer is stored first.
    """
    make_protocol(protocol, limits.to_settings())
    seed = seed if seed is not None else secrets.randbelow(2**31)
    with transaction.atomic():
        debate = Debate.objects.create(
            question=question,
            protocol=protocol,
            settings=limits.to_settings(),
            constitution=constitution or default_constitution(),
            debater_a=debater_a,
            debater_b=debater_b,
            seed=seed,
            first_side=draw_first_side(seed),
            created_by=created_by,
        )
        for judge in judges:
            assign_judge(debate, judge)
        if enqueue:
            transaction.on_commit(lambda: enqueue_debate(debate.pk))
    return debate


def enqueue_debate(debate_id: int) -> None:
    """Queue the debate for a worker (:data:`RUN_DEBATE_TASK`)."""
    dispatch.enqueue(RUN_DEBATE_TASK, debate_id)


def assign_judge(debate: Debate, judge: AbstractBaseUser, rng: random.Random | None = None) -> Assignment:
    """Give ``debate`` to ``judge``; the answer shown first is drawn at random and recorded."""
    shown_first = (rng or random.SystemRandom()).randrange(2)
    assignment, _ = Assignment.objects.get_or_create(debate=debate, judge=judge, defaults={"shown_first": shown_first})
    return assignment


def claim_debate(debate_id: int, owner: str, lease_s: int | None = None) -> bool:
    """Take the debate for ``owner``: queued, or running with an expired lease (its worker died).

    A conditional UPDATE: if it did not update one row, someone else holds it or it is over.
    """
    now = timezone.now()
    lease = timedelta(seconds=lease_s or settings.ARENA_LEASE_SECONDS)
    claimable = Q(status=Debate.Status.QUEUED) | Q(status=Debate.Status.RUNNING) & (
        Q(lease_expires__lt=now) | Q(lease_expires__isnull=True) | Q(lease_owner=owner)
    )
    updated = Debate.objects.filter(claimable, pk=debate_id).update(
        status=Debate.Status.RUNNING,
        lease_owner=owner,
        lease_expires=now + lease,
        attempts=F("attempts") + 1,
    )
    if updated:
        Debate.objects.filter(pk=debate_id, started_at__isnull=True).update(started_at=now)
    return updated == 1


def renew_lease(debate_id: int, owner: str, lease_s: int | None = None) -> bool:
    lease = timedelta(seconds=lease_s or settings.ARENA_LEASE_SECONDS)
    return (
        Debate.objects.filter(pk=debate_id, lease_owner=owner, status=Debate.Status.RUNNING).update(
            lease_expires=timezone.now() + lease
        )
        == 1
    )


def lease_remaining_s(debate_id: int) -> float | None:
    """Seconds until another worker may take over this running debate; None if it is not running."""
    debate = Debate.objects.filter(pk=debate_id).only("status", "lease_expires").first()
    if debate is None or debate.status != Debate.Status.RUNNING or debate.lease_expires is None:
        return None
    return max(0.0, (debate.lease_expires - timezone.now()).total_seconds())


@dataclass(frozen=True)
class TurnRecord:
    index: int
    round: int
    side: int
    text: str
    quotes: list[dict[str, object]]
    prompt: Sequence[dict[str, str]]
    prompt_hash: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    model_name: str
    started_at: datetime
    finished_at: datetime
    meta: dict[str, object]


def commit_turn(debate_id: int, owner: str, record: TurnRecord) -> Turn | None:
    """Store a finished turn. Returns None when this owner lost the debate or the turn exists.

    The unique (debate, index) constraint is the last line of defence against a duplicate turn.
    """
    with transaction.atomic():
        if not Debate.objects.select_for_update().filter(pk=debate_id, lease_owner=owner).exists():
            return None
        try:
            with transaction.atomic():
                return Turn.objects.create(
                    debate_id=debate_id,
                    index=record.index,
                    round=record.round,
                    side=record.side,
                    text=record.text,
                    quotes=record.quotes,
                    prompt=list(record.prompt),
                    prompt_hash=record.prompt_hash,
                    prompt_tokens=record.prompt_tokens,
                    completion_tokens=record.completion_tokens,
                    finish_reason=record.finish_reason,
                    model_name=record.model_name,
                    started_at=record.started_at,
                    finished_at=record.finished_at,
                    meta=record.meta,
                )
        except IntegrityError:
            return None


def finish_debate(debate_id: int, owner: str) -> bool:
    return (
        Debate.objects.filter(pk=debate_id, lease_owner=owner, status=Debate.Status.RUNNING).update(
            status=Debate.Status.FINISHED, finished_at=timezone.now(), lease_expires=None, error=""
        )
        == 1
    )


def fail_debate(debate_id: int, reason: str, owner: str | None = None) -> bool:
    qs = Debate.objects.filter(pk=debate_id).exclude(status=Debate.Status.FINISHED)
    if owner is not None:
        qs = qs.filter(lease_owner=owner)
    return qs.update(status=Debate.Status.FAILED, error=reason[:5000], finished_at=timezone.now(), lease_expires=None) == 1


def requeue_debate(debate_id: int) -> bool:
    """Put a failed or cancelled debate back in the queue; its committed turns are kept."""
    updated = Debate.objects.filter(
        pk=debate_id, status__in=[Debate.Status.FAILED, Debate.Status.CANCELLED]
    ).update(status=Debate.Status.QUEUED, error="", lease_owner="", lease_expires=None, finished_at=None)
    if updated:
        transaction.on_commit(lambda: enqueue_debate(debate_id))
    return updated == 1


def orphaned_debates() -> list[int]:
    """Debates outside tournaments that should be running but no live worker holds.

    Queued, or running with a dead lease. Tournament debates are resumed by their tournament's
    dispatcher instead, which knows whether the tournament is paused.
    """
    now = timezone.now()
    return list(
        Debate.objects.filter(
            Q(status=Debate.Status.QUEUED) | Q(status=Debate.Status.RUNNING, lease_expires__lt=now),
            tournament__isnull=True,
        ).values_list("pk", flat=True)
    )
