"""Shared fixtures. Named people: alice the researcher, bob a judge, charlie a judge of nothing."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = Path(__file__).resolve().parent / "support"
# Test doubles live outside the product; the worker subprocesses find them the same way.
os.environ["ARENA_BACKENDS"] = "scripted=arena_test_doubles.ScriptedBackend"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SUPPORT), os.environ.get("PYTHONPATH", "")]))
sys.path.insert(0, str(SUPPORT))
ARTIFACTS = ROOT / "test-artifacts"
from arena_test_support import PASSWORD  # noqa: E402


# After each of these tests (end-to-end debates, tournaments, imports) the record must pass
# ``manage.py check_record`` (judging/record.py): a bug that corrupts it fails here, not in a paper.
RECORD_CHECKED = re.compile(r"(^|/)test_(\w*e2e\w*|tournament_\w+|run_tournament_command|\w*imports?\w*)\.py$")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    result = yield  # a failing test raises here and is reported as it is
    fixtures = set(getattr(item, "fixturenames", ()))
    uses_db = item.get_closest_marker("django_db") is not None or bool(fixtures & {"db", "transactional_db"})
    if uses_db and RECORD_CHECKED.search(item.path.as_posix()):
        from judging.record import check_record

        violations = check_record()
        if violations:
            lines = "\n".join(f"  {v}" for v in violations[:50])
            raise AssertionError(f"the record breaks its invariants after this test (manage.py check_record):\n{lines}")
    return result


@pytest.fixture
def roles(db: None) -> None:
    from arena.roles import ensure_groups

    ensure_groups()


def _user(username: str, group: str | None):  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user = get_user_model().objects.create_user(username=username, password=PASSWORD)
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def alice(roles: None):  # type: ignore[no-untyped-def]
    return _user("alice", "researcher")


@pytest.fixture
def bob(roles: None):  # type: ignore[no-untyped-def]
    return _user("bob", "judge")


@pytest.fixture
def charlie(roles: None):  # type: ignore[no-untyped-def]
    return _user("charlie", "judge")


@pytest.fixture
def fast_passwords(settings) -> None:  # type: ignore[no-untyped-def]
    """The named users hash a password each; the default PBKDF2 costs ~0.5 s a user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def browser() -> Iterator[object]:
    """Debian's Chromium driven by Playwright (no browser download at test time)."""
    from playwright.sync_api import sync_playwright

    from arena_test_support import CHROMIUM_ARGS

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
        # Queries in the test ran while Playwright's event loop was set, in a context of their own
        # with its own connection: close it, or the test database cannot be dropped at the end.
        from django.db import connections

        connections.close_all()


@pytest.fixture
def chromium_page(browser, daphne_server: "Server") -> object:  # type: ignore[no-untyped-def]
    """A Chromium page (Playwright) for a test that talks to ``daphne_server``."""
    return browser.new_page()


@pytest.fixture
def question(db: None):  # type: ignore[no-untyped-def]
    """The first sample question (a real QuALITY story)."""
    import json

    from arena.importing import SAMPLE_SET, parse_line
    from arena.models import Question, QuestionSet

    qset = QuestionSet.objects.create(name="test-set", licence="CC-BY-4.0")
    with SAMPLE_SET.open() as handle:
        row = parse_line(handle.readline())
    ext = row.pop("external_id")
    return Question.objects.create(question_set=qset, external_id=ext, **row)


@pytest.fixture
def profile(db: None):  # type: ignore[no-untyped-def]
    from debaters.profiles import default_profile

    return default_profile()


@pytest.fixture
def make_debate(question, profile):  # type: ignore[no-untyped-def]
    """Create a debate without queueing it; pass judges=[...] to assign them."""
    from arena import services
    from arena.engine.protocol import Limits

    def _make(judges=(), rounds: int = 1, max_tokens: int = 24, context_tokens: int = 200, **kwargs):  # type: ignore[no-untyped-def]
        return services.create_debate(
            question=question,
            debater_a=profile,
            debater_b=profile,
            limits=Limits(rounds=rounds, max_tokens=max_tokens, word_limit=60, context_tokens=context_tokens),
            judges=judges,
            enqueue=False,
            seed=kwargs.pop("seed", 1234),
            **kwargs,
        )

    return _make


@pytest.fixture
def finished_debate(make_debate, bob):  # type: ignore[no-untyped-def]
    """A finished one-round debate with two committed turns, assigned to bob (no model involved)."""
    from django.utils import timezone

    from arena.models import Debate, Turn

    debate = make_debate(judges=[bob])
    now = timezone.now()
    for side in (0, 1):
        Turn.objects.create(
            debate=debate, index=side, round=1, side=side, text=f"Speech for answer {side + 1}.",
            prompt=[], prompt_hash="x", started_at=now, finished_at=now,
        )
    Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.FINISHED, started_at=now, finished_at=now)
    debate.refresh_from_db()
    return debate


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _test_db_url() -> str:
    from django.db import connection

    s = connection.settings_dict
    return f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def _child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = _test_db_url()
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


class Worker:
    """A real Celery worker process on the test database."""

    def __init__(self, log_path: Path, concurrency: int = 4, extra_env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "arena", "worker", "--pool=threads", f"--concurrency={concurrency}",
             "-Q", os.environ.get("CELERY_QUEUE", "arena"), "--loglevel=INFO", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-n", f"test-{time.time_ns()}@%h"],
            cwd=ROOT, env=_child_env(**(extra_env or {})), stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited: {log_path.read_text()[-3000:]}")
            if b"ready." in log_path.read_bytes():
                return
            time.sleep(0.2)
        raise RuntimeError(f"celery worker did not become ready: {log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: the worker dies mid-task, as in a crash."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def celery_worker_proc(transactional_db: None) -> Iterator[Worker]:
    ARTIFACTS.mkdir(exist_ok=True)
    worker = Worker(ARTIFACTS / "celery-worker.log")
    yield worker
    worker.stop()


class Server:
    """Daphne serving the real ASGI app (HTTP and WebSockets) on the test database."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "arena.asgi:application"],
            cwd=ROOT, env=_child_env(), stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daphne exited: {log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("daphne did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture
def daphne_server(transactional_db: None) -> Iterator[Server]:
    ARTIFACTS.mkdir(exist_ok=True)
    server = Server(ARTIFACTS / "daphne.log")
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def _close_worker_loop_connections(django_db_setup: None, django_db_blocker) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """The runner's database work happens on the worker loop's executor thread: close its connection
    before the test database is dropped."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    from arena import worker_loop

    with django_db_blocker.unblock():
        worker_loop.run(sync_to_async(connections.close_all)())



@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> Iterator[None]:
    """Each test gets its own channel layer instance.

    Tests use the layer from several event loops (pytest-asyncio's, async_to_sync's, the worker
    loop's). A receive still pending when a test's loop closes leaves channels-redis' receive lock
    held and bound to that dead loop; a fresh instance per test keeps that from leaking into the
    next test. (A server process has one loop and never meets this.)
    """
    from channels.layers import channel_layers

    channel_layers.backends = {}
    yield
    channel_layers.backends = {}
