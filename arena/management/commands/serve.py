from __future__ import annotations

import functools
import os
import signal
import socket
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
        parser.add_argument(
            "--web-processes",
            type=int,
            default=settings.ARENA_WEB_PROCESSES,
            help="Daphne processes sharing the one listening address (default ARENA_WEB_PROCESSES, 1): each "
            "writes live events to its own share of the sockets, so a crowd's fan-out spreads over the cores",
        )

    def handle(self, *args: object, **opts: object) -> None:
        env = dict(os.environ)
        web_processes = int(opts["web_processes"])  # type: ignore[call-overload]
        if web_processes < 1:
            raise CommandError("--web-processes must be at least 1")
        # Before anything is started, so that a refusal leaves nothing running. Opened here and
        # adopted by every Daphne, with one process too: its backlog is the kernel's most
        # (SOMAXCONN), where Twisted's own listen asks for 50, so a thousand spectators arriving
        # together wait to be accepted instead of having their connections dropped and retried
        # with growing back-off (seen as 40 of 1,000 handshakes cut and 55 s to connect while the
        # web process was busy); and a restarted Daphne finds the connections that came meanwhile.
        listener = listening_socket(str(opts["host"]), int(opts["port"]))  # type: ignore[call-overload]
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
                    # The model's compute yields to the web process, which has a thousand sockets
                    # to write when a delta comes (docs/streaming.md, "Fan-out").
                    nice=settings.ARENA_WORKER_NICE,
                )
            )
        daphne = [sys.executable, "-m", "daphne", "--websocket_connect_timeout", str(settings.ARENA_WS_CONNECT_TIMEOUT_S)]
        # One listening socket, opened here and inherited by every Daphne: the kernel hands each new
        # connection to one of them, with no proxy in between. A restarted Daphne adopts the same
        # socket, and the others (if any) keep accepting meanwhile.
        for number in range(1, web_processes + 1):
            children.append(
                Supervised(
                    "daphne" if web_processes == 1 else f"daphne {number}",
                    [sys.executable, "-c", ADOPT_AND_RUN_DAPHNE, str(listener.fileno()), *daphne[3:], "arena.asgi:application"],
                    env,
                    pass_fds=(listener.fileno(),),
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
            listener.close()
            stop_process(redis_proc)


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host:port`` that child processes can inherit and adopt."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise CommandError(f"cannot listen on {host}:{port}: {exc}") from None
    sock.set_inheritable(True)
    return sock


# Runs Daphne on the listening socket inherited at descriptor argv[1]. Twisted has no "fd:" endpoint
# any more (Daphne's own --fd builds one), so the socket is handed over as systemd does
# (sd_listen_fds: descriptor 3, LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID of this very process) and
# adopted with the "systemd:" endpoint. Nothing is imported before the descriptor is in place.
ADOPT_AND_RUN_DAPHNE = """
import os, socket, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
probe = socket.socket(fileno=os.dup(3))
domain = "INET6" if probe.family == socket.AF_INET6 else "INET"
probe.close()
os.environ.update(LISTEN_FDS="1", LISTEN_FDNAMES="web", LISTEN_PID=str(os.getpid()))
from daphne.cli import CommandLineInterface
CommandLineInterface().run(["-e", "systemd:domain=" + domain + ":index=0", *sys.argv[2:]])
"""


class Supervised:
    """One child process that is started again, with backoff, whenever it exits.

    The delay doubles from ``BACKOFF_MIN_S`` to ``BACKOFF_MAX_S`` while the child keeps dying soon
    after its start, and goes back to the minimum once it has run for ``STABLE_S``.

    ``STABLE_S`` is what tells a crash loop (a bad setting, a port taken, an import error: dead
    within seconds) from a child that was working and got killed. At 60 s a worker killed every
    half minute while running debates waited 1, 2, 4, 8, then 16 s to be started again, and its
    debates with it (bench/kill_worker.py: every debate moving again 37.8 s after the fifth kill).
    A child that lived 10 s is started again after the least delay, which still bounds a child
    that keeps dying later than that to one start per 11 s.
    """

    BACKOFF_MIN_S = 1.0
    BACKOFF_MAX_S = 30.0
    STABLE_S = 10.0

    def __init__(self, name: str, argv: list[str], env: dict[str, str], nice: int = 0, pass_fds: tuple[int, ...] = ()) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.nice = nice
        self.pass_fds = pass_fds
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.backoff_s = self.BACKOFF_MIN_S
        self.restart_at: float | None = None
        self.restarts = 0

    def start(self) -> None:
        # The niceness is set in the child before it execs, so every thread it starts has it (serve
        # itself runs no threads, so preexec_fn is safe here).
        nice = functools.partial(os.nice, self.nice) if self.nice else None
        self.proc = subprocess.Popen(self.argv, env=self.env, preexec_fn=nice, pass_fds=self.pass_fds)  # noqa: PLW1509
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
