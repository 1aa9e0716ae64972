"""One asyncio event loop per process, living as long as the process, in a daemon thread.

Celery tasks are synchronous; the debate runner, the channel layer and the model backends are
async. Running every task's coroutine on this one loop (instead of an ``async_to_sync`` per call)
keeps Redis connections and backend clients alive between tasks and lets concurrent debates in a
threads-pool worker share the loop, so their model requests meet in the same batches.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid: int | None = None


def get_loop() -> asyncio.AbstractEventLoop:
    global _loop, _pid
    with _lock:
        # A forked child inherits the variable but not the thread: start a fresh loop there.
        if _loop is None or _pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="arena-worker-loop", daemon=True)
            thread.start()
            _loop, _pid = loop, os.getpid()
        return _loop


def run(coro: Coroutine[object, object, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the process loop and wait for its result from a synchronous caller."""
    future = asyncio.run_coroutine_threadsafe(coro, get_loop())
    try:
        return future.result(timeout)
    except BaseException:
        future.cancel()
        raise
