"""Creating a tournament and changing its state: start, pause, resume, cancel."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from arena import dispatch
from arena.engine.protocol import draw_first_side
from arena.models import Debate, Tournament
from arena.tournaments.definition import TournamentSpec, plan, validate
from judging.studies import create_tournament_study

ACTIVE = (Debate.Status.QUEUED, Debate.Status.RUNNING)


class TournamentStateError(ValueError):
    """The tournament cannot do that in its current state (e.g. resume a finished one)."""


def create_tournament(spec: TournamentSpec, created_by: AbstractBaseUser | None = None) -> Tournament:
    """Store the tournament (pending) and create its debates."""
    with transaction.atomic():
        tournament = Tournament.objects.create(
            name=spec.name, config=spec.to_config(), created_by=created_by, stats={"active_s": 0.0}
        )
        ensure_debates(tournament, spec)
        if spec.human is not None:
            create_tournament_study(tournament, spec.human, created_by)
    return tournament


def spec_from_config(tournament: Tournament) -> TournamentSpec:
    """Re-resolve the stored definition (question ids frozen at creation)."""
    return validate(tournament.config)


def ensure_debates(tournament: Tournament, spec: TournamentSpec | None = None) -> int:
    """Create the tournament's missing debates; returns how many were created. Idempotent: the
    unique (tournament, tournament_key) constraint skips every pairing that exists.

    Each debate's speaking order (``first_side``) is drawn from its seed, independently of the
    answer order its judges are shown (``shown_first``, the tournament's "both orders")."""
    spec = spec or spec_from_config(tournament)
    planned = plan(spec)
    existing = set(Debate.objects.filter(tournament=tournament).values_list("tournament_key", flat=True))
    # What each debate saw of its question (bulk_create skips Debate.save, which records it).
    questions = {p.question.pk: p.question for p in planned}
    question_hashes = {pk: q.content_hash() for pk, q in questions.items()}
    rows = [
        Debate(
            question=p.question,
            question_hash=question_hashes[p.question.pk],
            tournament=tournament,
            tournament_key=p.key,
            protocol=p.protocol,
            settings=p.settings,
            constitution=spec.constitution,
            debater_a=p.debater_a,
            debater_b=p.debater_b,
            seed=p.seed,
            first_side=draw_first_side(p.seed),
            created_by=tournament.created_by,
        )
        for p in planned
        if p.key not in existing
    ]
    # A concurrent expansion may insert the same keys: the constraint turns those into no-ops.
    Debate.objects.bulk_create(rows, batch_size=500, ignore_conflicts=True)
    return len(rows)


def _tally_active(stats: dict[str, object], now: datetime) -> dict[str, object]:
    """Add the time since the last (re)start to ``active_s``; running time excludes pauses."""
    stats = dict(stats or {})
    resumed = stats.pop("resumed_at", None)
    if isinstance(resumed, str):
        stats["active_s"] = float(stats.get("active_s", 0.0) or 0.0) + max(
            0.0, (now - datetime.fromisoformat(resumed)).total_seconds()
        )
    return stats


def set_status(tournament_id: int, allowed: Iterable[str], status: str, *, running: bool) -> Tournament:
    now = timezone.now()
    with transaction.atomic():
        tournament = Tournament.objects.select_for_update().get(pk=tournament_id)
        if tournament.status not in allowed:
            raise TournamentStateError(f"tournament {tournament.pk} is {tournament.status}; cannot make it {status}")
        stats = _tally_active(tournament.stats, now)
        if running:
            stats["resumed_at"] = now.isoformat()
        tournament.stats = stats
        tournament.status = status
        fields = ["status", "stats"]
        if running and tournament.started_at is None:
            tournament.started_at = now
            fields.append("started_at")
        if status in (Tournament.Status.CANCELLED, Tournament.Status.FINISHED, Tournament.Status.FAILED):
            tournament.finished_at = now
            fields.append("finished_at")
        tournament.save(update_fields=fields)
    return tournament


def start(tournament_id: int, *, enqueue: bool = True) -> Tournament:
    """Set a pending tournament running and queue its work on Celery (after commit)."""
    tournament = set_status(tournament_id, [Tournament.Status.PENDING], Tournament.Status.RUNNING, running=True)
    if enqueue:
        transaction.on_commit(lambda: _enqueue_dispatch(tournament_id))
    return tournament


def pause(tournament_id: int) -> Tournament:
    """Stop handing out work. Debates in flight are stopped by their worker within a few seconds
    (their committed turns are kept) and go back to the queue, ready for :func:`resume`."""
    with transaction.atomic():
        tournament = set_status(tournament_id, [Tournament.Status.RUNNING], Tournament.Status.PAUSED, running=False)
        # Taking the lease away makes a worker that is still mid-turn unable to commit it.
        Debate.objects.filter(tournament_id=tournament_id, status=Debate.Status.RUNNING).update(
            status=Debate.Status.QUEUED, lease_owner="", lease_expires=None
        )
    return tournament


def resume(tournament_id: int, *, enqueue: bool = True) -> Tournament:
    tournament = set_status(tournament_id, [Tournament.Status.PAUSED], Tournament.Status.RUNNING, running=True)
    if enqueue:
        transaction.on_commit(lambda: _enqueue_dispatch(tournament_id))
    return tournament


def cancel(tournament_id: int) -> Tournament:
    """Cancel for good: every debate not yet over is cancelled (finished ones and verdicts are kept)."""
    active = [Tournament.Status.PENDING, Tournament.Status.RUNNING, Tournament.Status.PAUSED]
    with transaction.atomic():
        tournament = set_status(tournament_id, active, Tournament.Status.CANCELLED, running=False)
        Debate.objects.filter(tournament_id=tournament_id, status__in=ACTIVE).update(
            status=Debate.Status.CANCELLED, lease_expires=None, finished_at=timezone.now(), error="tournament cancelled"
        )
    return tournament


# The Celery task that fans a tournament out into chunks (arena/tournament_tasks.py), queued by name.
DISPATCH_TASK = "arena.tournament_tasks.dispatch_tournament_task"


def _enqueue_dispatch(tournament_id: int) -> None:
    dispatch.enqueue(DISPATCH_TASK, tournament_id)
