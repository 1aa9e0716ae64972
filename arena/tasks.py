"""Celery tasks: thin wrappers that load ids and call the runner on the worker's event loop."""

from __future__ import annotations

import logging
import threading
import time

from celery import shared_task
from celery.signals import celeryd_after_setup, celeryd_init, worker_ready
from django.conf import settings
from django.db import close_old_connections

from arena import sweep, worker_loop
from arena.models import Debate, Tournament
from arena.runner import run_debate
from arena.services import orphaned_debates
from arena.streaming import DebateStream
from arena.tournament_tasks import queue_chunks
from debaters.backends import BackendSpec, get_backend
from judging import deadlines, studies

log = logging.getLogger(__name__)

# Ahead of everything queued at the default priority (CELERY_TASK_DEFAULT_PRIORITY, see settings).
RESUMED_PRIORITY = 0


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_debate_task(self, debate_id: int) -> str:  # type: ignore[no-untyped-def]
    owner = sweep.lease_owner()
    outcome = worker_loop.run(run_debate(debate_id, owner))
    if outcome.retry_after is not None:
        # Another worker holds a live lease (a duplicate delivery, or a worker that just died):
        # look again when the lease would have expired.
        raise self.retry(countdown=min(outcome.retry_after, 600))
    return outcome.status


@worker_ready.connect
def _resume_orphans(**_: object) -> None:
    """Queue debates left behind by a stopped stack (the embedded Redis keeps no queue on disk)."""
    for debate_id in orphaned_debates():
        log.info("resuming debate %s", debate_id)
        run_debate_task.delay(debate_id)


def sweep_expired_leases() -> sweep.Requeued:
    """Queue again every debate and tournament chunk whose worker died (see arena/sweep.py)."""
    found = sweep.requeue_expired()
    # Human judging: interactive questions past their deadline, and judges' expired study leases.
    deadlines.expire_due_questions()
    studies.release_expired()
    for debate_id in found.all_ids:
        # Before queueing, so that the new worker's "running" comes after it: pages show the debate
        # as delayed until a worker has claimed it again. Only a notice: queueing must happen anyway.
        try:
            worker_loop.run(DebateStream(debate_id).status("delayed", "its worker stopped; another one takes it over"), 10)
        except Exception:  # noqa: BLE001
            log.warning("debate %s: could not tell its pages it is delayed", debate_id, exc_info=True)
    for debate_id in found.debates:
        log.warning("debate %s: its worker's lease expired; queued again", debate_id)
        run_debate_task.apply_async((debate_id,), priority=RESUMED_PRIORITY)
    for tournament_id, debate_ids in found.tournament_debates.items():
        tournament = Tournament.objects.filter(pk=tournament_id).first()
        if tournament is not None:
            log.warning("tournament %s: leases of %d debate(s) expired; queued again", tournament_id, len(debate_ids))
            queue_chunks(tournament, debate_ids, priority=RESUMED_PRIORITY)
    return found


def _sweep_forever(interval_s: float) -> None:
    while True:
        time.sleep(interval_s)
        try:
            sweep_expired_leases()
        except Exception:  # noqa: BLE001 - the database or Redis restarting: try again next time
            log.exception("lease sweep failed")
        finally:
            close_old_connections()


@celeryd_after_setup.connect
def _sweep_before_consuming(**_: object) -> None:
    """A worker restarted after a crash takes back its predecessor's debates (a process of this host
    that is gone) before it fetches any task, so they go first instead of behind queued work."""
    if settings.ARENA_SWEEP_SECONDS <= 0:
        return
    try:
        sweep_expired_leases()
    except Exception:  # noqa: BLE001 - the periodic sweep tries again
        log.exception("lease sweep at start-up failed")
    finally:
        close_old_connections()


# Backends whose model lives in the worker's own process: the ones worth loading ahead.
_IN_PROCESS_BACKENDS = ("transformers",)


def warm_models(limit: int = 200) -> list[str]:
    """Load the in-process models of the debates that are queued or running (the work a worker
    started now will do); the models loaded. Loading happens once per process (debaters.backends
    keeps one instance per spec), so a debate that asks meanwhile waits for the same load."""
    specs: dict[object, BackendSpec] = {}
    debates = Debate.objects.filter(status__in=[Debate.Status.QUEUED, Debate.Status.RUNNING]).select_related(
        "debater_a", "debater_b"
    )
    for debate in debates.order_by("-status", "pk")[:limit]:
        for profile in (debate.debater_a, debate.debater_b):
            spec = profile.backend_spec()
            if spec.backend in _IN_PROCESS_BACKENDS:
                specs.setdefault(spec.key(), spec)
    close_old_connections()
    loaded = []
    for spec in specs.values():
        started = time.monotonic()
        worker_loop.run(get_backend(spec).wait_ready())
        log.info("warmed %s (%s) for the waiting debates in %.1f s", spec.model or "the embedded model", spec.backend, time.monotonic() - started)
        loaded.append(spec.model)
    return loaded


def _warm_in_background() -> None:
    try:
        warm_models()
    except Exception:  # noqa: BLE001 - the debates load their models themselves, and report why not
        log.warning("warming the models of the waiting debates failed", exc_info=True)
    finally:
        close_old_connections()


@celeryd_init.connect
def _warm_before_consuming(conf: object = None, options: dict[str, object] | None = None, **_: object) -> None:
    """Start loading models as the worker starts, while Celery sets up, connects and sweeps (a
    thread: it must not delay them). Only for pools that run tasks in this process (threads, solo):
    a prefork pool's parent would load torch before forking children that load it again."""
    pool = str((options or {}).get("pool_cls") or getattr(conf, "worker_pool", "") or "prefork").lower()
    if settings.ARENA_WORKER_WARM and ("thread" in pool or "solo" in pool):
        threading.Thread(target=_warm_in_background, name="arena-warm-models", daemon=True).start()


@worker_ready.connect
def _start_sweeper(**_: object) -> None:
    """Every worker sweeps; the conditional UPDATE in arena/sweep.py gives each debate to one of them."""
    if settings.ARENA_SWEEP_SECONDS > 0:
        threading.Thread(
            target=_sweep_forever, args=(settings.ARENA_SWEEP_SECONDS,), name="arena-lease-sweep", daemon=True
        ).start()


from arena.tournament_tasks import *  # noqa: F401,F403
