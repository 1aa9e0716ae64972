"""The broadcaster (arena/fanout.py) through a real Daphne process: a crowd of real sockets of two
forms (researchers, a judge) rebuilding a speech published faster than the sockets are written."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from django.utils import timezone

from arena import services, worker_loop
from arena.engine.protocol import Limits
from arena.models import Debate
from arena.streaming import DebateStream

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


@pytest.mark.slow
def test_a_crowd_on_daphne_gets_every_event_in_order_in_its_own_form(
    daphne_server, alice, bob, question, profile  # type: ignore[no-untyped-def]
) -> None:
    """60 sockets (researchers and a judge: two texts for every event) on one debate while 120
    deltas are published at once: every socket gets every event in order, no gap, and rebuilds
    the speech exactly; a judge's frames carry the judge's labels, never the stored side names."""
    from arena_client import Follower, Target, WebSocket, sign_in
    from arena_test_support import PASSWORD

    debate = services.create_debate(
        question=question, debater_a=profile, debater_b=profile,
        limits=Limits(rounds=1, max_tokens=24, word_limit=60, context_tokens=200), judges=[bob], enqueue=False,
    )  # fmt: skip
    Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.RUNNING, started_at=timezone.now())
    target = Target("test", daphne_server.url, {})
    chunks = [f"word{i} " for i in range(120)]

    async def crowd() -> list[tuple[str, Follower, list[dict]]]:
        # 15 sockets per sign-in (the cap is 20): three of the researcher's, one of the judge's.
        logins = [("alice", await sign_in(target, name, PASSWORD)) for name in ("alice",) * 3]
        logins.append(("bob", await sign_in(target, "bob", PASSWORD)))
        sockets = []
        for name, session in logins:
            for _ in range(15):
                sockets.append((name, await WebSocket.connect(target, f"/ws/debates/{debate.pk}/", session)))
        followers = [(name, Follower(debate.pk), []) for name, _ in sockets]
        for (_, ws), (_, follower, frames) in zip(sockets, followers):
            frames.append(await ws.receive())
            follower.on_message(frames[-1], 0.0)  # the snapshot: every socket is live after it

        stream = DebateStream(debate.pk, flush_ms=0)
        await stream.start_turn(0, 1, 0)
        for chunk in chunks:
            await stream.push(0, chunk)
        await stream.end_turn(0, {"text": "".join(chunks), "side": 0, "round": 1})
        await stream.status("finished")

        async def read(ws: WebSocket, follower: Follower, frames: list[dict]) -> None:
            while not follower.done:
                msg, arrived, kernel = await asyncio.wait_for(ws.receive_timed(), 60)
                # The benchmark's kernel stamp: when the bytes were received, never after they were read.
                assert kernel is not None and kernel <= time.time() + 0.001
                frames.append(msg)
                follower.on_message(msg, arrived, kernel)

        await asyncio.gather(*(read(ws, f, frames) for (_, ws), (_, f, frames) in zip(sockets, followers)))
        for _, ws in sockets:
            ws.close()
        return followers

    followers = worker_loop.run(crowd())
    assert len(followers) == 60
    for name, follower, frames in followers:
        assert (follower.finished, follower.gaps, follower.exact, follower.wrong) == (True, 0, 1, 0), name
        (speech,) = follower.turns.values()  # keyed by the judge's place of the speech for bob
        assert speech["seq"] == len(chunks)
        events = [e for f in frames for e in (f["events"] if f["type"] == "batch" else [f])]
        seqs = [e["seq"] for e in events if e["type"] == "delta"]
        assert seqs == list(range(1, len(chunks) + 1)), "every delta once, in order"
        (turn,) = follower.turns
        assert set(follower.kernel_arrivals) == set(follower.arrivals) == {(turn, seq) for seq in seqs}
        start = next(e for e in events if e["type"] == "turn_start")
        if name == "bob":  # the judge's own labels: an answer letter, never the stored side
            assert "side" not in start and start["answer"] in ("A", "B")
        else:
            assert start["side"] == 0 and "answer" not in start
