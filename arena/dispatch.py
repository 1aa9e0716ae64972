"""Queue Celery tasks by their registered name: how services hand work to the workers.

Tasks import services (a task loads its ids and calls a service), so a service never imports a
tasks module: that would be an import cycle. Instead a service names the task here, as Celery
registers it (``module.function``), and the worker that knows the task runs it. Each caller keeps
its task's name next to the call (``*_TASK`` constants); tests/arena/test_dispatch.py checks every
one against the registered tasks.
"""

from __future__ import annotations

from django.conf import settings

from arena.celery import app


def enqueue(task_name: str, *args: object, countdown: float | None = None) -> None:
    """Send one message for ``task_name(*args)`` to the default queue (as ``task.delay`` would).

    At the default priority, explicitly: a message sent by name here went out without one (seen
    in Redis), and the Redis transport puts such a message in its first list, the one for work
    taken back from a dead worker (arena/tasks.py), which then waited behind every new debate
    (tests/arena/test_dispatch.py).
    """
    app.send_task(task_name, args=args, countdown=countdown, priority=settings.CELERY_TASK_DEFAULT_PRIORITY)
