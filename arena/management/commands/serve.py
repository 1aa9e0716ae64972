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
        "when REDIS_URL is unset. Ctrl-C stops everything it started."
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
        children: list[subprocess.Popen[bytes]] = []
        try:
            if not opts["no_worker"]:
                children.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "celery", "-A", "arena", "worker", "--pool=threads",
                         f"--concurrency={opts['concurrency']}", "-Q", settings.CELERY_TASK_DEFAULT_QUEUE,
                         "--loglevel=INFO", "--without-gossip", "--without-mingle"],
                        env=env,
                    )
                )
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "daphne", "-b", str(opts["host"]), "-p", str(opts["port"]), "arena.asgi:application"],
                    env=env,
                )
            )
            self.stdout.write(self.style.SUCCESS(f"Debate Arena on http://{opts['host']}:{opts['port']}/  (Ctrl-C stops)"))
            stop = False

            def _stop(signum: int, frame: object) -> None:
                nonlocal stop
                stop = True

            signal.signal(signal.SIGTERM, _stop)
            signal.signal(signal.SIGINT, _stop)
            while not stop:
                for child in children:
                    if child.poll() is not None:
                        raise CommandError(f"{child.args[2] if len(child.args) > 2 else child.args} exited with {child.returncode}")
                time.sleep(0.5)
        finally:
            for child in children:
                stop_process(child, 20)
            stop_process(redis_proc)
