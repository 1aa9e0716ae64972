"""Services queue Celery tasks by name (arena/dispatch.py); every name they use must be a task a
worker knows, or the message would be dropped as unregistered."""

from __future__ import annotations

import pytest

from arena import services, tournaments
from arena.celery import app
from judging.exports import jobs


@pytest.mark.parametrize("name", [services.RUN_DEBATE_TASK, tournaments.DISPATCH_TASK, jobs.EXPORT_TASK])
def test_every_task_a_service_queues_by_name_is_registered(name: str) -> None:
    app.loader.import_default_modules()

    assert name in app.tasks


def test_new_work_waits_behind_work_taken_back_from_a_dead_worker(settings) -> None:  # type: ignore[no-untyped-def]
    """Through the real Redis broker: a debate queued by a service (by name) and one the lease sweep
    took back (arena/tasks.py, priority 0) come out taken-back first, however they were queued."""
    from arena.dispatch import enqueue
    from arena.tasks import RESUMED_PRIORITY, run_debate_task
    from arena.tournament_tasks import queue_chunks

    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        channel.queue_declare(queue)
        channel.queue_purge(queue)
        try:
            enqueue(services.RUN_DEBATE_TASK, 1)  # a new debate, queued first
            run_debate_task.apply_async((2,), priority=RESUMED_PRIORITY)  # then one taken back
            enqueue(services.RUN_DEBATE_TASK, 3)
            chunk = type("T", (), {"pk": 7, "config": {"chunk_size": 10}})()
            queue_chunks(chunk, [4, 5])  # a new tournament's chunk: behind the taken-back debate too
            order = []
            while (message := channel.basic_get(queue, no_ack=True)) is not None:
                order.append(message.headers["argsrepr"])
        finally:
            channel.queue_purge(queue)
    assert order == ["(2,)", "(1,)", "(3,)", "(7, [4, 5])"]
