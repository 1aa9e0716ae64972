"""One debate's live events to every socket of this web process that watches it, a frame per tick.

Why this exists: when every consumer joins the debate's channel group itself, each message costs
the process, *per socket*, a channel-layer queue, a task wake-up, a deserialisation and a
WebSocket frame. With a thousand spectators that per-socket work takes longer than the interval
between two deltas, so a backlog grows (p95 2.4 s measured, docs/streaming.md). Here one
``DebateBroadcaster`` per debate and event loop is the group's only member in this process: it
receives each message once and writes it to all local sockets in one pass. Whatever arrives
while a pass is being written is merged into the next pass, so each socket gets at most one frame
per pass (``batch_frame``): under load the frame rate falls to what the process can write, instead
of a queue growing behind it. With no backlog a message goes out alone, as soon as it arrives.

Guarantees kept (the client still rebuilds every speech from snapshot + deltas by sequence
number): events reach a socket in the order the group received them; a socket that is between
its snapshot request and the snapshot's send is *held* and its events are kept for it and sent
right after the snapshot (as the channel layer's queue did before), so no event falls between the
two and none is sent before the snapshot. The events are JSON already (serialised once by the
worker); a batch is made by joining them, never by parsing and serialising again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Sequence
from typing import Any, Protocol

from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings

from arena.streaming import group_name

logger = logging.getLogger(__name__)

EVENT_TYPE = "debate.event"


def batch_frame(texts: Sequence[str]) -> str:
    """The frame for events queued for one socket: the event itself when alone, else a ``batch``
    holding them in order (docs/streaming.md). ``texts`` are JSON objects, joined as they are."""
    if len(texts) == 1:
        return texts[0]
    return '{"type": "batch", "events": [' + ", ".join(texts) + "]}"


class Spectator(Protocol):
    """What the broadcaster needs of a socket (``arena.consumers.DebateConsumer``)."""

    @property
    def form(self) -> Hashable:
        """Sockets with equal forms get the same text for every event (a researcher's, or one judge
        answer order's), so a pass relabels and joins each event once per form, not per socket."""
        ...

    def relabel(self, text: str) -> str:
        """One event's JSON as this socket gets it."""
        ...

    async def send_frame(self, text: str) -> None: ...

    async def dispatch(self, message: dict[str, Any]) -> None:
        """A group message that is not a debate event, handled as the consumer's own."""
        ...


class DebateBroadcaster:
    """The debate group's member in this process, writing to every local socket of one debate.

    Members are sockets; each is *live* (``None``) or *held* (the list of event texts kept for it
    until its snapshot is sent). Use ``broadcaster_for``; one instance lives while it has members.
    """

    def __init__(self, debate_id: int, layer: BaseChannelLayer, tick_s: float = 0.0) -> None:
        self.debate_id = debate_id
        self.layer = layer
        # The least time from the start of one pass to the start of the next (ARENA_WS_TICK_MS).
        self.tick_s = tick_s
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.channel = ""
        self._members: dict[Spectator, list[str] | None] = {}
        self._inbox: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started: asyncio.Task[None] = self.loop.create_task(self._start())

    async def join(self, member: Spectator) -> None:
        """Add a socket, held (nothing is sent to it until ``release``), once this process is in the
        debate's group: a snapshot read after this returns misses nothing that follows it."""
        self._members[member] = []
        try:
            await asyncio.shield(self._started)
        except BaseException:
            self._members.pop(member, None)
            raise

    async def leave(self, member: Spectator) -> None:
        self._members.pop(member, None)
        if not self._members and not self.closed:
            await self._close()

    def hold(self, member: Spectator) -> None:
        """Keep the socket's events from now on (it is about to get a snapshot)."""
        if self._members.get(member, []) is None:
            self._members[member] = []

    async def release(self, member: Spectator) -> None:
        """Send what was kept for the socket as one frame, then send it every pass again."""
        while True:
            held = self._members.get(member)
            if held is None:  # live already, or gone
                return
            if not held:
                self._members[member] = None
                return
            # A new list for anything that comes while this frame is being written; looped over.
            self._members[member] = []
            await member.send_frame(batch_frame([member.relabel(text) for text in held]))

    async def _start(self) -> None:
        try:
            self.channel = await self.layer.new_channel("debate-fanout.")
            await self.layer.group_add(group_name(self.debate_id), self.channel)
        except BaseException:
            self._forget()
            raise
        if self.closed:  # every socket left while this was joining the group
            await self.layer.group_discard(group_name(self.debate_id), self.channel)
            return
        self._tasks = [self.loop.create_task(self._read()), self.loop.create_task(self._write())]

    async def _read(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The core layer's BZPOPMIN can fail while Redis restarts; the pub/sub one only raises
                # on cancel. Keep listening: the clients recover what was lost by sequence number.
                logger.exception("debate %s: reading the channel layer failed", self.debate_id)
                await asyncio.sleep(1)
                continue
            self._inbox.append(message)
            self._wake.set()

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            started = self.loop.time()
            messages, self._inbox = self._inbox, []
            try:
                await self._deliver(messages)
            except Exception:
                logger.exception("debate %s: fan-out pass failed", self.debate_id)
            # With a tick, what arrives meanwhile waits for it and goes out in one pass: fewer
            # frames for every socket, at the cost of up to a tick of latency.
            rest = self.tick_s - (self.loop.time() - started)
            if rest > 0:
                await asyncio.sleep(rest)

    async def _deliver(self, messages: list[dict[str, Any]]) -> None:
        run: list[str] = []
        for message in messages:
            if message.get("type") == EVENT_TYPE:
                run.append(message["json"])
                continue
            # Anything else sent to the debate's group is each consumer's business, in its place
            # among the events.
            await self._send(run)
            run = []
            for member in list(self._members):
                try:
                    await member.dispatch(message)
                except Exception:
                    logger.exception("debate %s: handling %s failed", self.debate_id, message.get("type"))
        await self._send(run)

    async def _send(self, texts: list[str]) -> None:
        if not texts:
            return
        frames: dict[Hashable, str] = {}
        for member in list(self._members):
            if member not in self._members:  # left while an earlier send was being written
                continue
            held = self._members[member]
            if held is not None:
                held.extend(texts)
                continue
            frame = frames.get(member.form)
            if frame is None:
                frame = frames[member.form] = batch_frame([member.relabel(text) for text in texts])
            try:
                await member.send_frame(frame)
            except Exception:
                # One broken socket must not cost the others their frame; its own close follows.
                logger.exception("debate %s: sending to a socket failed", self.debate_id)

    async def _close(self) -> None:
        self._forget()
        for task in self._tasks:
            task.cancel()
        # The pub/sub layer unsubscribes a channel when its receive is cancelled; let that finish.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.channel:
            try:
                await self.layer.group_discard(group_name(self.debate_id), self.channel)
            except Exception:
                logger.exception("debate %s: leaving the channel group failed", self.debate_id)

    def _forget(self) -> None:
        self.closed = True
        key = (id(self.loop), self.debate_id)
        if _broadcasters.get(key) is self:
            del _broadcasters[key]


# (event loop, debate) -> its broadcaster. Per loop because a channel layer's subscriptions and
# a broadcaster's tasks belong to the loop that made them (tests run one loop per test).
_broadcasters: dict[tuple[int, int], DebateBroadcaster] = {}


def broadcaster_for(debate_id: int, layer: BaseChannelLayer | None = None) -> DebateBroadcaster:
    """This loop's broadcaster of the debate, made on first use."""
    loop = asyncio.get_running_loop()
    key = (id(loop), debate_id)
    found = _broadcasters.get(key)
    if found is None or found.closed or found.loop is not loop:
        tick_s = settings.ARENA_WS_TICK_MS / 1000
        found = _broadcasters[key] = DebateBroadcaster(debate_id, layer or get_channel_layer(), tick_s)
    return found


RAW_SEND = "arena.raw_send"


class RawSendMiddleware:
    """Puts the ASGI server's own ``send`` in a WebSocket's scope (``RAW_SEND``), for frames that
    need nothing of the middleware inside it.

    Why: Channels' session middleware wraps every send to save the session when an HTTP response
    starts; for a WebSocket frame that wrapper does nothing but read the session's state, and a
    profile of a 1,000-socket broadcast pass put a fifth of the pass there. Goes outside
    ``AuthMiddlewareStack``; the consumer still uses its ordinary ``send`` for everything else.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        return await self.inner({**scope, RAW_SEND: send}, receive, send)
