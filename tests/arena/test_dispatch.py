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
