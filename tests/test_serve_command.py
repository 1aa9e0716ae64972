"""`manage.py serve`, what `make run` ends with: the embedded Redis, a Celery worker and Daphne on
SQLite, as real processes; a killed worker is started again; SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(180)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> dict[int, str]:
    """Direct children of ``pid``: their command lines."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def _stop_everything(serve: subprocess.Popen[bytes]) -> None:
    """After a failure: SIGTERM first, so that serve stops its children (a SIGKILL would orphan the
    worker and Daphne), then make sure of everything it started."""
    started = _children(serve.pid) if serve.poll() is None else {}
    if serve.poll() is None:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait(10)
    for pid in started:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _start_serve(tmp_path: Path, *args: str, drop: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], int, int]:
    """``manage.py serve ARGS`` on a migrated SQLite database and an embedded Redis of its own in
    ``tmp_path`` (output in ``tmp_path/serve.log``); the process, its web port and its Redis port.
    ``drop``: environment variables the child must not inherit."""
    web_port, redis_port = _free_port(), _free_port()
    env = {
        k: v for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", *drop) and not k.startswith("PYTEST")
    }  # fmt: skip
    env.update(ARENA_DATA_DIR=str(tmp_path), ARENA_EMBEDDED_REDIS_PORT=str(redis_port), DJANGO_SETTINGS_MODULE="arena.settings")
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, cwd=ROOT, check=True, capture_output=True, timeout=120)
    with (tmp_path / "serve.log").open("wb") as log:  # the child keeps its own descriptor
        serve = subprocess.Popen([*manage, "serve", "--port", str(web_port), *args], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    return serve, web_port, redis_port


def _answers(web_port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{web_port}/accounts/login/", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_answering(serve: subprocess.Popen[bytes], web_port: int, tmp_path: Path, timeout_s: float = 90) -> None:
    """Until the login page answers; fails at once if serve exits, with the end of its log."""
    deadline = time.monotonic() + timeout_s
    while not _answers(web_port):
        assert serve.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
        time.sleep(0.5)


def _environ(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)


def test_serve_runs_web_worker_and_embedded_redis_restarts_a_killed_worker_and_stops_them(tmp_path: Path) -> None:
    serve, web_port, redis_port = _start_serve(
        tmp_path, "--concurrency", "1", drop=("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "ARENA_WORKER_NICE")
    )
    try:
        _wait_answering(serve, web_port, tmp_path)
        children = _children(serve.pid)
        workers = [pid for pid, cmd in children.items() if "celery" in cmd and "worker" in cmd]
        assert len(workers) == 1 and any("daphne" in cmd for cmd in children.values())
        assert any("redis-server" in cmd for cmd in children.values())
        # The worker's torch threads spin only briefly: it shares the cores with the web server.
        worker_env = _environ(workers[0])
        assert worker_env["GOMP_SPINCOUNT"] == "5000"
        assert worker_env["REDIS_URL"] == f"redis://127.0.0.1:{redis_port}/0"
        # The model's compute yields to the web: the worker runs 10 nicer than Daphne (ARENA_WORKER_NICE).
        daphne = next(pid for pid, cmd in children.items() if "daphne" in cmd)
        base = os.getpriority(os.PRIO_PROCESS, daphne)
        assert os.getpriority(os.PRIO_PROCESS, workers[0]) == min(base + 10, 19)

        # A crashed worker is started again while the web stays up.
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert httpx.get(f"http://127.0.0.1:{web_port}/accounts/login/", timeout=5).status_code == 200
            again = [pid for pid, cmd in _children(serve.pid).items() if "celery" in cmd and "worker" in cmd]
            if again and again != workers:
                break
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        assert "celery worker exited with -9; starting it again" in (tmp_path / "serve.log").read_text()
        assert os.getpriority(os.PRIO_PROCESS, again[0]) == min(base + 10, 19)  # the restarted one too
        children = _children(serve.pid)

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 0
        assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]  # every child stopped and reaped
    finally:
        _stop_everything(serve)


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


def test_serve_runs_several_web_processes_on_one_address_and_restarts_one_while_the_other_serves(tmp_path: Path) -> None:
    """``--web-processes 2``: two Daphne processes adopt the one listening socket that serve opened;
    a killed one is started again while the other keeps answering on the same address."""
    serve, web_port, _ = _start_serve(tmp_path, "--no-worker", "--web-processes", "2")

    def daphnes() -> list[int]:
        return sorted(pid for pid, cmd in _children(serve.pid).items() if "daphne" in cmd)

    def wait_listening(count: int) -> None:
        """Until Daphne has said "Listening" ``count`` times in all (each start says it once)."""
        deadline = time.monotonic() + 90
        while (tmp_path / "serve.log").read_text().count("Listening on") < count:
            assert serve.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)

    def answers_soon() -> bool:
        deadline = time.monotonic() + 30
        while not _answers(web_port):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    try:
        wait_listening(2)
        assert answers_soon() and len(daphnes()) == 2
        first, second = daphnes()
        # Both hold the listening socket serve opened (the same socket, not two bound ports).
        shared = _socket_inodes(first) & _socket_inodes(second) & _socket_inodes(serve.pid)
        assert shared, "the Daphne processes share serve's listening socket"

        os.kill(first, signal.SIGKILL)
        for _ in range(10):  # the other process answers on the same address meanwhile
            assert answers_soon()
        deadline = time.monotonic() + 60
        while not (len(daphnes()) == 2 and first not in daphnes()):
            assert serve.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        assert "exited with -9; starting it again" in (tmp_path / "serve.log").read_text()
        restarted = next(pid for pid in daphnes() if pid != second)
        deadline = time.monotonic() + 60
        while not _socket_inodes(restarted) & shared:
            assert time.monotonic() < deadline, "the restarted Daphne adopts the same socket"
            time.sleep(0.5)
        wait_listening(3)
        os.kill(second, signal.SIGKILL)  # now only the restarted one is left to answer
        assert answers_soon()

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 0
    finally:
        _stop_everything(serve)


def test_serve_queues_a_burst_of_connections_while_its_one_web_process_is_busy(tmp_path: Path) -> None:
    """One web process too adopts serve's listening socket, whose backlog is the kernel's most: a
    crowd arriving while Daphne cannot accept (stopped here) is queued by the kernel, not dropped.
    With Twisted's own listen (backlog 50) the connections beyond ~50 went unanswered and were
    retried with growing back-off; then a request on a queued connection is answered."""
    serve, web_port, _ = _start_serve(tmp_path, "--no-worker")
    crowd: list[socket.socket] = []
    daphne = None
    try:
        _wait_answering(serve, web_port, tmp_path)
        (daphne,) = [pid for pid, cmd in _children(serve.pid).items() if "daphne" in cmd]
        assert _socket_inodes(daphne) & _socket_inodes(serve.pid), "Daphne adopted serve's listening socket"
        os.kill(daphne, signal.SIGSTOP)
        for _ in range(300):
            sock = socket.socket()
            sock.settimeout(3)  # a dropped SYN would be retried after 1 s and again after 3 s
            sock.connect(("127.0.0.1", web_port))  # raises TimeoutError if the kernel did not queue it
            crowd.append(sock)
        os.kill(daphne, signal.SIGCONT)
        last = crowd[-1]
        last.settimeout(30)
        last.sendall(f"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1:{web_port}\r\nConnection: close\r\n\r\n".encode())
        assert last.recv(64).startswith(b"HTTP/1.1 200")
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 0
    finally:
        if daphne is not None:
            try:
                os.kill(daphne, signal.SIGCONT)
            except ProcessLookupError:
                pass
        for sock in crowd:
            sock.close()
        _stop_everything(serve)


def test_a_child_that_dies_at_once_backs_off_and_one_that_ran_a_while_restarts_at_once() -> None:
    """A crash loop (dead within seconds) waits 1, 2, 4 s between starts; a child that had run for
    20 s (a worker killed while running debates) is started again after the least delay,
    however often that happens, so its debates are not held up by a growing backoff."""
    from arena.management.commands.serve import Supervised

    child = Supervised("test child", [sys.executable, "-c", "pass"], dict(os.environ))
    child.start()

    def exits_and_waits(ran_s: float) -> float:
        assert child.proc is not None
        child.proc.wait(30)
        child.started_at = time.monotonic() - ran_s
        note = child.check()
        assert "starting it again" in note and child.restart_at is not None
        delay = child.restart_at - time.monotonic()
        child.restart_at = time.monotonic()  # no need to wait it out here
        assert child.check().startswith("test child: started again")
        return delay

    assert [round(exits_and_waits(0.1)) for _ in range(3)] == [1, 2, 4]
    # 20 s: a worker that had started, loaded its model and was running debates when it was killed.
    assert [round(exits_and_waits(20)) for _ in range(3)] == [1, 1, 1]
    assert round(exits_and_waits(0.1)) == 2  # dying at once again: the backoff grows from the least
    child.proc.wait(30)
