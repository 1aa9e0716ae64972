"""The debate WebSocket: a snapshot first, then the live events of the debate's group.

Only signed-in users get in (the session cookie, through ``AuthMiddlewareStack``), only from an
allowed origin (``AllowedHostsOriginValidator``), and a judge only for a debate assigned to them.
Nothing sent here contains the source text or the gold answer. Schema: docs/streaming.md.
"""

from __future__ import annotations

import json

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from arena.models import Debate, Turn
from arena.roles import is_judge, is_researcher
from arena.runner import turn_payload
from arena.streaming import group_name, read_inflight

MAX_CLIENT_MESSAGE = 4096


class DebateConsumer(AsyncWebsocketConsumer):
    debate_id: int
    researcher: bool

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        try:
            self.debate_id = int(self.scope["url_route"]["kwargs"]["debate_id"])
        except (KeyError, ValueError):
            await self.close(code=4404)
            return
        allowed, researcher = await sync_to_async(_access)(user, self.debate_id)
        if not allowed:
            await self.close(code=4403)
            return
        self.researcher = researcher
        # Join before reading the snapshot, so that nothing falls between the two; duplicates are
        # dropped by sequence number.
        await self.channel_layer.group_add(group_name(self.debate_id), self.channel_name)
        await self.accept()
        await self._send_snapshot()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "debate_id"):
            await self.channel_layer.group_discard(group_name(self.debate_id), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None or len(text_data) > MAX_CLIENT_MESSAGE:
            await self._error("messages must be JSON text under 4 KiB")
            return
        try:
            message = json.loads(text_data)
        except json.JSONDecodeError:
            await self._error("message is not valid JSON")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self._error('message must be an object with a "type"')
            return
        kind = message["type"]
        if kind == "ping":
            await self.send(text_data=json.dumps({"type": "pong"}))
        elif kind == "snapshot":
            await self._send_snapshot()
        else:
            await self._error(f"unknown message type {kind[:40]!r}")

    async def debate_event(self, message: dict[str, object]) -> None:
        event = message["event"]
        assert isinstance(event, dict)
        if event.get("type") == "status" and not self.researcher:
            event = {"type": "status", "status": event.get("status"), "detail": ""}
        await self.send(text_data=json.dumps(event))

    async def _send_snapshot(self) -> None:
        snapshot = await sync_to_async(_snapshot)(self.debate_id, self.researcher)
        inflight = await read_inflight(self.debate_id)
        done = {t["turn"] for t in snapshot["turns"]}
        snapshot["inflight"] = [
            {"turn": turn, "seq": rec["seq"], "text": rec["text"], "round": rec["round"], "side": rec["side"]}
            for turn, rec in sorted(inflight.items())
            if turn not in done
        ]
        await self.send(text_data=json.dumps(snapshot))

    async def _error(self, text: str) -> None:
        await self.send(text_data=json.dumps({"type": "error", "error": text}))


def _access(user: object, debate_id: int) -> tuple[bool, bool]:
    if not Debate.objects.filter(pk=debate_id).exists():
        return False, False
    if is_researcher(user):  # type: ignore[arg-type]
        return True, True
    if is_judge(user) and user.assignments.filter(debate_id=debate_id).exists():  # type: ignore[attr-defined]
        return True, False
    return False, False


def _snapshot(debate_id: int, researcher: bool) -> dict[str, object]:
    from arena.engine.protocol import make_protocol

    debate = Debate.objects.get(pk=debate_id)
    turns = [turn_payload(t) for t in Turn.objects.filter(debate_id=debate_id).order_by("index")]
    total = make_protocol(debate.protocol, debate.settings).total_turns()
    return {
        "type": "snapshot",
        "debate": {
            "id": debate.pk,
            "status": debate.status,
            "detail": debate.error if researcher else "",
            "rounds": debate.rounds,
            "total_turns": total,
        },
        "turns": turns,
    }
