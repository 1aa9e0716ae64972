"""The lease sweep (arena/sweep.py, run by every worker): debates and tournament chunks whose worker
died are queued again, once, and nothing a live worker holds is touched."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from arena import services, sweep
from arena.engine.protocol import Limits
from arena.models import Debate, Tournament, Turn
from debaters.models import DebaterProfile

pytestmark = pytest.mark.django_db(transaction=True)

SPEECH = "I argue <quote>There was a thump.</quote> so I win."


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _running(debate: Debate, owner: str, expires_in_s: float) -> Debate:
    Debate.objects.filter(pk=debate.pk).update(
        status=Debate.Status.RUNNING, lease_owner=owner, lease_expires=timezone.now() + timedelta(seconds=expires_in_s)
    )
    debate.refresh_from_db()
    return debate


def test_it_queues_again_a_debate_whose_lease_expired_and_leaves_live_ones(make_debate) -> None:  # type: ignore[no-untyped-def]
    expired = _running(make_debate(), "otherhost:1:a", -5)
    live = _running(make_debate(), "otherhost:1:b", 60)

    found = sweep.requeue_expired()

    assert found.debates == [expired.pk]
    expired.refresh_from_db()
    live.refresh_from_db()
    assert (expired.status, expired.lease_owner, expired.lease_expires) == (Debate.Status.QUEUED, "", None)
    assert live.status == Debate.Status.RUNNING and live.lease_owner == "otherhost:1:b"
    assert sweep.requeue_expired().debates == []  # taken once, not again


def test_it_takes_back_at_once_a_debate_whose_owner_was_a_process_of_this_host_that_is_gone(make_debate) -> None:  # type: ignore[no-untyped-def]
    host = socket.gethostname()
    dead = _running(make_debate(), f"{host}:{_dead_pid()}:x", 60)
    alive = _running(make_debate(), sweep.lease_owner(), 60)

    found = sweep.requeue_expired()

    assert found.debates == [dead.pk]
    alive.refresh_from_db()
    assert alive.status == Debate.Status.RUNNING


def test_it_leaves_a_live_worker_of_this_host_its_debate_even_past_its_lease(make_debate) -> None:  # type: ignore[no-untyped-def]
    # A starved machine renews late; the worker is alive and would only throw its work away.
    busy = _running(make_debate(), sweep.lease_owner(), -30)

    assert sweep.requeue_expired().debates == []
    busy.refresh_from_db()
    assert busy.status == Debate.Status.RUNNING


def test_it_tells_its_own_process_from_a_dead_predecessor_with_the_same_pid() -> None:
    host = socket.gethostname()

    assert sweep.local_owner_alive(sweep.lease_owner()) is True
    assert sweep.local_owner_alive(f"{host}:{os.getpid()}:deadbeef0000") is False  # a container's pid 1, restarted
    assert sweep.local_owner_alive("elsewhere:1:x") is None


def test_it_returns_expired_tournament_debates_by_tournament_and_only_for_running_ones(make_debate) -> None:  # type: ignore[no-untyped-def]
    running = Tournament.objects.create(name="running", status=Tournament.Status.RUNNING, config={})
    paused = Tournament.objects.create(name="paused", status=Tournament.Status.PAUSED, config={})
    a = make_debate()
    b = make_debate()
    Debate.objects.filter(pk=a.pk).update(tournament=running)
    Debate.objects.filter(pk=b.pk).update(tournament=paused)
    _running(a, "otherhost:1:a", -5)
    _running(b, "otherhost:1:b", -5)

    found = sweep.requeue_expired()

    assert found.debates == []
    assert dict(found.tournament_debates) == {running.pk: [a.pk]}
    assert set(Debate.objects.filter(pk__in=[a.pk, b.pk]).values_list("status", flat=True)) == {Debate.Status.QUEUED}


@pytest.mark.timeout(180)
def test_a_worker_resumes_a_debate_whose_lease_expired_with_no_message_left_in_the_queue(  # type: ignore[no-untyped-def]
    celery_worker_proc, question
) -> None:
    profile = DebaterProfile.objects.create(name="sweep", backend="scripted", model="script", options={"text": SPEECH})
    debate = services.create_debate(
        question=question, debater_a=profile, debater_b=profile,
        limits=Limits(rounds=1, max_tokens=32, word_limit=60, context_tokens=200), enqueue=False, seed=5,
    )
    # Its worker "died" on another host (so only the lease tells) and the broker lost its message.
    # The lease runs out after the worker's start-up (which queues only what is already expired), so
    # nothing but the periodic sweep can bring it back.
    _running(debate, "lost-host:1:x", 3)

    deadline = time.monotonic() + 90
    while Debate.objects.get(pk=debate.pk).status != Debate.Status.FINISHED:
        assert time.monotonic() < deadline, celery_worker_proc.log_path.read_text()[-3000:]
        time.sleep(0.3)

    debate.refresh_from_db()
    assert debate.attempts == 1  # claimed once, by the worker the sweep handed it to
    assert list(Turn.objects.filter(debate=debate).order_by("index").values_list("index", flat=True)) == [0, 1]
