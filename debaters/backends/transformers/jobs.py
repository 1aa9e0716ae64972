"""Jobs: what the event-loop side hands to the scheduler thread, and how its items come back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from debaters.backends.base import BackendError, ChatMessage, GenerateRequest, StreamItem


class Job:
    """Base of everything in the scheduler's inbox. ``cancelled`` is set by the consumer's side."""

    __slots__ = ("cancelled", "done", "loop", "queue")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[StreamItem | list[float] | BackendError] = asyncio.Queue()
        self.cancelled = False  # written by the event loop thread, read by the scheduler
        self.done = False  # written by the scheduler once the last item has been sent


class GenJob(Job):
    __slots__ = ("request", "stream")

    def __init__(self, loop: asyncio.AbstractEventLoop, request: GenerateRequest, *, stream: bool) -> None:
        super().__init__(loop)
        self.request = request
        self.stream = stream  # False: only the Final is sent (generate_batch)


class ChoiceJob(Job):
    __slots__ = ("labels", "messages")

    def __init__(self, loop: asyncio.AbstractEventLoop, messages: Sequence[ChatMessage], labels: Sequence[str]) -> None:
        super().__init__(loop)
        self.messages = tuple(messages)
        self.labels = tuple(labels)


class Stop:
    """Inbox sentinel: finish the thread."""


def deliver(items: list[tuple[Job, StreamItem | list[float] | BackendError]]) -> None:
    for job, item in items:
        job.queue.put_nowait(item)
