"""OpenAIBackend against real HTTP servers: ``transformers serve`` on the embedded model, and a small
scripted OpenAI-style server (``http.server`` in a thread) for failures a real server will not produce
on demand. Nothing here mocks httpx.

The scripted server picks its behaviour from the first path segment of the base URL, e.g.
``http://127.0.0.1:PORT/drop/v1`` streams two deltas and then drops the connection.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast

import httpx
import pytest
import vllm_standin
from arena_test_support import served_model_folder, transformers_cli

from debaters.backends import backend_class
from debaters.backends.base import (
    BackendError,
    BackendSpec,
    ChatMessage,
    Delta,
    Final,
    GenerateRequest,
    SamplingParams,
    StreamItem,
)
from debaters.backends.openai_backend import OpenAIBackend
from debaters.backends.resilient import ResilientModel, RetryEvent, StreamInterrupted

pytestmark = pytest.mark.timeout(120)

WORDS = ["Hello", ",", " wor", "ld", "!"]
MESSAGES: tuple[ChatMessage, ...] = ({"role": "user", "content": "Say hello."},)


def _request(max_tokens: int = 16, **params: object) -> GenerateRequest:
    return GenerateRequest(messages=MESSAGES, params=SamplingParams(max_tokens=max_tokens).replace(**params))


def _backend(*base_urls: str, model: str = "test-model", **options: object) -> OpenAIBackend:
    return OpenAIBackend(BackendSpec(backend="openai", model=model, options={"base_urls": list(base_urls), **options}))


async def _collect(backend: OpenAIBackend | ResilientModel, request: GenerateRequest) -> tuple[list[str], Final]:
    deltas: list[str] = []
    final: Final | None = None
    async for item in backend.generate(request):
        if isinstance(item, Delta):
            deltas.append(item.text)
        else:
            assert final is None, "exactly one Final"
            final = item
    assert final is not None
    return deltas, final


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----- the scripted server -----


@dataclass
class Received:
    scenario: str
    body: dict[str, object]
    authorization: str | None


class ScriptedServer(ThreadingHTTPServer):
    """An OpenAI-style server whose behaviour is chosen by the URL; records what it saw."""

    daemon_threads = True

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.received: list[Received] = []
        self.disconnects: list[float] = []  # time.monotonic() when a client went away mid-stream
        self.release = threading.Event()  # ends stalls at teardown
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, scenario: str) -> str:
        return f"http://127.0.0.1:{self.port}/{scenario}/v1"

    def record(self, item: Received) -> None:
        with self._lock:
            self.received.append(item)

    def count(self, scenario: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.received if scenario is None or r.scenario == scenario)

    def stop(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


def _chunk(text: str | None = None, finish: str | None = None, role: str | None = None) -> dict[str, object]:
    delta: dict[str, object] = {}
    if role:
        delta["role"] = role
    if text is not None:
        delta["content"] = text
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked streams, as uvicorn and vLLM send them
    server: ScriptedServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    # -- plumbing --

    def _json(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _event(self, payload: object) -> None:
        data = f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        """Die like a killed server: no end of the chunked body, the socket just goes."""
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _words(self, body: dict[str, object]) -> tuple[list[str], str]:
        max_tokens = body.get("max_tokens")
        limit = max_tokens if isinstance(max_tokens, int) else len(WORDS)
        return WORDS[:limit], ("length" if limit < len(WORDS) else "stop")

    def _stream_words(self, body: dict[str, object], *, usage: bool = True, done: bool = True) -> None:
        words, finish = self._words(body)
        self._start_stream()
        self._event(_chunk(role="assistant"))
        for word in words:
            self._event(_chunk(word))
        self._event(_chunk(finish=finish))
        if usage:
            self._event(
                {
                    "id": "c1",
                    "choices": [],
                    "usage": {"prompt_tokens": 11, "completion_tokens": len(words), "total_tokens": 11 + len(words)},
                }
            )
        if done:
            self._event("[DONE]")
        self._end_stream()

    # -- dispatch --

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.loads(raw)
        scenario = self.path.strip("/").split("/")[0]
        self.server.record(Received(scenario, body, self.headers.get("Authorization")))
        getattr(self, f"_scenario_{scenario}")(body)

    # -- scenarios --

    def _scenario_ok(self, body: dict[str, object]) -> None:
        self._stream_words(body)

    def _scenario_nousage(self, body: dict[str, object]) -> None:
        self._stream_words(body, usage=False)

    def _scenario_nodone(self, body: dict[str, object]) -> None:
        # What transformers serve does: usage in the last chunk, no [DONE].
        self._stream_words(body, done=False)

    def _scenario_echo(self, body: dict[str, object]) -> None:
        self._start_stream()
        self._event(_chunk(json.dumps({"body": body, "authorization": self.headers.get("Authorization")})))
        self._event(_chunk(finish="stop"))
        self._event("[DONE]")
        self._end_stream()

    def _scenario_err500(self, body: dict[str, object]) -> None:
        self._json(500, {"error": {"message": "engine overloaded", "type": "InternalServerError", "code": 500}})

    def _scenario_err429(self, body: dict[str, object]) -> None:
        self._json(429, {"error": {"message": "rate limited", "code": 429}})

    def _scenario_err400(self, body: dict[str, object]) -> None:
        self._json(
            400, {"error": {"message": "max_tokens is too large: 99999", "type": "BadRequestError", "code": 400}}
        )

    def _scenario_err422(self, body: dict[str, object]) -> None:
        self._json(422, {"detail": "Unexpected fields in the request: {'guided_choice'}"})

    def _scenario_err404(self, body: dict[str, object]) -> None:
        self._json(404, {"object": "error", "message": "The model `nope` does not exist."})

    def _scenario_errevent(self, body: dict[str, object]) -> None:
        self._start_stream()
        self._event(_chunk("Hel"))
        self._event({"error": "generation failed: out of memory"})
        self._end_stream()

    def _scenario_drop(self, body: dict[str, object]) -> None:
        self._start_stream()
        self._event(_chunk(role="assistant"))
        self._event(_chunk("Hello"))
        self._event(_chunk(" wor"))
        self._drop()

    def _scenario_truncated(self, body: dict[str, object]) -> None:
        # A clean end of the HTTP body, but the answer never finished.
        self._start_stream()
        self._event(_chunk("Hello"))
        self._end_stream()

    def _scenario_dropbeforeheaders(self, body: dict[str, object]) -> None:
        self._drop()

    def _scenario_stall(self, body: dict[str, object]) -> None:
        self._start_stream()
        self._event(_chunk("Hel"))
        self.server.release.wait(10)

    def _scenario_stallheaders(self, body: dict[str, object]) -> None:
        self.server.release.wait(10)
        self.close_connection = True

    def _scenario_slow(self, body: dict[str, object]) -> None:
        self._start_stream()
        try:
            for i in range(400):
                self._event(_chunk(f" w{i}"))
                time.sleep(0.02)
            self._event(_chunk(finish="stop"))
            self._event("[DONE]")
            self._end_stream()
        except (BrokenPipeError, ConnectionResetError):
            self.server.disconnects.append(time.monotonic())
            self.close_connection = True

    def _scenario_sleepy(self, body: dict[str, object]) -> None:
        # One delta per 50 ms, max_tokens of them: a request that stays outstanding for a while.
        count = body.get("max_tokens")
        self._start_stream()
        try:
            for _ in range(count if isinstance(count, int) else 1):
                time.sleep(0.05)
                self._event(_chunk("z"))
            self._event(_chunk(finish="length"))
            self._event("[DONE]")
            self._end_stream()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _logprobs_reply(self, top: list[tuple[str, float]] | None) -> None:
        choice: dict[str, object] = {
            "index": 0,
            "message": {"role": "assistant", "content": top[0][0] if top else "A"},
            "finish_reason": "length",
        }
        if top is not None:
            entries = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top]
            choice["logprobs"] = {"content": [{"token": top[0][0], "logprob": top[0][1], "top_logprobs": entries}]}
        self._json(
            200,
            {
                "id": "c2",
                "object": "chat.completion",
                "choices": [choice],
                "usage": {"prompt_tokens": 9, "completion_tokens": 1},
            },
        )

    def _scenario_logprobs(self, body: dict[str, object]) -> None:
        # " A" and "A" are the same label once stripped; "Because" is off-label and is renormalised away.
        self._logprobs_reply(
            [("A", math.log(0.5)), (" A", math.log(0.1)), ("B", math.log(0.2)), ("Because", math.log(0.15))]
        )

    def _scenario_logprobsflip(self, body: dict[str, object]) -> None:
        self._logprobs_reply(
            [("B", math.log(0.5)), (" B", math.log(0.1)), ("A", math.log(0.2)), ("Because", math.log(0.15))]
        )

    def _scenario_nologprobs(self, body: dict[str, object]) -> None:
        self._logprobs_reply(None)

    def _scenario_offlabel(self, body: dict[str, object]) -> None:
        self._logprobs_reply([("The", math.log(0.7)), ("I", math.log(0.2))])

    # -- what vllm serve 0.33 does (tests/support/vllm_standin.py): --max-model-len 8192, --max-logprobs 20 --

    def _scenario_vllm(self, body: dict[str, object]) -> None:
        error = vllm_standin.server_error(body, max_model_len=8192, max_logprobs=20)
        if error is not None:
            self._json(400, error)
        elif body.get("logprobs"):
            entries = vllm_standin.top_logprobs_entries(body)
            self._logprobs_reply([(str(e["token"]), float(e["logprob"])) for e in entries])  # type: ignore[arg-type]
        else:
            self._stream_words(body)


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    yield srv
    srv.stop()


@pytest.fixture
def server_pair() -> Iterator[tuple[ScriptedServer, ScriptedServer]]:
    a, b = ScriptedServer(), ScriptedServer()
    yield a, b
    a.stop()
    b.stop()


@dataclass
class FakeSleep:
    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


# ----- the scripted server: streaming -----


@pytest.mark.asyncio
async def test_it_is_registered_as_openai() -> None:
    assert backend_class("openai") is OpenAIBackend


@pytest.mark.asyncio
async def test_it_streams_deltas_that_add_up_to_the_final_text(server: ScriptedServer) -> None:
    backend = _backend(server.url("ok"))
    deltas, final = await _collect(backend, _request())
    assert deltas == WORDS
    assert final == Final(text="Hello, world!", prompt_tokens=11, completion_tokens=5, finish_reason="stop")

    deltas, final = await _collect(backend, _request(max_tokens=2))
    assert final.text == "Hello," and final.finish_reason == "length"
    await backend.aclose()
    await backend.aclose()  # twice is fine


@pytest.mark.asyncio
async def test_it_counts_deltas_when_the_server_reports_no_usage(server: ScriptedServer) -> None:
    backend = _backend(server.url("nousage"))
    _, final = await _collect(backend, _request())
    assert final.completion_tokens == len(WORDS)
    assert final.prompt_tokens >= 1
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_accepts_a_finished_stream_without_done(server: ScriptedServer) -> None:
    backend = _backend(server.url("nodone"))
    _, final = await _collect(backend, _request())
    assert final.text == "Hello, world!" and final.completion_tokens == 5
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_sends_sampling_params_extra_body_and_the_key_from_the_env(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARENA_TEST_OPENAI_KEY", "sk-test-123")
    extra = {"structured_outputs": {"choice": ["A", "B"]}, "chat_template_kwargs": {"enable_thinking": False}}
    backend = _backend(server.url("echo"), api_key_env="ARENA_TEST_OPENAI_KEY", extra_body=extra)
    assert "sk-test-123" not in repr(backend.spec) + repr(backend.options)

    _, final = await _collect(backend, _request(max_tokens=7, temperature=0.3, top_p=0.9, seed=42, stop=("\n\n",)))
    echoed = json.loads(final.text)
    assert echoed["authorization"] == "Bearer sk-test-123"
    body = echoed["body"]
    assert body["model"] == "test-model"
    assert body["messages"] == [{"role": "user", "content": "Say hello."}]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"], body["stop"]) == (
        7,
        0.3,
        0.9,
        42,
        ["\n\n"],
    )
    assert body["structured_outputs"] == {"choice": ["A", "B"]}
    assert body["chat_template_kwargs"] == {"enable_thinking": False}

    # No seed and no stop strings: the fields are left out rather than sent empty.
    _, final = await _collect(backend, _request())
    assert "seed" not in json.loads(final.text)["body"] and "stop" not in json.loads(final.text)["body"]

    monkeypatch.delenv("ARENA_TEST_OPENAI_KEY")
    with pytest.raises(BackendError) as info:
        await _collect(backend, _request())
    assert info.value.permanent and "ARENA_TEST_OPENAI_KEY" in info.value.message
    await backend.aclose()


def test_it_rejects_bad_options() -> None:
    bad_options: list[dict[str, object]] = [
        {},
        {"base_urls": []},
        {"base_urls": ["ftp://x"]},
        {"base_urls": ["http://x/v1"], "timeout_s": 0},
        {"base_urls": ["http://x/v1"], "extra_body": {"stream": False}},
        {"base_urls": ["http://x/v1"], "api_key_env": 5},
    ]
    for options in bad_options:
        with pytest.raises(BackendError) as info:
            OpenAIBackend(BackendSpec(backend="openai", model="m", options=options))
        assert info.value.permanent
    assert _backend("http://x:1/v1/").options.base_urls == ("http://x:1/v1",)


# ----- the scripted server: errors -----


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("scenario", "message"),
    [("err400", "max_tokens is too large"), ("err422", "Unexpected fields"), ("err404", "does not exist")],
)
async def test_it_reports_client_errors_as_permanent_with_the_servers_message(
    server: ScriptedServer, scenario: str, message: str
) -> None:
    backend = _backend(server.url(scenario))
    with pytest.raises(BackendError) as info:
        await _collect(backend, _request())
    assert info.value.permanent
    assert message in info.value.message
    await backend.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        ("err500", "engine overloaded"),
        ("err429", "rate limited"),
        ("errevent", "out of memory"),
        ("drop", "connection"),
        ("truncated", "finish_reason"),
        ("dropbeforeheaders", "connection"),
    ],
)
async def test_it_reports_server_failures_as_transient(server: ScriptedServer, scenario: str, message: str) -> None:
    backend = _backend(server.url(scenario))
    with pytest.raises(BackendError) as info:
        await _collect(backend, _request())
    assert not info.value.permanent
    assert message in info.value.message
    assert backend.in_flight() == {server.url(scenario): 0}
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_turns_a_server_dying_mid_stream_into_stream_interrupted(server: ScriptedServer) -> None:
    sleep = FakeSleep()
    model = ResilientModel(_backend(server.url("drop")), max_retries=3, sleep=sleep)
    before = server.count("drop")
    shown: list[str] = []
    with pytest.raises(StreamInterrupted) as info:
        async for item in model.generate(_request()):
            assert isinstance(item, Delta)
            shown.append(item.text)
    assert shown == ["Hello", " wor"]
    assert info.value.partial_text == "Hello wor"
    assert server.count("drop") - before == 1  # not restarted behind the consumer's back
    assert sleep.delays == []

    # complete() shows nothing until the end, so it retries the whole request instead.
    with pytest.raises(BackendError) as exhausted:
        await model.complete(_request())
    assert "4 attempts" in exhausted.value.message
    assert server.count("drop") - before == 5
    await model.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize("scenario", ["stall", "stallheaders"])
async def test_it_times_out_a_server_that_stops_sending(server: ScriptedServer, scenario: str) -> None:
    backend = _backend(server.url(scenario), timeout_s=0.4)
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        await _collect(backend, _request())
    elapsed = time.monotonic() - started
    assert 0.3 < elapsed < 10.0  # the 0.4 s idle timeout fired, not some later one
    assert not info.value.permanent and "sent nothing for 0.4s" in info.value.message
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_retries_a_refused_connection_with_backoff_then_gives_up() -> None:
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    backend = _backend(dead)
    with pytest.raises(BackendError) as direct:
        await _collect(backend, _request())
    assert not direct.value.permanent and "cannot connect" in direct.value.message

    sleep = FakeSleep()
    events: list[RetryEvent] = []
    model = ResilientModel(
        backend, max_retries=3, base_delay_s=1.0, max_delay_s=3.0, sleep=sleep, on_retry=events.append
    )
    with pytest.raises(BackendError) as info:
        await _collect(model, _request())
    assert not info.value.permanent and "4 attempts" in info.value.message
    assert [e.attempt for e in events] == [1, 2, 3]
    for delay, ceiling in zip(sleep.delays, [1.0, 2.0, 3.0], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    await model.aclose()


# ----- the scripted server: cancellation -----


async def _wait_for_disconnect(server: ScriptedServer, count: int) -> float:
    """When the server saw its ``count``-th client disconnect (fails after 2 s)."""
    deadline = time.monotonic() + 2
    while len(server.disconnects) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert len(server.disconnects) >= count, "the server never saw the client go"
    return server.disconnects[count - 1]


@pytest.mark.asyncio
@pytest.mark.parametrize("wrapped", [False, True])
async def test_it_closes_the_stream_promptly_when_the_consumer_is_cancelled(
    server: ScriptedServer, wrapped: bool
) -> None:
    backend = _backend(server.url("slow"))
    model: OpenAIBackend | ResilientModel = ResilientModel(backend, max_concurrency=1) if wrapped else backend
    started = asyncio.Event()
    before = len(server.disconnects)

    async def consume() -> None:
        count = 0
        async for item in model.generate(_request()):
            count += isinstance(item, Delta)
            if count == 3:
                started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 5)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await _wait_for_disconnect(server, before + 1) - cancelled_at < 1.0
    assert backend.in_flight() == {server.url("slow"): 0}
    if isinstance(model, ResilientModel):
        # The wrapper's only concurrency slot came back: a new stream on it starts at once.
        again = cast(AsyncGenerator[StreamItem, None], model.generate(_request()))
        assert isinstance(await asyncio.wait_for(anext(again), 5), Delta)
        await again.aclose()
        await _wait_for_disconnect(server, before + 2)
    await model.aclose()


@pytest.mark.asyncio
async def test_it_closes_the_stream_when_the_consumer_stops_early(server: ScriptedServer) -> None:
    backend = _backend(server.url("slow"))
    before = len(server.disconnects)
    stream = cast(AsyncGenerator[StreamItem, None], backend.generate(_request()))
    async for item in stream:
        assert isinstance(item, Delta)
        break
    closed_at = time.monotonic()
    await stream.aclose()
    assert await _wait_for_disconnect(server, before + 1) - closed_at < 1.0
    assert backend.in_flight() == {server.url("slow"): 0}
    await backend.aclose()


# ----- the scripted server: load balancing -----


@pytest.mark.asyncio
async def test_it_spreads_requests_round_robin(server_pair: tuple[ScriptedServer, ScriptedServer]) -> None:
    a, b = server_pair
    backend = _backend(a.url("ok"), b.url("ok"))
    for _ in range(6):
        await _collect(backend, _request())
    assert (a.count(), b.count()) == (3, 3)

    results = await asyncio.gather(*(_collect(backend, _request()) for _ in range(8)))
    assert all(final.text == "Hello, world!" for _, final in results)
    assert (a.count(), b.count()) == (7, 7)
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_prefers_the_server_with_fewest_outstanding_requests(
    server_pair: tuple[ScriptedServer, ScriptedServer],
) -> None:
    a, b = server_pair
    backend = _backend(a.url("sleepy"), b.url("sleepy"))
    long_one = asyncio.create_task(_collect(backend, _request(max_tokens=200)))  # 10 s on one of them
    while a.count() + b.count() == 0:
        await asyncio.sleep(0.01)
    busy, idle = (a, b) if a.count() else (b, a)
    for _ in range(3):
        await _collect(backend, _request(max_tokens=1))
    assert (busy.count(), idle.count()) == (1, 3)
    long_one.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long_one
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_skips_a_refusing_server_for_its_cool_down(server_pair: tuple[ScriptedServer, ScriptedServer]) -> None:
    a, b = server_pair
    port_a = a.port
    a.stop()
    cooldown_s = 2.5
    backend = _backend(a.url("ok"), b.url("ok"), cooldown_s=cooldown_s)
    # The refusal (and so the cool-down's start) falls between these two instants.
    before_refusal = time.monotonic()
    _, final = await _collect(backend, _request())
    after_refusal = time.monotonic()
    assert final.text == "Hello, world!"
    for _ in range(5):
        _, final = await _collect(backend, _request())
        assert final.text == "Hello, world!"
    assert b.count() == 6

    revived = ScriptedServer(port_a)
    try:
        for _ in range(4):
            await _collect(backend, _request())
        assert time.monotonic() - before_refusal < cooldown_s, "too slow to observe the cool-down"
        assert (revived.count(), b.count()) == (0, 10)  # still cooling down: not even tried

        await asyncio.sleep(after_refusal + cooldown_s + 0.05 - time.monotonic())
        for _ in range(4):
            await _collect(backend, _request())
        assert (revived.count(), b.count()) == (2, 12)  # back in the rotation
    finally:
        revived.stop()
        await backend.aclose()


# ----- the scripted server: choice_probs -----


@pytest.mark.asyncio
async def test_it_scores_labels_from_top_logprobs(server: ScriptedServer) -> None:
    backend = _backend(server.url("logprobs"), extra_body={"chat_template_kwargs": {"x": 1}})
    probs = await backend.choice_probs(list(MESSAGES), ["A", "B"])
    assert sum(probs) == pytest.approx(1.0)
    assert probs == pytest.approx([0.6 / 0.8, 0.2 / 0.8])  # "A" + " A" merged, "Because" dropped

    flipped = await _backend(server.url("logprobsflip")).choice_probs(list(MESSAGES), ["A", "B"])
    assert flipped == pytest.approx([0.2 / 0.8, 0.6 / 0.8])

    sent = [r.body for r in server.received if r.scenario == "logprobs"][-1]
    assert (sent["max_tokens"], sent["logprobs"], sent["top_logprobs"]) == (1, True, 20)
    assert "stream" not in sent and sent["chat_template_kwargs"] == {"x": 1}

    capped = _backend(server.url("logprobs"), max_logprobs=5)
    await capped.choice_probs(list(MESSAGES), ["A", "B"])
    assert [r.body for r in server.received if r.scenario == "logprobs"][-1]["top_logprobs"] == 5
    await backend.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize(("scenario", "message"), [("nologprobs", "no logprobs"), ("offlabel", "none of the labels")])
async def test_it_refuses_to_score_without_usable_logprobs(server: ScriptedServer, scenario: str, message: str) -> None:
    with pytest.raises(BackendError) as info:
        await _backend(server.url(scenario)).choice_probs(list(MESSAGES), ["A", "B"])
    assert info.value.permanent
    assert message in info.value.message and "transformers backend" in info.value.message


@pytest.mark.asyncio
async def test_it_classifies_choice_probs_failures_like_streams(server: ScriptedServer) -> None:
    with pytest.raises(BackendError) as transient:
        await _backend(server.url("err500")).choice_probs(list(MESSAGES), ["A", "B"])
    assert not transient.value.permanent
    with pytest.raises(BackendError) as permanent:
        await _backend(server.url("err400")).choice_probs(list(MESSAGES), ["A", "B"])
    assert permanent.value.permanent


# ----- what vllm serve 0.33 refuses, and how it lists top logprobs -----


@pytest.mark.asyncio
async def test_it_refuses_what_vllm_serve_refuses_before_sending_it(server: ScriptedServer) -> None:
    backend = _backend(server.url("vllm"), max_model_len=8192)
    sent = server.count("vllm")
    for params, needle in (
        ({"temperature": 2.5}, "temperature 2.5 is above 2"),
        ({"max_tokens": 9000}, "max_tokens 9000 is above 8192"),
    ):
        with pytest.raises(BackendError) as info:
            await _collect(backend, _request(**params))  # type: ignore[arg-type]
        assert info.value.permanent and needle in info.value.message
    assert server.count("vllm") == sent  # nothing reached the server
    # An empty stop string is dropped (vLLM answers 400 to one); the rest is sent.
    _, final = await _collect(backend, _request(stop=("", "\n\n")))
    assert final.text == "Hello, world!" and server.received[-1].body["stop"] == ["\n\n"]
    _, final = await _collect(backend, _request(stop=("",)))
    assert "stop" not in server.received[-1].body
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_reports_vllms_own_refusal_as_permanent_when_it_does_not_know_the_limit(server: ScriptedServer) -> None:
    backend = _backend(server.url("vllm"))  # no max_model_len option: the server decides
    with pytest.raises(BackendError) as info:
        await _collect(backend, _request(max_tokens=9000))
    assert info.value.permanent and "max_tokens=9000 cannot be greater than max_model_len=8192" in info.value.message
    await backend.aclose()


def test_the_vllm_stand_in_server_refuses_what_vllm_0_33_refuses() -> None:
    base = {"model": "m", "messages": [], "max_tokens": 16}
    for extra, message in (
        ({"temperature": 3.0}, "temperature must be in [0, 2], got 3.0. (parameter=temperature, value=3.0)"),
        ({"stop": ["", "x"]}, "stop cannot contain an empty string."),
        ({"max_tokens": 8193}, "max_tokens=8193 cannot be greater than max_model_len=8192. Please request fewer output tokens."),
        ({"logprobs": True, "top_logprobs": 21}, "Requested sample logprobs of 21, which is greater than max allowed: 20"),
    ):
        error = vllm_standin.server_error({**base, **extra})
        assert error is not None and message in str(error["error"]["message"])  # type: ignore[index]
    assert vllm_standin.server_error({**base, "temperature": 2.0, "stop": ["x"], "max_tokens": 8192}) is None


@pytest.mark.asyncio
async def test_it_scores_choices_greedily_because_vllm_lists_the_sampled_token_first(server: ScriptedServer) -> None:
    # At temperature 1 vLLM's list is the sampled token, then the top ones, cut to top_logprobs: a sample
    # from outside the top 3 pushes " B" out, so the same question would get different answers.
    tempered = {"temperature": 1.0, "logprobs": True, "top_logprobs": 3}
    lists = {tuple(e["token"] for e in vllm_standin.top_logprobs_entries({**tempered, "seed": seed})) for seed in range(40)}
    assert ("Well", " A", " B") in lists and any(" B" not in tokens for tokens in lists)

    backend = _backend(server.url("vllm"), max_logprobs=3)
    probs = [await backend.choice_probs(list(MESSAGES), ["A", "B"]) for _ in range(5)]
    assert probs == [pytest.approx([0.75, 0.25])] * 5  # " A" 0.30 and " B" 0.10 of the top 3, every time
    sent = server.received[-1].body
    assert (sent["temperature"], sent["top_logprobs"], sent["max_tokens"]) == (0.0, 3, 1)
    await backend.aclose()


def test_it_reads_the_servers_context_length_option() -> None:
    assert _backend("http://x/v1", max_model_len=8192).limits.max_tokens == 8192
    assert _backend("http://x/v1").limits.max_tokens == 32768
    for bad in (0, 1, "8192", True):
        with pytest.raises(BackendError) as info:
            _backend("http://x/v1", max_model_len=bad)
        assert info.value.permanent and "max_model_len" in info.value.message


# ----- transformers serve on the embedded model -----


@dataclass(frozen=True)
class ServedModel:
    base_url: str
    model: str


@pytest.fixture(scope="module")
def transformers_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedModel]:
    """``transformers serve`` pinned to the embedded model, offline, on a free loopback port."""
    folder = served_model_folder()
    executable = transformers_cli()
    port = _free_port()
    log_path = tmp_path_factory.mktemp("transformers-serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    command = [
        str(executable),
        "serve",
        str(folder),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--dtype",
        "float32",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"transformers serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve was not ready in 90 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield ServedModel(base_url=f"http://127.0.0.1:{port}/v1", model=str(folder))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.asyncio
async def test_it_streams_from_transformers_serve(transformers_serve: ServedModel) -> None:
    backend = _backend(transformers_serve.base_url, model=transformers_serve.model, timeout_s=60)
    deltas, final = await _collect(backend, _request(max_tokens=6, temperature=0.0, seed=1))
    assert len(deltas) >= 2
    assert "".join(deltas) == final.text and final.text
    assert final.finish_reason == "length"
    assert final.completion_tokens == 6  # the server's usage, not an estimate
    assert final.prompt_tokens > 5
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_runs_concurrent_streams_on_transformers_serve(transformers_serve: ServedModel) -> None:
    backend = _backend(transformers_serve.base_url, model=transformers_serve.model, timeout_s=60)
    prompts = ["Name a fruit.", "Name a colour.", "Name a planet.", "Name a number."]
    requests = [
        GenerateRequest(
            messages=({"role": "user", "content": p},), params=SamplingParams(max_tokens=4, temperature=0.0)
        )
        for p in prompts
    ]
    results = await asyncio.gather(*(_collect(backend, r) for r in requests))
    for deltas, final in results:
        assert "".join(deltas) == final.text and final.text
        assert final.finish_reason in ("stop", "length") and 1 <= final.completion_tokens <= 4
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_gets_permanent_errors_and_no_logprobs_from_transformers_serve(
    transformers_serve: ServedModel,
) -> None:
    # The server is pinned to its folder; asking for another model is the client's mistake.
    wrong = _backend(transformers_serve.base_url, model="someone/else", timeout_s=60)
    with pytest.raises(BackendError) as info:
        await _collect(wrong, _request(max_tokens=2))
    assert info.value.permanent and "pinned" in info.value.message

    backend = _backend(transformers_serve.base_url, model=transformers_serve.model, timeout_s=60)
    with pytest.raises(BackendError) as no_logprobs:
        await backend.choice_probs([{"role": "user", "content": "Answer A or B."}], ["A", "B"])
    assert no_logprobs.value.permanent and "transformers backend" in no_logprobs.value.message
    await wrong.aclose()
    await backend.aclose()


@pytest.mark.asyncio
async def test_it_asks_the_server_to_continue_a_prefilled_reply(server: ScriptedServer) -> None:
    """Assistant-message prefill (issue 13): vLLM's continue_final_message, only when the last message is the assistant's."""
    backend = _backend(server.url("echo"))
    prefilled = GenerateRequest(
        messages=(*MESSAGES, {"role": "assistant", "content": "Hello"}), params=SamplingParams(max_tokens=4)
    )
    _, final = await _collect(backend, prefilled)
    body = json.loads(final.text)["body"]
    assert body["messages"][-1] == {"role": "assistant", "content": "Hello"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    _, final = await _collect(backend, _request())
    assert "continue_final_message" not in json.loads(final.text)["body"]
    await backend.aclose()
