"""Celery tasks: thin wrappers that load ids and call the runner on the worker's event loop."""

from __future__ import annotations

import logging
import os
import socket
import uuid

from celery import shared_task
from celery.signals import worker_ready

from arena import worker_loop

log = logging.getLogger(__name__)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_debate_task(self, debate_id: int) -> str:  # type: ignore[no-untyped-def]
    from arena.runner import run_debate

    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    outcome = worker_loop.run(run_debate(debate_id, owner))
    if outcome.retry_after is not None:
        # Another worker holds a live lease (a duplicate delivery, or a worker that just died):
        # look again when the lease would have expired.
        raise self.retry(countdown=min(outcome.retry_after, 600))
    return outcome.status


@worker_ready.connect
def _resume_orphans(**_: object) -> None:
    """Queue debates left behind by a stopped stack (the embedded Redis keeps no queue on disk)."""
    from arena.services import orphaned_debates

    for debate_id in orphaned_debates():
        log.info("resuming debate %s", debate_id)
        run_debate_task.delay(debate_id)


from arena.tournament_tasks import *  # noqa: F401,F403
