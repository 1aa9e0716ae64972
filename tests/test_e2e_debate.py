"""A whole debate on the embedded model, run by a real Celery worker, watched over WebSockets."""

from __future__ import annotations

import asyncio
import json

import pytest
from arena_test_support import ws_headers
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from arena import services
from arena.asgi import application
from arena.engine.protocol import Limits
from arena.models import Debate
from judging.judge_view import judge_view
from judging.models import Assignment

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


class Watcher:
    """A judge's browser, reduced to its state: the text of every turn, built from the messages."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.ws = communicator
        self.text: dict[int, str] = {}
        self.seq: dict[int, int] = {}
        self.final: dict[int, str] = {}
        self.status = ""
        self.snapshot: dict | None = None
        self.messages = 0

    def apply(self, msg: dict) -> None:
        if msg["type"] == "batch":  # events that queued up for this socket, in order
            for event in msg["events"]:
                self.apply(event)
            return
        self.messages += 1
        kind = msg["type"]
        if kind == "snapshot":
            self.snapshot = msg
            self.status = msg["debate"]["status"]
            for t in msg["turns"]:
                self.final[t["turn"]] = t["text"]
            for t in msg["inflight"]:
                self.text[t["turn"]], self.seq[t["turn"]] = t["text"], t["seq"]
        elif kind == "turn_start":
            self.text.setdefault(msg["turn"], "")
            self.seq.setdefault(msg["turn"], 0)
        elif kind == "delta":
            if msg["seq"] <= self.seq.get(msg["turn"], 0):
                return
            assert msg["seq"] == self.seq.get(msg["turn"], 0) + 1, "a delta was lost"
            self.text[msg["turn"]] = self.text.get(msg["turn"], "") + msg["text"]
            self.seq[msg["turn"]] = msg["seq"]
        elif kind == "turn_end":
            assert self.text.get(msg["turn"], "") == msg["text"], "streamed text differs from the final turn"
            self.final[msg["turn"]] = msg["text"]
        elif kind == "status":
            self.status = msg["status"]

    async def next(self, timeout: float) -> dict:
        """The next frame, applied; a batch frame as its last event (what the page shows last)."""
        msg = json.loads(await self.ws.receive_from(timeout))
        self.apply(msg)
        return msg["events"][-1] if msg["type"] == "batch" else msg


async def _watch(debate_id: int, headers: list[tuple[bytes, bytes]]) -> tuple[Watcher, Watcher]:
    first = Watcher(WebsocketCommunicator(application, f"/ws/debates/{debate_id}/", headers=headers))
    connected, _ = await first.ws.connect()
    assert connected
    late: Watcher | None = None
    deadline = asyncio.get_running_loop().time() + 600
    while first.status not in ("finished", "failed"):
        assert asyncio.get_running_loop().time() < deadline, "the debate did not finish in time"
        msg = await first.next(timeout=300)
        # Join mid-turn: in round 2, once the speech has started streaming.
        if late is None and msg["type"] == "delta" and msg["turn"] == 2 and msg["seq"] >= 2:
            late = Watcher(WebsocketCommunicator(application, f"/ws/debates/{debate_id}/", headers=headers))
            connected, _ = await late.ws.connect()
            assert connected
            await late.next(timeout=10)
    assert late is not None, f"the late client never joined (turn 2 streamed {first.seq.get(2, 0)} delta(s))"
    while late.status not in ("finished", "failed"):
        await late.next(timeout=30)
    await first.ws.disconnect()
    await late.ws.disconnect()
    return first, late


def test_it_runs_a_debate_on_a_worker_and_streams_every_token(celery_worker_proc, bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    debate = services.create_debate(
        question=question,
        debater_a=profile,
        debater_b=profile,
        limits=Limits(rounds=2, max_tokens=32, word_limit=60, context_tokens=300),
        judges=[bob],
        seed=42,
    )
    first, late = async_to_sync(_watch)(debate.pk, ws_headers(bob))
    debate.refresh_from_db()
    assert debate.status == Debate.Status.FINISHED, debate.error
    # bob gets turns numbered in his own transcript's order (judging/judge_view.py).
    view = judge_view(debate, Assignment.objects.get(debate=debate, judge=bob).shown_first)
    stored = {view.place(t.index): t.text for t in debate.turns.all()}
    assert sorted(stored) == [0, 1, 2, 3]
    assert all(stored.values()), "every speech has text"
    # The first client saw everything live; the late one joined mid-turn and ends identical.
    assert first.final == stored
    assert {i: first.text[i] for i in stored} == stored
    assert late.final == stored
    assert late.snapshot is not None and late.snapshot["inflight"], "the late client joined mid-turn"
    inflight = late.snapshot["inflight"][0]
    assert stored[inflight["turn"]].startswith(inflight["text"])
    # Nothing a judge received contains the source text or the gold answer's index.
    snapshot_json = json.dumps(first.snapshot)
    assert question.source_text[1000:1100] not in snapshot_json
    assert "correct_index" not in snapshot_json
