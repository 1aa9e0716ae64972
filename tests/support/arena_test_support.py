"""Helpers shared by tests (importable from any test module: tests/support is on sys.path)."""

from __future__ import annotations


def session_cookie(user) -> str:  # type: ignore[no-untyped-def]
    """A real session for ``user``, as the browser would hold it after signing in."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def signed_in(user):  # type: ignore[no-untyped-def]
    """A test client with ``user`` signed in."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def ws_headers(user, origin: str = "http://127.0.0.1") -> list[tuple[bytes, bytes]]:  # type: ignore[no-untyped-def]
    return [(b"cookie", f"sessionid={session_cookie(user)}".encode()), (b"origin", origin.encode())]


PASSWORD = "correct-horse-battery-staple"

# Flags for Debian's Chromium as root in a sandbox with no network (see the machine notes).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def served_model_folder():  # type: ignore[no-untyped-def]
    """The embedded model's converted folder, as ``transformers serve`` loads it (it needs ``architectures``)."""
    import json
    from pathlib import Path

    from debaters.embedded import ensure_converted

    folder = Path(ensure_converted(progress=False))
    config = json.loads((folder / "config.json").read_text())
    assert config.get("architectures"), f"{folder}/config.json names no architectures; transformers serve needs them"
    return folder


def transformers_cli():  # type: ignore[no-untyped-def]
    """The ``transformers`` command of this environment, with what its ``serve`` needs (the dev extra)."""
    import importlib.util
    import sys
    from pathlib import Path

    executable = Path(sys.executable).with_name("transformers")
    assert executable.exists(), f"{executable} is missing: install the dev extra (pip install -e '.[dev]')"
    for module in ("fastapi", "uvicorn"):
        assert importlib.util.find_spec(module), f"transformers serve needs {module}: install the dev extra"
    return executable


def sockets_of_a_dead_process(session_key: str, count: int, limit: int) -> int:
    """Another web process, simulated: on a thread, event loop and Redis connection of its own it
    takes ``count`` places in the session's shared socket count (arena.ratelimit.SessionSockets),
    then stops without freeing them, as a process that crashes does. How many it got."""
    import asyncio
    import threading

    from django.conf import settings
    from redis import asyncio as aioredis

    from arena.ratelimit import SessionSockets

    got: list[int] = []

    async def run() -> None:
        client = aioredis.Redis.from_url(settings.REDIS_URL)
        sockets = SessionSockets(client=lambda: client)
        slots = [await sockets.acquire(session_key, limit) for _ in range(count)]
        got.append(sum(slot is not None for slot in slots))
        await client.aclose()
        # The loop ends here; asyncio.run cancels the refresher, the places stay until they expire.

    thread = threading.Thread(target=asyncio.run, args=(run(),))
    thread.start()
    thread.join()
    return got[0]
