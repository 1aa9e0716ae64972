"""The debate WebSocket against the real ASGI application and the real Redis channel layer."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest
import pytest_asyncio
from arena_test_support import sockets_of_a_dead_process
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone
from redis import asyncio as aioredis

from arena.asgi import application
from arena.models import Debate, Turn
from arena.ratelimit import WS_CLOSE_LIMITED, SessionSockets
from arena.streaming import DebateStream, group_message, group_name, inflight_key, redis_client
from judging.models import Assignment

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

ORIGIN = (b"origin", b"http://127.0.0.1")
TIMEOUT = 5


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings) -> None:  # type: ignore[no-untyped-def]
    """The users of conftest hash a password each; the default PBKDF2 costs ~0.5 s a user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _close_thread_connections() -> Iterator[None]:
    """sync_to_async runs the ORM on a worker thread; close its connection so the flush is not blocked."""
    yield
    from asgiref.sync import async_to_sync
    from django.db import connections

    async_to_sync(sync_to_async(connections.close_all))()


async def session_cookie(username: str) -> bytes:
    """Sign the user in with the ordinary test client and return its session cookie header."""

    def _do() -> str:
        from django.contrib.auth import get_user_model

        client = Client()
        client.force_login(get_user_model().objects.get(username=username))
        return client.cookies["sessionid"].value

    return f"sessionid={await sync_to_async(_do)()}".encode()


async def communicator_for(
    debate_id: int, cookie: bytes | None = None, origin: tuple[bytes, bytes] = ORIGIN,
) -> WebsocketCommunicator:
    headers = [origin]
    if cookie is not None:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, f"/ws/debates/{debate_id}/", headers=headers)


async def receive_events(comm: WebsocketCommunicator, count: int, timeout: float = TIMEOUT) -> list[dict[str, object]]:
    """The next ``count`` events, whether they came alone or in ``batch`` frames (docs/streaming.md)."""
    events: list[dict[str, object]] = []
    while len(events) < count:
        frame = await comm.receive_json_from(timeout=timeout)
        events += frame["events"] if frame["type"] == "batch" else [frame]
    assert len(events) == count, f"a batch ran past the {count} events expected: {events[count:]}"
    return events


async def connected(debate_id: int, username: str) -> WebsocketCommunicator:
    comm = await communicator_for(debate_id, await session_cookie(username))
    ok, code = await comm.connect(timeout=TIMEOUT)
    assert ok, f"refused with {code}"
    return comm


@pytest_asyncio.fixture
async def clean_inflight() -> AsyncIterator[list[int]]:
    """Debate ids whose in-flight record in Redis is removed before use and after the test."""
    ids: list[int] = []
    yield ids
    for debate_id in ids:
        await redis_client().delete(inflight_key(debate_id))


async def _forget(ids: list[int], debate_id: int) -> None:
    ids.append(debate_id)
    await redis_client().delete(inflight_key(debate_id))


def _walk(value: object, path: str = "") -> Iterator[tuple[str, object]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield f"{path}.{k}", k
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, value


# --- Who gets in ---------------------------------------------------------------------------------


async def test_it_refuses_an_anonymous_client(finished_debate: Debate) -> None:
    comm = await communicator_for(finished_debate.pk)

    ok, code = await comm.connect(timeout=TIMEOUT)

    assert not ok
    assert code == 4401


async def test_it_refuses_a_foreign_origin(bob, finished_debate: Debate) -> None:  # type: ignore[no-untyped-def]
    cookie = await session_cookie("bob")
    comm = await communicator_for(finished_debate.pk, cookie, origin=(b"origin", b"http://evil.example"))

    ok, _ = await comm.connect(timeout=TIMEOUT)

    assert not ok


async def test_it_refuses_a_client_without_an_origin(  # type: ignore[no-untyped-def]
    bob, finished_debate: Debate,
) -> None:
    comm = WebsocketCommunicator(
        application, f"/ws/debates/{finished_debate.pk}/", headers=[(b"cookie", await session_cookie("bob"))]
    )

    ok, _ = await comm.connect(timeout=TIMEOUT)

    assert not ok


async def test_it_refuses_a_judge_not_assigned_to_the_debate(  # type: ignore[no-untyped-def]
    charlie, finished_debate: Debate,
) -> None:
    comm = await communicator_for(finished_debate.pk, await session_cookie("charlie"))

    ok, code = await comm.connect(timeout=TIMEOUT)

    assert not ok
    assert code == 4403


async def test_it_refuses_a_debate_that_does_not_exist(  # type: ignore[no-untyped-def]
    bob, finished_debate: Debate,
) -> None:
    comm = await communicator_for(finished_debate.pk + 1000, await session_cookie("bob"))

    ok, code = await comm.connect(timeout=TIMEOUT)

    assert not ok
    assert code == 4403


async def test_it_refuses_a_forged_session_cookie(bob, finished_debate: Debate) -> None:  # type: ignore[no-untyped-def]
    comm = await communicator_for(finished_debate.pk, b"sessionid=not-a-real-session")

    ok, code = await comm.connect(timeout=TIMEOUT)

    assert not ok
    assert code == 4401


# --- The snapshot --------------------------------------------------------------------------------


async def test_it_sends_the_assigned_judge_a_snapshot_of_the_committed_turns_first(
    bob, finished_debate: Debate, clean_inflight: list[int]  # type: ignore[no-untyped-def]
) -> None:
    await _forget(clean_inflight, finished_debate.pk)
    letter = await _letters(finished_debate.pk)
    comm = await connected(finished_debate.pk, "bob")

    snapshot = await comm.receive_json_from(timeout=TIMEOUT)
    await comm.disconnect()

    assert snapshot["type"] == "snapshot"
    assert snapshot["debate"] == {
        "id": finished_debate.pk, "status": "finished", "detail": "", "rounds": 1, "total_turns": 2, "recheck_s": 60,
    }
    # A judge gets the letters they see, never the stored side (tests/judging/test_judge_labels.py).
    # The opening round is simultaneous, so the judge's A comes first, whichever side it argues.
    first = 0 if letter[0] == "A" else 1
    assert sorted((t["turn"], t["round"], t["answer"], t["text"]) for t in snapshot["turns"]) == [
        (0, 1, "A", f"Speech for answer {first + 1}."),
        (1, 1, "B", f"Speech for answer {2 - first}."),
    ]
    assert not any("side" in t for t in snapshot["turns"])
    assert snapshot["inflight"] == []


async def test_it_sends_a_judge_nothing_of_the_source_or_the_gold_answer(
    bob, finished_debate: Debate, clean_inflight: list[int]  # type: ignore[no-untyped-def]
) -> None:
    await _forget(clean_inflight, finished_debate.pk)
    question = await sync_to_async(lambda: finished_debate.question)()
    text = question.source_text
    pieces = [text[:200], text[len(text) // 2 : len(text) // 2 + 200], text[-200:]]
    comm = await connected(finished_debate.pk, "bob")

    raw = await comm.receive_from(timeout=TIMEOUT)
    await comm.disconnect()

    snapshot = json.loads(raw)
    for where, value in _walk(snapshot):
        name = where.rsplit(".", 1)[-1].lower()
        assert not any(word in name for word in ("gold", "correct", "source", "prompt")), where
        if isinstance(value, str):
            assert not any(piece in value for piece in pieces), where
            assert value != question.source_title, where
    assert not any(json.dumps(piece)[1:-1] in raw for piece in pieces)


async def test_it_sends_a_client_that_arrives_mid_turn_the_text_so_far_then_only_later_deltas(
    bob, make_debate, clean_inflight: list[int]  # type: ignore[no-untyped-def]
) -> None:
    debate = await sync_to_async(make_debate)(judges=[bob], rounds=2)
    await sync_to_async(_commit_opening)(debate)
    await _forget(clean_inflight, debate.pk)
    stream = DebateStream(debate.pk, flush_ms=60_000)
    await stream.start_turn(2, 2, 0)
    await stream.push(2, "Hello ")
    await stream.flush(2)
    await stream.push(2, "world")
    await stream.flush(2)

    comm = await connected(debate.pk, "bob")
    snapshot = await comm.receive_json_from(timeout=TIMEOUT)
    await stream.push(2, "!")
    await stream.flush(2)
    delta = await comm.receive_json_from(timeout=TIMEOUT)
    nothing_more = await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()

    assert [t["turn"] for t in snapshot["turns"]] == [0, 1]
    letter = await _letters(debate.pk)
    assert snapshot["inflight"] == [{"turn": 2, "seq": 2, "text": "Hello world", "round": 2, "answer": letter[0]}]
    assert delta == {"type": "delta", "turn": 2, "seq": 3, "text": "!"}
    assert nothing_more


async def test_it_leaves_a_committed_turn_out_of_the_inflight_list(
    bob, finished_debate: Debate, clean_inflight: list[int]  # type: ignore[no-untyped-def]
) -> None:
    await _forget(clean_inflight, finished_debate.pk)
    stream = DebateStream(finished_debate.pk, flush_ms=60_000)
    await stream.start_turn(1, 1, 1)
    await stream.push(1, "stale")
    await stream.flush(1)

    comm = await connected(finished_debate.pk, "bob")
    snapshot = await comm.receive_json_from(timeout=TIMEOUT)
    await comm.disconnect()

    assert snapshot["inflight"] == []
    assert [t["turn"] for t in snapshot["turns"]] == [0, 1]


async def _judge_and_researcher(debate_id: int) -> tuple[WebsocketCommunicator, WebsocketCommunicator]:
    """bob (judge) and alice (researcher) connected to the debate, their snapshots read."""
    judge = await connected(debate_id, "bob")
    researcher = await connected(debate_id, "alice")
    await judge.receive_json_from(timeout=TIMEOUT)
    await researcher.receive_json_from(timeout=TIMEOUT)
    return judge, researcher


async def _letters(debate_id: int, judge: str = "bob") -> dict[int, str]:
    """Stored side → the letter this judge sees."""
    shown = await sync_to_async(
        lambda: Assignment.objects.get(debate_id=debate_id, judge__username=judge).shown_first
    )()
    return {shown: "A", 1 - shown: "B"}


def _commit_opening(debate: Debate) -> None:
    now = timezone.now()
    for side in (0, 1):
        Turn.objects.create(
            debate=debate, index=side, round=1, side=side, text=f"Opening {side}.", prompt=[], prompt_hash="x",
            started_at=now, finished_at=now,
        )
    Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.RUNNING, started_at=now)


# --- Live events ---------------------------------------------------------------------------------


async def test_it_relays_live_events_in_order_with_turn_and_sequence_numbers(
    bob, make_debate, clean_inflight: list[int]  # type: ignore[no-untyped-def]
) -> None:
    debate = await sync_to_async(make_debate)(judges=[bob])
    await _forget(clean_inflight, debate.pk)
    comm = await connected(debate.pk, "bob")
    snapshot = await comm.receive_json_from(timeout=TIMEOUT)
    stream = DebateStream(debate.pk, flush_ms=60_000)

    await stream.start_turn(0, 1, 0)
    await stream.push(0, "First ")
    await stream.push(0, "words.")
    await stream.flush(0)
    await stream.push(0, " More.")
    await stream.flush(0)
    await stream.end_turn(0, {"text": "First words. More.", "round": 1, "side": 0})
    events = await receive_events(comm, 4)
    nothing_more = await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()

    letter = await _letters(debate.pk)
    # Round 1 is simultaneous: the judge's A comes first whichever side it is.
    order = 0 if letter[0] == "A" else 1
    assert snapshot["turns"] == [] and snapshot["inflight"] == []
    assert events == [
        {"type": "turn_start", "turn": order, "round": 1, "answer": letter[0]},
        {"type": "delta", "turn": order, "seq": 1, "text": "First words."},
        {"type": "delta", "turn": order, "seq": 2, "text": " More."},
        {"type": "turn_end", "turn": order, "seq": 2, "text": "First words. More.", "round": 1, "answer": letter[0]},
    ]
    assert nothing_more
    assert await redis_client().hget(inflight_key(debate.pk), "0") is None


async def test_it_sends_every_client_of_the_debate_the_same_events(
    bob, alice, make_debate, clean_inflight: list[int]  # type: ignore[no-untyped-def]
) -> None:
    debate = await sync_to_async(make_debate)(judges=[bob])
    await _forget(clean_inflight, debate.pk)
    judge, researcher = await _judge_and_researcher(debate.pk)
    stream = DebateStream(debate.pk, flush_ms=60_000)

    await stream.start_turn(1, 1, 1)
    await stream.push(1, "Both see this.")
    await stream.flush(1)
    got = [await receive_events(c, 2) for c in (judge, researcher)]
    await judge.disconnect()
    await researcher.disconnect()

    letter = await _letters(debate.pk)
    # The same speech, labelled for each: the judge's letter and place, the researcher's stored side and index.
    place = 0 if letter[1] == "A" else 1
    assert got[0] == [
        {"type": "turn_start", "turn": place, "round": 1, "answer": letter[1]},
        {"type": "delta", "turn": place, "seq": 1, "text": "Both see this."},
    ]
    assert got[1] == [
        {"type": "turn_start", "turn": 1, "round": 1, "side": 1},
        {"type": "delta", "turn": 1, "seq": 1, "text": "Both see this."},
    ]


async def test_it_strips_the_status_detail_for_a_judge_but_not_for_a_researcher(
    bob, alice, make_debate, clean_inflight: list[int]  # type: ignore[no-untyped-def]
) -> None:
    debate = await sync_to_async(make_debate)(judges=[bob])
    await _forget(clean_inflight, debate.pk)
    judge = await connected(debate.pk, "bob")
    researcher = await connected(debate.pk, "alice")
    await judge.receive_json_from(timeout=TIMEOUT)
    await researcher.receive_json_from(timeout=TIMEOUT)

    await DebateStream(debate.pk).status("failed", "Traceback: model file missing")
    to_judge = await judge.receive_json_from(timeout=TIMEOUT)
    to_researcher = await researcher.receive_json_from(timeout=TIMEOUT)
    await judge.disconnect()
    await researcher.disconnect()

    assert to_judge == {"type": "status", "status": "failed", "detail": ""}
    assert to_researcher == {"type": "status", "status": "failed", "detail": "Traceback: model file missing"}


async def test_it_stops_sending_to_a_client_that_left(
    bob, make_debate, clean_inflight: list[int]  # type: ignore[no-untyped-def]
) -> None:
    debate = await sync_to_async(make_debate)(judges=[bob])
    await _forget(clean_inflight, debate.pk)
    stays = await connected(debate.pk, "bob")
    leaves = await connected(debate.pk, "bob")
    await stays.receive_json_from(timeout=TIMEOUT)
    await leaves.receive_json_from(timeout=TIMEOUT)
    await leaves.disconnect()

    await DebateStream(debate.pk).start_turn(0, 1, 0)

    assert (await stays.receive_json_from(timeout=TIMEOUT))["type"] == "turn_start"
    await stays.disconnect()


async def test_it_delivers_again_to_a_socket_that_comes_after_every_other_one_left(  # type: ignore[no-untyped-def]
    bob, make_debate, clean_inflight: list[int]
) -> None:
    """The process's broadcaster of a debate goes away with its last socket; the next socket gets a
    new one, in the group again, and misses nothing."""
    debate = await sync_to_async(make_debate)(judges=[bob])
    await _forget(clean_inflight, debate.pk)
    for _ in range(2):
        first = await connected(debate.pk, "bob")
        await first.receive_json_from(timeout=TIMEOUT)
        await first.disconnect()
    again = await connected(debate.pk, "bob")
    await again.receive_json_from(timeout=TIMEOUT)

    await DebateStream(debate.pk).status("running")

    assert await again.receive_json_from(timeout=TIMEOUT) == {"type": "status", "status": "running", "detail": ""}
    await again.disconnect()


async def test_it_sends_what_arrives_within_a_tick_as_one_frame(  # type: ignore[no-untyped-def]
    alice, make_debate, settings, clean_inflight: list[int]
) -> None:
    settings.ARENA_WS_TICK_MS = 2000
    debate = await sync_to_async(make_debate)()
    await _forget(clean_inflight, debate.pk)
    comm = await connected(debate.pk, "alice")
    await comm.receive_json_from(timeout=TIMEOUT)
    stream = DebateStream(debate.pk, flush_ms=0)

    await stream.start_turn(0, 1, 0)
    first = await comm.receive_json_from(timeout=TIMEOUT)
    for word in ("one ", "two ", "three"):
        await stream.push(0, word)
    second = await comm.receive_json_from(timeout=TIMEOUT)
    nothing_more = await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()

    # What is published within the tick after a pass waits for the next pass, as one frame.
    assert first == {"type": "turn_start", "turn": 0, "round": 1, "side": 0}
    assert second == {
        "type": "batch",
        "events": [
            {"type": "delta", "turn": 0, "seq": 1, "text": "one "},
            {"type": "delta", "turn": 0, "seq": 2, "text": "two "},
            {"type": "delta", "turn": 0, "seq": 3, "text": "three"},
        ],
    }
    assert nothing_more


# --- Messages from the client --------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        "[1, 2, 3]",
        '"ping"',
        "42",
        '{"no": "type"}',
        '{"type": 7}',
        '{"type": "launch_missiles"}',
        json.dumps({"type": "ping", "pad": "x" * 5000}),
    ],
    ids=["not-json", "array", "string", "number", "no-type", "type-not-string", "unknown-type", "over-4-KiB"],
)
async def test_it_answers_a_malformed_message_with_an_error_and_stays_open(
    bob, finished_debate: Debate, clean_inflight: list[int], message: str  # type: ignore[no-untyped-def]
) -> None:
    await _forget(clean_inflight, finished_debate.pk)
    comm = await connected(finished_debate.pk, "bob")
    await comm.receive_json_from(timeout=TIMEOUT)

    await comm.send_to(text_data=message)
    reply = await comm.receive_json_from(timeout=TIMEOUT)
    await comm.send_json_to({"type": "ping"})
    pong = await comm.receive_json_from(timeout=TIMEOUT)
    await comm.disconnect()

    assert reply["type"] == "error"
    assert isinstance(reply["error"], str) and reply["error"]
    assert pong == {"type": "pong"}


async def test_it_answers_a_binary_message_with_an_error_and_stays_open(
    bob, finished_debate: Debate, clean_inflight: list[int]  # type: ignore[no-untyped-def]
) -> None:
    await _forget(clean_inflight, finished_debate.pk)
    comm = await connected(finished_debate.pk, "bob")
    await comm.receive_json_from(timeout=TIMEOUT)

    await comm.send_to(bytes_data=b'{"type": "ping"}')
    reply = await comm.receive_json_from(timeout=TIMEOUT)
    await comm.send_json_to({"type": "ping"})
    pong = await comm.receive_json_from(timeout=TIMEOUT)
    await comm.disconnect()

    assert reply["type"] == "error"
    assert pong == {"type": "pong"}


async def test_it_sends_a_fresh_snapshot_on_request(
    bob, finished_debate: Debate, clean_inflight: list[int]  # type: ignore[no-untyped-def]
) -> None:
    await _forget(clean_inflight, finished_debate.pk)
    comm = await connected(finished_debate.pk, "bob")
    first = await comm.receive_json_from(timeout=TIMEOUT)

    await comm.send_json_to({"type": "snapshot"})
    again = await comm.receive_json_from(timeout=TIMEOUT)
    await comm.disconnect()

    assert again == first


async def test_a_judge_gets_a_generic_reset_notice_and_no_quote_similarity(
    bob, alice, make_debate, clean_inflight: list[int]  # type: ignore[no-untyped-def]
) -> None:
    debate = await sync_to_async(make_debate)(judges=[bob])
    await _forget(clean_inflight, debate.pk)
    judge, researcher = await _judge_and_researcher(debate.pk)
    stream = DebateStream(debate.pk, flush_ms=60_000)
    await stream.start_turn(0, 1, 0)
    await stream.reset_turn(0, "openai: 502 Bad Gateway from http://10.0.0.7:8000/v1")
    segments = [{"kind": "quote", "text": "an invented line", "verified": False, "similarity": 0.93, "start": 0, "end": 32}]
    await stream.end_turn(0, {"text": "<quote>an invented line</quote>", "round": 1, "side": 0, "segments": segments})
    to_judge = await receive_events(judge, 3)
    to_researcher = await receive_events(researcher, 3)
    await judge.disconnect()
    await researcher.disconnect()

    assert to_judge[1]["type"] == "turn_reset" and to_judge[1]["reason"] == "This speech is being generated again from the start."
    assert to_researcher[1]["reason"].startswith("openai: 502")
    assert to_judge[2]["segments"] == [{"kind": "quote", "text": "an invented line", "verified": False, "start": 0, "end": 32}]
    assert to_researcher[2]["segments"][0]["similarity"] == 0.93
    assert "502" not in json.dumps(to_judge) and "similarity" not in json.dumps(to_judge)

# --- Crowds and limits ---------------------------------------------------------------------------

SPECTATORS = 300
CHUNKS = 60
CROWD_TIMEOUT = 30


async def _open(debate_id: int, cookie: bytes) -> WebsocketCommunicator:
    comm = await communicator_for(debate_id, cookie)
    ok, code = await comm.connect(timeout=CROWD_TIMEOUT)
    assert ok, f"refused with {code}"
    return comm


async def _follow(comm: WebsocketCommunicator) -> tuple[list[dict[str, object]], int]:
    """Every event after the snapshot, up to the final status, and the frames they came in (a
    ``batch`` frame carries several)."""
    events: list[dict[str, object]] = []
    frames = 0
    while True:
        frame = await comm.receive_json_from(timeout=CROWD_TIMEOUT)
        frames += 1
        events += frame["events"] if frame["type"] == "batch" else [frame]
        last = events[-1]
        if last["type"] == "status" and last["status"] == "finished":
            return events, frames


async def _crowd(debate_id: int) -> list[WebsocketCommunicator]:
    """SPECTATORS sockets of one judge's session on the debate, their snapshots read."""
    cookie = await session_cookie("bob")
    comms: list[WebsocketCommunicator] = []
    for start in range(0, SPECTATORS, 50):
        comms += await asyncio.gather(*(_open(debate_id, cookie) for _ in range(start, min(start + 50, SPECTATORS))))
    snapshots = await asyncio.gather(*(c.receive_json_from(timeout=CROWD_TIMEOUT) for c in comms))
    assert {s["type"] for s in snapshots} == {"snapshot"}
    return comms


def _assert_every_speech_whole(received: list[tuple[list[dict[str, object]], int]], chunks: list[str]) -> None:
    text = "".join(chunks)
    expected_types = ["turn_start"] + ["delta"] * len(chunks) + ["turn_end", "status"]
    for events, frames in received:
        assert [e["type"] for e in events] == expected_types
        deltas = [e for e in events if e["type"] == "delta"]
        assert [e["seq"] for e in deltas] == list(range(1, len(chunks) + 1))  # in order, no gap, no repeat
        assert "".join(str(e["text"]) for e in deltas) == text == events[-2]["text"]
        assert frames <= len(events)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fanout", ["broadcast", "per-socket"])
async def test_it_delivers_every_message_in_order_to_hundreds_of_sockets_on_one_debate(  # type: ignore[no-untyped-def]
    bob, make_debate, settings, fanout: str
) -> None:
    settings.ARENA_WS_SOCKETS_PER_SESSION = SPECTATORS
    settings.ARENA_WS_FANOUT = fanout
    debate = await sync_to_async(make_debate)(judges=[bob])
    await redis_client().delete(inflight_key(debate.pk))
    comms = await _crowd(debate.pk)

    chunks = [f"word{i} " for i in range(CHUNKS)]
    stream = DebateStream(debate.pk, flush_ms=0)
    followers = [asyncio.ensure_future(_follow(c)) for c in comms]
    await stream.start_turn(0, 1, 0)
    for chunk in chunks:
        await stream.push(0, chunk)
    text = "".join(chunks)
    await stream.end_turn(
        0, {"round": 1, "side": 0, "text": text, "segments": [], "violations": [], "truncated": False, "meta": {}}
    )
    await stream.status("finished")
    received = await asyncio.gather(*followers)
    for comm in comms:
        await comm.disconnect()

    _assert_every_speech_whole(received, chunks)


def _publish_from_another_thread(debate_id: int, events: list[dict[str, object]]) -> None:
    """What a worker process does, on a loop and Redis connection of its own: a group message each."""

    async def publish() -> None:
        layer = get_channel_layer()
        for event in events:
            await layer.group_send(group_name(debate_id), group_message(event))

    thread = threading.Thread(target=asyncio.run, args=(publish(),))
    thread.start()
    # Blocks this loop, which serves the sockets, while the messages arrive: the sender is faster
    # than the sockets are served, as a worker is when a web process is busy writing frames.
    thread.join()


@pytest.mark.timeout(300)
async def test_it_sends_what_queued_up_while_it_was_busy_as_batches_with_nothing_lost(  # type: ignore[no-untyped-def]
    bob, alice, make_debate, settings
) -> None:
    settings.ARENA_WS_SOCKETS_PER_SESSION = SPECTATORS
    debate = await sync_to_async(make_debate)(judges=[bob])
    await redis_client().delete(inflight_key(debate.pk))
    comms = await _crowd(debate.pk)
    researcher = await _open(debate.pk, await session_cookie("alice"))
    await researcher.receive_json_from(timeout=CROWD_TIMEOUT)
    chunks = [f"w{i} " for i in range(CHUNKS * 3)]
    text = "".join(chunks)
    events: list[dict[str, object]] = [{"type": "turn_start", "turn": 1, "round": 1, "side": 1}]
    events += [{"type": "delta", "turn": 1, "seq": i + 1, "text": chunk} for i, chunk in enumerate(chunks)]
    events += [
        {"type": "turn_end", "turn": 1, "seq": len(chunks), "round": 1, "side": 1, "text": text, "segments": []},
        {"type": "status", "status": "finished", "detail": "done"},
    ]

    _publish_from_another_thread(debate.pk, events)
    received = await asyncio.gather(*(_follow(c) for c in comms))
    to_researcher = await _follow(researcher)
    for comm in [*comms, researcher]:
        await comm.disconnect()

    _assert_every_speech_whole(received, chunks)
    # What queued up went out in few frames, not one per event (300 sockets × 183 events).
    assert all(frames < len(got) / 10 for got, frames in received), [frames for _, frames in received][:10]
    # Each socket gets its own labels: the judge their letter and place, the researcher the stored side.
    letter = await _letters(debate.pk)
    place = 0 if letter[1] == "A" else 1
    assert {(e["turn"], e["answer"]) for e in received[0][0] if e["type"] == "turn_start"} == {(place, letter[1])}
    assert received[0][0][-1] == {"type": "status", "status": "finished", "detail": ""}
    assert to_researcher[0] == events


async def test_it_closes_a_socket_that_sends_too_many_frames(bob, finished_debate: Debate, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ARENA_WS_FRAMES_PER_MINUTE = 3
    comm = await _open(finished_debate.pk, await session_cookie("bob"))
    await comm.receive_json_from(timeout=CROWD_TIMEOUT)

    for _ in range(3):
        await comm.send_json_to({"type": "ping"})
        assert await comm.receive_json_from(timeout=CROWD_TIMEOUT) == {"type": "pong"}
    await comm.send_json_to({"type": "ping"})

    closed = await comm.receive_output(timeout=CROWD_TIMEOUT)
    assert closed == {"type": "websocket.close", "code": WS_CLOSE_LIMITED}


async def test_it_limits_snapshot_requests_apart_from_other_frames(bob, finished_debate: Debate, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ARENA_WS_SNAPSHOTS_PER_MINUTE = 1
    comm = await _open(finished_debate.pk, await session_cookie("bob"))
    await comm.receive_json_from(timeout=CROWD_TIMEOUT)

    await comm.send_json_to({"type": "snapshot"})
    assert (await comm.receive_json_from(timeout=CROWD_TIMEOUT))["type"] == "snapshot"
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from(timeout=CROWD_TIMEOUT) == {"type": "pong"}
    await comm.send_json_to({"type": "snapshot"})

    assert await comm.receive_output(timeout=CROWD_TIMEOUT) == {"type": "websocket.close", "code": WS_CLOSE_LIMITED}


async def test_it_caps_the_sockets_one_session_holds_and_frees_a_place_on_close(  # type: ignore[no-untyped-def]
    bob, charlie, finished_debate: Debate, settings
) -> None:
    settings.ARENA_WS_SOCKETS_PER_SESSION = 2
    cookie = await session_cookie("bob")
    first, second = await _open(finished_debate.pk, cookie), await _open(finished_debate.pk, cookie)

    third = await _open(finished_debate.pk, cookie)  # accepted, so that the page sees why it closes
    assert await third.receive_output(timeout=CROWD_TIMEOUT) == {"type": "websocket.close", "code": WS_CLOSE_LIMITED}
    # Another session of the same judge (another browser) has places of its own.
    other = await _open(finished_debate.pk, await session_cookie("bob"))
    assert (await other.receive_json_from(timeout=CROWD_TIMEOUT))["type"] == "snapshot"

    await first.disconnect()
    again = await _open(finished_debate.pk, cookie)
    assert (await again.receive_json_from(timeout=CROWD_TIMEOUT))["type"] == "snapshot"
    for comm in (second, other, again):
        await comm.disconnect()


async def test_the_socket_cap_of_a_session_holds_across_web_processes(  # type: ignore[no-untyped-def]
    bob, finished_debate: Debate, settings
) -> None:
    """Another web process (a counter of its own on its own Redis connection) holds one of the
    session's two places: this process lets one socket in, not two, until that one closes."""
    settings.ARENA_WS_SOCKETS_PER_SESSION = 2
    cookie = await session_cookie("bob")
    session = cookie.decode().split("=", 1)[1]
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    elsewhere = SessionSockets(client=lambda: client)
    theirs = await elsewhere.acquire(session, 2)
    assert theirs is not None

    mine = await _open(finished_debate.pk, cookie)
    assert (await mine.receive_json_from(timeout=CROWD_TIMEOUT))["type"] == "snapshot"
    refused = await _open(finished_debate.pk, cookie)
    assert await refused.receive_output(timeout=CROWD_TIMEOUT) == {"type": "websocket.close", "code": WS_CLOSE_LIMITED}

    await elsewhere.release(theirs)
    again = await _open(finished_debate.pk, cookie)
    assert (await again.receive_json_from(timeout=CROWD_TIMEOUT))["type"] == "snapshot"
    for comm in (mine, again):
        await comm.disconnect()
    assert await client.zcard(SessionSockets.key(session)) == 0  # closing freed both places
    await client.aclose()


async def test_the_sockets_of_a_web_process_that_died_stop_counting_after_the_ttl(  # type: ignore[no-untyped-def]
    bob, finished_debate: Debate, settings
) -> None:
    settings.ARENA_WS_SOCKETS_PER_SESSION = 2
    # The least TTL the settings allow: this process refreshes every second, so a loop stalled for
    # up to about two seconds on a loaded machine still keeps its places.
    settings.ARENA_WS_SOCKET_TTL_S = 3
    cookie = await session_cookie("bob")
    session = cookie.decode().split("=", 1)[1]
    assert await asyncio.to_thread(sockets_of_a_dead_process, session, 2, 2) == 2

    refused = await _open(finished_debate.pk, cookie)
    assert await refused.receive_output(timeout=CROWD_TIMEOUT) == {"type": "websocket.close", "code": WS_CLOSE_LIMITED}
    await asyncio.sleep(3.3)
    comm = await _open(finished_debate.pk, cookie)
    assert (await comm.receive_json_from(timeout=CROWD_TIMEOUT))["type"] == "snapshot"
    await asyncio.sleep(4)  # past the TTL, but this process refreshes its own socket's place
    second = await _open(finished_debate.pk, cookie)
    assert (await second.receive_json_from(timeout=CROWD_TIMEOUT))["type"] == "snapshot"
    third = await _open(finished_debate.pk, cookie)
    assert await third.receive_output(timeout=CROWD_TIMEOUT) == {"type": "websocket.close", "code": WS_CLOSE_LIMITED}
    for open_comm in (comm, second):
        await open_comm.disconnect()


async def test_it_shows_a_running_debate_whose_lease_expired_as_delayed(bob, make_debate) -> None:  # type: ignore[no-untyped-def]
    debate = await sync_to_async(make_debate)(judges=[bob])
    await sync_to_async(Debate.objects.filter(pk=debate.pk).update)(
        status=Debate.Status.RUNNING, lease_owner="gone:1:x", lease_expires=timezone.now() - timedelta(seconds=5)
    )
    await redis_client().delete(inflight_key(debate.pk))
    comm = await _open(debate.pk, await session_cookie("bob"))

    snapshot = await comm.receive_json_from(timeout=CROWD_TIMEOUT)
    await comm.disconnect()

    assert snapshot["debate"]["status"] == "delayed"
