"""The threads a web process runs Django's synchronous code on (middleware, views, the ORM).

Under ASGI, Django wraps every HTTP request in its own ``asgiref`` ``ThreadSensitiveContext``, so
every request starts a new thread, and with it a new database connection: connections are
per thread, so ``CONN_MAX_AGE`` never gets to reuse one (the thread that held it is gone), and
under SQLite every request paid for ``connect()`` and the ``init_command`` PRAGMAs. Under a burst
of requests there are as many threads as requests in flight, all contending for the GIL and, for
writes, for SQLite's one write lock, which a waiter polls for with growing sleeps (SQLite's
busy handler), so the lock sits idle between holders while dozens sleep: the process served fewer
requests a second the more it was sent.

:class:`BoundedSyncThreads` gives each HTTP request one of ``ARENA_WEB_THREADS`` long-lived
threads instead (the least busy one), through asgiref's own API for that
(``ThreadSensitiveContext(executor=...)``, asgiref 3.13, pinned in pyproject.toml): a request's synchronous parts still all run on one
thread, as Django requires, requests beyond the threads wait their turn in order, and each thread
keeps its database connection for ``CONN_MAX_AGE``. ``ARENA_WEB_THREADS=0`` restores Django's
thread per request. WebSockets are untouched (Channels runs their database calls on its own
thread).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext

ASGIApp = Any


class BoundedSyncThreads:
    """ASGI middleware: each HTTP request's synchronous code runs on one of ``threads`` long-lived
    threads, the one with the fewest requests in flight (ties: the first). A web process runs one
    event loop, so the counts need no lock. ``threads=0``: Django's default, a thread per request."""

    def __init__(self, app: ASGIApp, threads: int) -> None:
        if threads < 0:
            raise ValueError("threads must be 0 or more")
        self.app = app
        self.threads = threads
        self.in_flight = [0] * threads
        self._executors: list[ThreadPoolExecutor | None] = [None] * threads

    def _executor(self, index: int) -> ThreadPoolExecutor:
        executor = self._executors[index]
        if executor is None:
            # One worker each: asgiref runs a context's calls one at a time, on one thread.
            executor = self._executors[index] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"web-sync-{index}")
        return executor

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.threads:
            await self.app(scope, receive, send)
            return
        index = min(range(self.threads), key=self.in_flight.__getitem__)
        self.in_flight[index] += 1
        try:
            # The outermost context decides the thread: Django's own per-request context inside it
            # then changes nothing.
            async with ThreadSensitiveContext(executor=self._executor(index)):
                await self.app(scope, receive, send)
        finally:
            self.in_flight[index] -= 1
