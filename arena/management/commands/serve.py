from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from arena.embedded import start_redis, stop_process


class Command(BaseCommand):
    help = (
        "Run the whole product: Daphne (web and WebSockets) and a Celery worker, plus the embedded Redis "
        "when REDIS_URL is unset. A process that exits is started again (with backoff, the others stay "
        "up). Ctrl-C stops everything it started."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--concurrency",
            type=int,
            default=8,
            help="debates one worker runs at once (threads sharing one in-process model, so their requests batch)",
        )
        parser.add_argument("--no-worker", action="store_true", help="serve the web only")

    def handle(self, *args: object, **opts: object) -> None:
        env = dict(os.environ)
        redis_proc = None
        if settings.EMBEDDED_REDIS:
            try:
                redis_proc = start_redis(settings.DATA_DIR, settings.EMBEDDED_REDIS_PORT)
            except RuntimeError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"embedded Redis on 127.0.0.1:{settings.EMBEDDED_REDIS_PORT}")
        env["REDIS_URL"] = settings.REDIS_URL
        if "OMP_WAIT_POLICY" not in env:
            # The worker shares this machine's cores with the web server and the database: torch's
            # OpenMP threads spin only briefly before sleeping (see .env.example).
            env.setdefault("GOMP_SPINCOUNT", "5000")
        children: list[Supervised] = []
        if not opts["no_worker"]:
            children.append(
                Supervised(
                    "celery worker",
                    [sys.executable, "-m", "celery", "-A", "arena", "worker", "--pool=threads",
                     f"--concurrency={opts['concurrency']}", "-Q", settings.CELERY_TASK_DEFAULT_QUEUE,
                     "--loglevel=INFO", "--without-gossip", "--without-mingle"],
                    env,
                )
            )
        children.append(
            Supervised(
                "daphne",
                [sys.executable, "-m", "daphne", "-b", str(opts["host"]), "-p", str(opts["port"]),
                 "--websocket_connect_timeout", str(settings.ARENA_WS_CONNECT_TIMEOUT_S), "arena.asgi:application"],
                env,
            )
        )
        stop = False

        def _stop(signum: int, frame: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        try:
            for child in children:
                child.start()
            self.stdout.write(self.style.SUCCESS(f"Debate Arena on http://{opts['host']}:{opts['port']}/  (Ctrl-C stops)"))
            while not stop:
                if redis_proc is not None and redis_proc.poll() is not None:
                    # Everything depends on it: start it again at once (it keeps no queue on disk; each
                    # worker's start and its lease sweep queue again what was lost).
                    self.stderr.write(f"embedded Redis exited with {redis_proc.returncode}; starting it again")
                    redis_proc = start_redis(settings.DATA_DIR, settings.EMBEDDED_REDIS_PORT)
                for child in children:
                    note = child.check()
                    if note:
                        self.stderr.write(note)
                time.sleep(0.2)
        finally:
            for child in children:
                child.stop()
            stop_process(redis_proc)


class Supervised:
    """One child process that is started again, with backoff, whenever it exits.

    The delay doubles from ``BACKOFF_MIN_S`` to ``BACKOFF_MAX_S`` while the child keeps dying soon
    after its start, and goes back to the minimum once it has run for ``STABLE_S``.
    """

    BACKOFF_MIN_S = 1.0
    BACKOFF_MAX_S = 30.0
    STABLE_S = 60.0

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.backoff_s = self.BACKOFF_MIN_S
        self.restart_at: float | None = None
        self.restarts = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env)
        self.started_at = time.monotonic()
        self.restart_at = None

    def check(self) -> str:
        """Start the child again when it has exited and its backoff has passed; a line to log, or ''."""
        now = time.monotonic()
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restarts += 1
                self.start()
                return f"{self.name}: started again (restart {self.restarts})"
            return ""
        if self.proc is None or self.proc.poll() is None:
            return ""
        if now - self.started_at >= self.STABLE_S:
            self.backoff_s = self.BACKOFF_MIN_S
        delay = self.backoff_s
        self.backoff_s = min(self.backoff_s * 2, self.BACKOFF_MAX_S)
        self.restart_at = now + delay
        return f"{self.name} exited with {self.proc.returncode}; starting it again in {delay:.0f} s"

    def stop(self) -> None:
        stop_process(self.proc, 20)
