"""The embedded Redis of `make run` (arena.embedded.start_redis)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from arena.embedded import redis_is_up, start_redis, stop_process


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_it_starts_from_a_relative_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-server changes into --dir before opening --logfile: a relative data directory must not
    point the log file at a path that only exists from where serve was started."""
    monkeypatch.chdir(tmp_path)
    port = _free_port()
    proc = start_redis(Path("data"), port)
    try:
        assert proc is not None and redis_is_up(port)
        assert (tmp_path / "data" / "redis" / "redis.log").exists()
    finally:
        stop_process(proc)
    assert not redis_is_up(port)
