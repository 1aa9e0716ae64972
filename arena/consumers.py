"""The debate WebSocket: a snapshot first, then the live events of the debate's group.

Only signed-in users get in (the session cookie, through ``AuthMiddlewareStack``), only from an
allowed origin (``AllowedHostsOriginValidator``), and a judge only for a debate assigned to them.
Nothing sent here contains the source text or the gold answer. A judge gets every message
relabelled in their own answer order, per connection (``judging.judge_view``): ``answer`` (A/B)
instead of the stored ``side``. Schema: docs/streaming.md.

Live events reach the sockets through this process's ``arena.fanout.DebateBroadcaster`` of the
debate (one group member per process, one frame per socket per pass, several events in a ``batch``
when they queued up). ``ARENA_WS_FANOUT=per-socket`` brings back the path before it, each consumer
a group member sending one frame per event: the benchmarks' baseline.
"""

from __future__ import annotations

import json
from collections import OrderedDict

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from arena.fanout import RAW_SEND, DebateBroadcaster, broadcaster_for
from arena.models import Debate, Turn
from arena.ratelimit import WS_CLOSE_LIMITED, SessionSockets, Slot, WindowCounter
from arena.roles import is_judge, is_researcher
from arena.runner import turn_payload
from arena.streaming import group_name, read_inflight
from judging.judge_view import JudgeView, judge_view_for
from judging.sockets import CLOSE_DEACTIVATED, follow_account, unfollow_account

MAX_CLIENT_MESSAGE = 4096

# Sockets open per signed-in session, counted in Redis across every web process
# (ARENA_WS_SOCKETS_PER_SESSION); this process's places are refreshed by one task per event loop.
_session_sockets = SessionSockets()
# (debate, judge's first answer, event as sent) -> the event as such judges get it: a crowd of
# judges on one debate shares two forms of each message. Recent messages only.
_JUDGE_TEXTS_KEPT = 256
_judge_texts: OrderedDict[tuple[int, int, str], str] = OrderedDict()


def _judge_text(debate_id: int, view: JudgeView, text: str) -> str:
    key = (debate_id, view.shown_first, text)
    found = _judge_texts.get(key)
    if found is None:
        found = _judge_texts[key] = json.dumps(view.event(json.loads(text)))
        if len(_judge_texts) > _JUDGE_TEXTS_KEPT:
            _judge_texts.popitem(last=False)
    return found


class DebateConsumer(AsyncWebsocketConsumer):
    debate_id: int
    researcher: bool
    # A judge's labels (their A/B order, never the stored one); None for researchers.
    view: JudgeView | None = None
    slot: Slot | None = None  # this socket's place in its session's count (ARENA_WS_SOCKETS_PER_SESSION)
    account_id: int | None = None  # judging.sockets: the user whose deactivation closes this socket
    frames: WindowCounter
    snapshots: WindowCounter
    # This process's fan-out of the debate; None on the per-socket path (ARENA_WS_FANOUT).
    broadcaster: DebateBroadcaster | None = None

    @property
    def form(self) -> int | None:
        """Sockets that get the same text for every event: researchers, or judges by answer order."""
        return None if self.view is None else self.view.shown_first

    def relabel(self, text: str) -> str:
        return text if self.view is None else _judge_text(self.debate_id, self.view, text)

    async def send_frame(self, text: str) -> None:
        """A frame of live events, straight to the server (arena.fanout.RawSendMiddleware): the
        broadcaster calls this for every socket on every pass."""
        await self.scope.get(RAW_SEND, self.base_send)({"type": "websocket.send", "text": text})

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
        self.account_id = user.pk  # judging.sockets: deactivating the user closes this socket
        if not await follow_account(self.channel_layer, self.channel_name, user.pk):
            await self.close(code=CLOSE_DEACTIVATED)
            return
        self.researcher = researcher
        if not researcher:
            self.view = await sync_to_async(judge_view_for)(user.pk, self.debate_id)
            if self.view is None:
                await self.close(code=4403)
                return
        session_key = self.scope["session"].session_key or ""
        self.slot = await _session_sockets.acquire(session_key, settings.ARENA_WS_SOCKETS_PER_SESSION)
        if self.slot is None:
            # Accept first: a close code sent before the handshake never reaches the page.
            await self.accept()
            await self.close(code=WS_CLOSE_LIMITED)
            return
        try:
            self.frames = WindowCounter(settings.ARENA_WS_FRAMES_PER_MINUTE)
            self.snapshots = WindowCounter(settings.ARENA_WS_SNAPSHOTS_PER_MINUTE)
            # Join before reading the snapshot, so that nothing falls between the two; duplicates
            # are dropped by sequence number. The broadcaster holds this socket's events until the
            # snapshot is sent.
            if settings.ARENA_WS_FANOUT == "per-socket":
                await self.channel_layer.group_add(group_name(self.debate_id), self.channel_name)
            else:
                self.broadcaster = broadcaster_for(self.debate_id)
                await self.broadcaster.join(self)
            await self.accept()
            await self._send_snapshot()
        except BaseException:
            # A failed connect gets no disconnect(): free the place here, or this process would
            # keep refreshing it for as long as it runs.
            if self.slot is not None:
                slot, self.slot = self.slot, None
                await _session_sockets.release(slot)
            raise

    async def disconnect(self, code: int) -> None:
        if self.account_id is not None:  # judging.sockets
            await unfollow_account(self.channel_layer, self.channel_name, self.account_id)
        if self.slot is not None:
            slot, self.slot = self.slot, None
            await _session_sockets.release(slot)
        if self.broadcaster is not None:
            await self.broadcaster.leave(self)
            self.broadcaster = None
        elif hasattr(self, "debate_id"):
            await self.channel_layer.group_discard(group_name(self.debate_id), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.frames.allow():
            await self.close(code=WS_CLOSE_LIMITED)
            return
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
            if not self.snapshots.allow():
                await self.close(code=WS_CLOSE_LIMITED)
                return
            await self._send_snapshot()
        else:
            await self._error(f"unknown message type {kind[:40]!r}")

    async def debate_event(self, message: dict[str, str]) -> None:
        """The per-socket path only (the broadcaster writes the events itself). Serialised once by
        the worker (arena.streaming.group_message); a judge's relabelled form once per message and
        answer order in this process, however many sockets watch."""
        await self.send(text_data=self.relabel(message["json"]))

    async def account_closed(self, message: dict[str, str]) -> None:
        # judging.sockets.close_user_sockets: the user was deactivated while this socket was open.
        await self.close(code=CLOSE_DEACTIVATED)

    async def _send_snapshot(self) -> None:
        if self.broadcaster is None:
            await self._write_snapshot()
            return
        # Events that arrive while the snapshot is read and sent go out right after it, not before.
        self.broadcaster.hold(self)
        try:
            await self._write_snapshot()
        finally:
            await self.broadcaster.release(self)

    async def _write_snapshot(self) -> None:
        snapshot = await sync_to_async(_snapshot)(self.debate_id, self.researcher)
        inflight = await read_inflight(self.debate_id)
        done = {t["turn"] for t in snapshot["turns"]}
        snapshot["inflight"] = [
            {"turn": turn, "seq": rec["seq"], "text": rec["text"], "round": rec["round"], "side": rec["side"]}
            for turn, rec in sorted(inflight.items())
            if turn not in done
        ]
        if self.view is not None:
            snapshot = self.view.snapshot(snapshot)
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
    status = debate.status
    if status == Debate.Status.RUNNING and debate.lease_expires is not None and debate.lease_expires < timezone.now():
        # Its worker stopped renewing the lease: it died or stalls. The sweep queues it again.
        status = "delayed"
    return {
        "type": "snapshot",
        "debate": {
            "id": debate.pk,
            "status": status,
            "detail": debate.error if researcher else "",
            "rounds": debate.rounds,
            "total_turns": total,
            # A page that hears nothing for this long asks for a snapshot, which says "delayed"
            # when the debate's worker is gone.
            "recheck_s": max(5, settings.ARENA_LEASE_SECONDS // 2),
        },
        "turns": turns,
    }
