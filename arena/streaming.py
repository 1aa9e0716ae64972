"""Live text from the worker to the browsers of one debate.

The worker coalesces deltas (one message every ``ARENA_STREAM_FLUSH_MS``, not one per token) and
sends them to the debate's channel group. Every message carries the turn index and a per-turn
sequence number. The text of each turn in flight is kept in Redis next to the sequence number it
corresponds to, so a client that connects late gets a snapshot and then drops any live message it
already has. The message schema is documented in docs/streaming.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from redis import asyncio as aioredis

INFLIGHT_TTL_S = 24 * 3600

_redis_clients: dict[int, aioredis.Redis] = {}


def group_name(debate_id: int) -> str:
    return f"debate-{debate_id}"


def inflight_key(debate_id: int) -> str:
    return f"{settings.CHANNEL_LAYERS['default']['CONFIG'].get('prefix', 'arena')}:inflight:{debate_id}"


def redis_client() -> aioredis.Redis:
    """One client per event loop (a redis.asyncio client is bound to the loop that first used it)."""
    import asyncio

    loop_id = id(asyncio.get_running_loop())
    client = _redis_clients.get(loop_id)
    if client is None:
        # Blocking: when a crowd connects at once, a snapshot waits for a free connection instead of
        # failing with MaxConnectionsError (redis-py 8's default pool refuses its 101st connection).
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=settings.ARENA_REDIS_MAX_CONNECTIONS, timeout=30
        )
        client = aioredis.Redis(connection_pool=pool)
        _redis_clients[loop_id] = client
    return client


async def read_inflight(debate_id: int) -> dict[int, dict[str, object]]:
    """Turn index → {seq, text, round, side} for the turns being generated right now."""
    raw = await redis_client().hgetall(inflight_key(debate_id))
    return {int(k): json.loads(v) for k, v in raw.items()}


def group_message(event: Mapping[str, object]) -> dict[str, str]:
    """The channel-group message for one event: serialised here once, not by every socket. A
    researcher's socket forwards ``json`` as it is; a judge's relabels it (arena.consumers)."""
    return {"type": "debate.event", "json": json.dumps(event)}


class DebateStream:
    """Publishes one debate's events. Not thread-safe: use it from the worker loop only."""

    def __init__(self, debate_id: int, layer: BaseChannelLayer | None = None, flush_ms: int | None = None) -> None:
        self.debate_id = debate_id
        self.layer = layer or get_channel_layer()
        self.flush_s = (settings.ARENA_STREAM_FLUSH_MS if flush_ms is None else flush_ms) / 1000
        self._turns: dict[int, _TurnState] = {}
        self.messages_sent = 0

    async def send(self, event: Mapping[str, object]) -> None:
        await self.layer.group_send(group_name(self.debate_id), group_message(event))
        self.messages_sent += 1

    async def start_turn(self, turn: int, round_: int, side: int) -> None:
        self._turns[turn] = _TurnState(round_, side)
        await self._store(turn)
        await self.send({"type": "turn_start", "turn": turn, "round": round_, "side": side})

    async def push(self, turn: int, text: str) -> None:
        state = self._turns[turn]
        state.pending += text
        if time.monotonic() - state.last_flush >= self.flush_s:
            await self.flush(turn)

    async def flush(self, turn: int) -> None:
        state = self._turns[turn]
        if not state.pending:
            return
        chunk, state.pending = state.pending, ""
        state.seq += 1
        state.text += chunk
        state.last_flush = time.monotonic()
        # Store before sending: a client that reads the snapshot after this point has the chunk, and
        # drops the live message by its sequence number.
        await self._store(turn)
        await self.send({"type": "delta", "turn": turn, "seq": state.seq, "text": chunk})

    async def reset_turn(self, turn: int, reason: str) -> None:
        """Discard a turn's partial text (its generation is being redone from scratch)."""
        state = self._turns[turn]
        state.pending, state.text = "", ""
        state.seq += 1
        await self._store(turn)
        await self.send({"type": "turn_reset", "turn": turn, "seq": state.seq, "reason": reason})

    async def end_turn(self, turn: int, payload: Mapping[str, object]) -> None:
        """The turn is committed: send its final form, then forget its in-flight text."""
        await self.flush(turn)
        state = self._turns.pop(turn, None)
        event = {"type": "turn_end", "turn": turn, "seq": state.seq if state else 0}
        event.update(payload)
        await self.send(event)
        await redis_client().hdel(inflight_key(self.debate_id), str(turn))

    async def status(self, status: str, detail: str = "") -> None:
        await self.send({"type": "status", "status": status, "detail": detail})
        if status in ("finished", "failed", "cancelled"):
            await redis_client().delete(inflight_key(self.debate_id))

    async def _store(self, turn: int) -> None:
        state = self._turns[turn]
        record = json.dumps({"seq": state.seq, "text": state.text, "round": state.round, "side": state.side})
        client = redis_client()
        key = inflight_key(self.debate_id)
        await client.hset(key, str(turn), record)
        await client.expire(key, INFLIGHT_TTL_S)


class _TurnState:
    __slots__ = ("round", "side", "seq", "text", "pending", "last_flush")

    def __init__(self, round_: int, side: int) -> None:
        self.round = round_
        self.side = side
        self.seq = 0
        self.text = ""
        self.pending = ""
        self.last_flush = time.monotonic()
