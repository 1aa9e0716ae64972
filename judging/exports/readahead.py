"""The read-ahead thread: a source's items produced by a reader thread a few items ahead."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def read_ahead(make: Callable[[], Iterator[T]], depth: int = 2) -> Iterator[T]:
    """The items of ``make()``, produced by a reader thread up to ``depth`` items ahead.

    The reader has its own database connection: while it waits for PostgreSQL, the caller builds
    and writes rows (the GIL is free during network waits and Arrow's compression). Inside an
    atomic block (a test's transaction) another connection would not see the data, so the items
    are then produced in the caller's thread. An error in the reader is raised in the caller.
    """
    from django.db import connection, connections

    if depth <= 0 or connection.in_atomic_block:
        yield from make()
        return
    items: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in make():
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
            put(_Failed(exc))
        finally:
            connections.close_all()

    reader = threading.Thread(target=produce, name="export-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        reader.join()
