"""Celery fan-out for tournaments: a dispatcher splits the remaining debates into chunks, one task
per chunk; each chunk task runs its debates in lockstep (one batch per step) and then AI-judges them.

There is no result backend, so instead of a chord the chunk tasks finish the tournament themselves:
each one, when done, checks whether any work is left (:func:`arena.tournaments.maybe_finish`).

Crash safety: tasks are ``acks_late`` and ``reject_on_worker_lost``, so a chunk whose worker died is
redelivered by the broker (after ``CELERY_VISIBILITY_TIMEOUT`` with Redis). Running it again is
harmless: finished debates cannot be claimed again, turns are unique per (debate, index), a debate
still leased by another worker is retried after the lease, and a verdict exists at most once per
(debate, AI judge). A worker that starts also re-dispatches every running tournament, which covers
a broker that lost its queue (the embedded Redis keeps none on disk).
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from arena import tournaments, worker_loop
from arena.sweep import lease_owner
from arena.models import Tournament
from debaters.backends.base import BackendError

log = logging.getLogger(__name__)

# A judge backend that is down: every 30 s for ten minutes, then the chunk task gives up.
MAX_CHUNK_RETRIES = 20

__all__ = ["dispatch_tournament_task", "queue_chunks", "run_tournament_chunk_task"]


def _owner() -> str:
    return lease_owner()


@shared_task(acks_late=True, reject_on_worker_lost=True)
def dispatch_tournament_task(tournament_id: int) -> int:
    """Queue one chunk task per ``chunk_size`` debates with work left; returns how many were queued."""
    tournament = Tournament.objects.filter(pk=tournament_id).first()
    if tournament is None or tournament.status != Tournament.Status.RUNNING:
        return 0
    # The debates exist: create_tournament makes them in the same transaction as the tournament.
    remaining = tournaments.remaining_debate_ids(tournament)
    if not remaining:
        tournaments.maybe_finish(tournament_id)
        return 0
    parts = queue_chunks(tournament, remaining)
    log.info("tournament %s: queued %d chunk(s) for %d debate(s)", tournament_id, parts, len(remaining))
    return parts


def queue_chunks(tournament: Tournament, debate_ids: list[int], priority: int | None = None) -> int:
    """Queue ``debate_ids`` as chunk tasks of the tournament's ``chunk_size``; returns how many.
    ``priority``: the broker's (lower goes first; None keeps the settings' default)."""
    size = int((tournament.config or {}).get("chunk_size", tournaments.DEFAULT_CHUNK))
    parts = tournaments.chunks(debate_ids, size)
    for ids in parts:
        # Never priority=None: Celery would send it as is and the Redis transport would put the
        # chunk in its first list, with the work taken back from dead workers (arena/dispatch.py).
        run_tournament_chunk_task.apply_async(
            (tournament.pk, ids), priority=settings.CELERY_TASK_DEFAULT_PRIORITY if priority is None else priority
        )
    return len(parts)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_tournament_chunk_task(self, tournament_id: int, debate_ids: list[int]) -> str:  # type: ignore[no-untyped-def]
    """Run and judge one chunk of a tournament's debates (see :func:`arena.tournaments.run_chunk`)."""
    try:
        result = worker_loop.run(tournaments.run_chunk(tournament_id, debate_ids, _owner()))
    except BackendError as exc:
        # Permanent judge failures are recorded by run_chunk; what arrives here is a backend that
        # stayed unreachable through its own retries. Try the chunk again later: nothing is repeated,
        # since finished debates cannot be claimed and stored verdicts are skipped.
        if self.request.retries >= MAX_CHUNK_RETRIES:
            raise
        raise self.retry(countdown=30, exc=exc) from exc
    except Exception as exc:  # noqa: BLE001
        # Anything else (the database restarting, a bug): a few more tries, then the task fails and
        # the debates wait for the next dispatch (a worker start, or resume).
        log.exception("tournament %s: chunk %s failed", tournament_id, debate_ids)
        if self.request.retries >= 3:
            raise
        raise self.retry(countdown=60, exc=exc) from exc
    if result.stopped:
        return f"stopped: {result.stopped}"
    if result.retry:
        # Another worker holds these (a duplicate delivery, or a worker that just died): look again
        # when its lease would have expired. The others of the chunk are done.
        raise self.retry(args=(tournament_id, result.retry), countdown=min(result.retry_after, 600))
    tournaments.maybe_finish(tournament_id)
    return f"{len(result.outcomes)} debates, {result.verdicts} verdicts"


@worker_ready.connect
def _resume_tournaments(**_: object) -> None:
    """Re-dispatch running tournaments: after a crash the broker may have lost their chunk tasks."""
    for tournament_id in Tournament.objects.filter(status=Tournament.Status.RUNNING).values_list("pk", flat=True):
        log.info("resuming tournament %s", tournament_id)
        dispatch_tournament_task.delay(tournament_id)
