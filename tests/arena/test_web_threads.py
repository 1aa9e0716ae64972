"""The web process's threads for Django's synchronous code (arena/web_threads.py): a few long-lived
ones instead of a new one per request, each request still on one thread throughout."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async

from arena.web_threads import BoundedSyncThreads


class Recorder:
    """An ASGI app whose request runs sync code that bridges back to async and to sync again (as
    Django's middleware chain does under ASGI), recording the thread of each sync part."""

    def __init__(self, pause: float = 0.0) -> None:
        self.pause = pause
        self.threads: list[tuple[str, int, int]] = []  # (request, outer thread, inner thread)
        self.names: list[str] = []  # the outer thread's name

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await sync_to_async(self._sync, thread_sensitive=True)(scope["path"])

    def _sync(self, name: str) -> None:
        outer = threading.get_ident()
        self.names.append(threading.current_thread().name)
        inner = async_to_sync(self._bridge)()
        self.threads.append((name, outer, inner))

    async def _bridge(self) -> int:
        await asyncio.sleep(self.pause)
        return await sync_to_async(threading.get_ident, thread_sensitive=True)()


def _one_after_another(app: Any, count: int) -> None:
    async def main() -> None:
        for i in range(count):
            await _request(app, f"/{i}")

    asyncio.run(main())


async def _request(app: Any, path: str, kind: str = "http") -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        pass

    await app({"type": kind, "path": path}, receive, send)


def test_requests_one_after_another_reuse_one_thread() -> None:
    recorder = Recorder()
    app = BoundedSyncThreads(recorder, 4)
    _one_after_another(app, 5)

    threads = {outer for _, outer, _ in recorder.threads}
    assert len(recorder.threads) == 5 and len(threads) == 1
    assert threading.get_ident() not in threads  # never the event loop's
    assert set(recorder.names) == {"web-sync-0_0"}


def test_a_burst_of_requests_runs_on_at_most_the_configured_threads_each_on_one_thread() -> None:
    recorder = Recorder(pause=0.01)
    app = BoundedSyncThreads(recorder, 3)

    async def main() -> None:
        await asyncio.gather(*[_request(app, f"/{i}") for i in range(30)])

    asyncio.run(main())

    assert len(recorder.threads) == 30
    assert all(outer == inner for _, outer, inner in recorder.threads)  # thread-sensitive code stays put
    assert len({outer for _, outer, _ in recorder.threads}) == 3  # spread over all of them, never more
    assert app.in_flight == [0, 0, 0]


def test_zero_threads_leaves_django_its_thread_per_request() -> None:
    recorder = Recorder()
    _one_after_another(BoundedSyncThreads(recorder, 0), 3)

    assert len(recorder.threads) == 3
    assert all(outer == inner for _, outer, inner in recorder.threads)
    assert not any(name.startswith("web-sync-") for name in recorder.names)  # none of the long-lived threads


def test_websockets_pass_through_untouched() -> None:
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    wrapped = BoundedSyncThreads(app, 2)
    asyncio.run(_request(wrapped, "/ws/debates/1/", kind="websocket"))

    assert seen == ["websocket"] and wrapped.in_flight == [0, 0]


def test_the_web_application_uses_the_configured_threads(settings) -> None:  # type: ignore[no-untyped-def]
    from arena.asgi import django_asgi_app

    assert isinstance(django_asgi_app, BoundedSyncThreads)
    assert django_asgi_app.threads == settings.ARENA_WEB_THREADS


def test_the_middleware_chain_runs_synchronously_in_one_go_under_asgi() -> None:
    """The sign-in throttle is synchronous only; placed last, every middleware above it runs on
    the request's thread in one go, none in async mode (each step a hop to the event loop)."""
    from django.conf import settings
    from django.core.handlers.asgi import ASGIHandler
    from django.utils.deprecation import MiddlewareMixin

    built: list[object] = []
    original = MiddlewareMixin.__init__

    def record(self: MiddlewareMixin, get_response: Any) -> None:
        original(self, get_response)
        built.append(self)

    MiddlewareMixin.__init__ = record  # type: ignore[method-assign]
    try:
        ASGIHandler().load_middleware(is_async=True)
    finally:
        MiddlewareMixin.__init__ = original  # type: ignore[method-assign]

    assert settings.MIDDLEWARE[-1] == "arena.ratelimit.LoginThrottleMiddleware"
    assert built and not any(m.async_mode for m in built)  # type: ignore[attr-defined]
