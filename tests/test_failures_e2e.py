"""Failure is normal, against real processes.

1. A model server that goes down mid-debate: a debate whose debaters use the openai backend against a real
   ``transformers serve`` (started here, stopped after round 1) has its next turns retried with backoff,
   then is marked failed with the reason on its page; a debate on the in-process transformers backend in
   the same lockstep batch finishes.
2. A worker killed mid-turn (SIGKILL): a new worker resumes the debate from its last committed turn, so
   every turn exists exactly once and the turns committed before the kill are unchanged.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from arena_test_support import served_model_folder, transformers_cli
from conftest_paths import ARTIFACTS

from arena import services, worker_loop
from arena.engine.protocol import Limits
from arena.models import Debate, Question, Turn
from arena.runner import run_debates
from arena.streaming import read_inflight
from debaters.backends import forget_backends
from debaters.models import DebaterProfile

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

LIMITS = Limits(rounds=2, max_tokens=16, word_limit=60, context_tokens=100)
# A killed worker's message comes back after the visibility timeout, and its debate's lease expires:
# both short, so that the test does not wait an hour.
FAST_RECOVERY = {"CELERY_VISIBILITY_TIMEOUT": "5", "ARENA_LEASE_SECONDS": "6"}
# ResilientModel's defaults: 3 retries after sleeps drawn from [d/2, d] for d = 0.5, 1 and 2 seconds.
MIN_BACKOFF_S = 0.25 + 0.5 + 1.0


@pytest.fixture(autouse=True)
def _fresh_backends() -> Iterator[None]:
    forget_backends()
    yield
    forget_backends()


def _wait(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def _debate(question: Question, profile: DebaterProfile, seed: int) -> Debate:
    """A 2-round debate under the default constitution less its AI concession check: every turn is one
    generation (the check is a second model call per turn, which these tests do not need)."""
    from arena.constitution import DEFAULT_PREAMBLE, DEFAULT_PRINCIPLES, DEFAULT_RULES
    from arena.models import Constitution

    constitution, _ = Constitution.objects.get_or_create(
        name="failures-e2e", version=1,
        defaults={"preamble": DEFAULT_PREAMBLE, "principles": DEFAULT_PRINCIPLES, "rules": {**DEFAULT_RULES, "check_concession": False}},
    )
    return services.create_debate(
        question=question, debater_a=profile, debater_b=profile, limits=LIMITS, constitution=constitution, enqueue=False, seed=seed
    )


def _embedded_profile() -> DebaterProfile:
    return DebaterProfile.objects.create(
        name="embedded-cpu", backend="transformers", model="embedded", options={"device": "cpu"},
        sampling={"temperature": 0.0}, context_tokens=100,
    )


# ----- 1. a model server that goes down -----


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    base_url: str
    model: str
    port: int

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def served_model(tmp_path: Path) -> Iterator[Served]:
    folder = served_model_folder()
    executable = transformers_cli()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / "failures-transformers-serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(executable), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    served = Served(process, f"http://127.0.0.1:{port}/v1", str(folder), port)
    try:
        def healthy() -> bool:
            assert process.poll() is None, f"transformers serve exited:\n{log_path.read_text()[-3000:]}"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        _wait(healthy, 90, "transformers serve to answer /health", every=0.25)
        yield served
    finally:
        served.stop()


def test_a_model_server_that_goes_down_fails_its_debate_with_the_reason_and_spares_the_others(
    served_model: Served, question: Question, client, alice  # type: ignore[no-untyped-def]
) -> None:
    from django.utils import timezone

    served = DebaterProfile.objects.create(
        name="served", backend="openai", model=served_model.model,
        options={"base_urls": [served_model.base_url], "timeout_s": 60}, sampling={"temperature": 0.0}, context_tokens=100,
    )
    doomed = _debate(question, served, seed=1)
    healthy = _debate(question, _embedded_profile(), seed=2)
    stopped_at: list[datetime] = []

    def on_turn(debate_id: int, committed: int) -> None:
        # Called on the runner's loop once a step's turns are committed, before the next step starts:
        # the server goes down between round 1 and round 2 of the served debate.
        if debate_id == doomed.pk and not stopped_at:
            served_model.stop()
            stopped_at.append(timezone.now())

    outcomes = worker_loop.run(run_debates([doomed.pk, healthy.pk], "owner-failures", on_turn=on_turn), timeout=200)

    assert stopped_at, "the served debate never committed a turn"
    assert outcomes[doomed.pk].status == "failed" and outcomes[healthy.pk].status == "finished"
    doomed.refresh_from_db()
    assert doomed.status == Debate.Status.FAILED
    assert doomed.error.startswith("model backend failed:")
    assert "failed after 4 attempts" in doomed.error and f"127.0.0.1:{served_model.port}/v1" in doomed.error
    # Three retries with backoff before giving up: not an instant failure.
    assert (doomed.finished_at - stopped_at[0]).total_seconds() >= MIN_BACKOFF_S
    # Round 1 (served while the server was up) is kept; nothing of round 2 was committed.
    assert sorted(doomed.turns.values_list("index", flat=True)) == [0, 1]
    assert all(t.text.strip() for t in doomed.turns.all())
    healthy.refresh_from_db()
    assert healthy.status == Debate.Status.FINISHED and healthy.error == ""
    assert sorted(healthy.turns.values_list("index", flat=True)) == [0, 1, 2, 3]

    client.force_login(alice)
    page = client.get(f"/debates/{doomed.pk}/").content.decode()
    error = page[page.index('id="debate-error"') :]
    assert "model backend failed:" in error[:2000] and "failed after 4 attempts" in error[:2000]


# ----- 2. a worker killed mid-turn -----


def test_a_debate_resumes_from_its_last_committed_turn_after_its_worker_is_killed(
    celery_worker_proc, question: Question  # type: ignore[no-untyped-def]
) -> None:
    Worker = type(celery_worker_proc)
    from arena.celery import app

    # The fixture's worker has production timeouts: replace it by one that recovers fast.
    celery_worker_proc.stop()
    app.control.purge()  # messages of earlier runs name debates of a dropped test database
    first = Worker(ARTIFACTS / "celery-failures-1.log", concurrency=2, extra_env=FAST_RECOVERY)
    second = None
    try:
        # Created after the worker is ready: its start-up sweep would otherwise queue it a second time.
        debate = _debate(question, _embedded_profile(), seed=3)
        services.enqueue_debate(debate.pk)

        def one_committed_and_another_streaming() -> bool:
            committed = set(Turn.objects.filter(debate=debate).values_list("index", flat=True))
            if not committed:
                return False
            inflight = worker_loop.run(read_inflight(debate.pk))
            return any(index not in committed and entry.get("text") for index, entry in inflight.items())

        _wait(one_committed_and_another_streaming, 120, "a committed turn and another one streaming", every=0.05)
        first.kill()
        before = {t.index: (t.text, t.finished_at) for t in Turn.objects.filter(debate=debate)}
        debate.refresh_from_db()
        assert debate.status == Debate.Status.RUNNING and len(before) < 4
        killed_attempts = debate.attempts

        second = Worker(ARTIFACTS / "celery-failures-2.log", concurrency=2, extra_env=FAST_RECOVERY)

        def over() -> bool:
            return Debate.objects.get(pk=debate.pk).status in (Debate.Status.FINISHED, Debate.Status.FAILED)

        _wait(over, 150, "the debate to finish on the new worker")
    finally:
        first.stop()
        if second is not None:
            second.stop()
        app.control.purge()

    debate.refresh_from_db()
    assert debate.status == Debate.Status.FINISHED, debate.error
    assert debate.attempts > killed_attempts  # claimed again after the kill
    turns = list(Turn.objects.filter(debate=debate).order_by("index"))
    assert [t.index for t in turns] == [0, 1, 2, 3]
    assert all(t.text.strip() for t in turns)
    after = {t.index: (t.text, t.finished_at) for t in turns}
    assert {i: after[i] for i in before} == before
