"""A worker loads the in-process models of the waiting debates while it starts (arena/tasks.py,
``ARENA_WORKER_WARM``): the real embedded model, loaded once, shared with the debates that ask."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from arena import tasks, worker_loop
from arena.models import Debate
from debaters.backends import forget_backends, get_backend
from debaters.models import DebaterProfile


@pytest.fixture(autouse=True)
def _own_backends() -> Iterator[None]:
    forget_backends()
    yield
    forget_backends()


@pytest.mark.django_db
def test_it_loads_the_models_of_queued_and_running_debates_once(make_debate, profile) -> None:  # type: ignore[no-untyped-def]
    make_debate()
    running = make_debate()
    Debate.objects.filter(pk=running.pk).update(status=Debate.Status.RUNNING)
    finished = make_debate()
    Debate.objects.filter(pk=finished.pk).update(status=Debate.Status.FINISHED)

    try:
        assert tasks.warm_models() == [profile.backend_spec().model]  # one model for both debates
        backend = get_backend(profile.backend_spec())
        # Loaded: the debates' own requests find a scheduler that is ready.
        assert backend._scheduler is not None and backend._scheduler.wait_ready(0)
    finally:
        worker_loop.run(get_backend(profile.backend_spec()).aclose())


@pytest.mark.django_db
def test_it_leaves_models_served_elsewhere_and_finished_debates_alone(make_debate) -> None:  # type: ignore[no-untyped-def]
    server = DebaterProfile.objects.create(name="served", backend="openai", model="some-model", options={"base_urls": ["http://127.0.0.1:9/v1"]})
    debate = make_debate()
    Debate.objects.filter(pk=debate.pk).update(debater_a=server, debater_b=server)
    done = make_debate()
    Debate.objects.filter(pk=done.pk).update(status=Debate.Status.FINISHED)
    assert tasks.warm_models() == []


def test_it_warms_only_in_pools_that_run_tasks_in_the_worker_process(monkeypatch, settings) -> None:  # type: ignore[no-untyped-def]
    import threading

    from celery.concurrency import get_implementation

    called = threading.Event()
    monkeypatch.setattr(tasks, "warm_models", lambda: called.set() or [])
    for pool, warms in (("threads", True), ("solo", True), ("prefork", False)):
        called.clear()
        tasks._warm_before_consuming(options={"pool_cls": get_implementation(pool)})  # as the CLI passes it
        assert called.wait(5 if warms else 0.5) is warms, pool
    settings.ARENA_WORKER_WARM = False
    called.clear()
    tasks._warm_before_consuming(options={"pool_cls": get_implementation("threads")})
    assert not called.wait(0.5)
