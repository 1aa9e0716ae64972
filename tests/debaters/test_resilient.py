"""ResilientModel: retries with backoff, timeouts, the concurrency limit and interrupted streams.

The wrapped backends are scripted doubles: each attempt plays the next script, item by item.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import cast

import httpx
import pytest

from debaters.backends.base import (
    BackendError,
    BackendSpec,
    ChatMessage,
    Delta,
    Final,
    GenerateRequest,
    ModelAPI,
    SamplingParams,
    StreamItem,
)
from debaters.backends.resilient import ResilientModel, RetryEvent, StreamInterrupted, is_transient

pytestmark = pytest.mark.timeout(60)

REQUEST = GenerateRequest(messages=({"role": "user", "content": "hi"},), params=SamplingParams(max_tokens=8))


@dataclass(frozen=True)
class Pause:
    seconds: float


Step = str | Pause | BaseException | Final
Script = list[Step]


def _ok(*texts: str) -> Script:
    return [*texts, Final(text="".join(texts), prompt_tokens=3, completion_tokens=len(texts), finish_reason="stop")]


def _transient(message: str = "server busy") -> BackendError:
    return BackendError(message)


class ScriptedBackend(ModelAPI):
    """Plays ``scripts[i]`` on the i-th call (the last script repeats); tracks calls and concurrency."""

    def __init__(self, scripts: list[Script], probs: list[float] | None = None) -> None:
        super().__init__(BackendSpec(backend="scripted", model="test"))
        self.scripts = scripts
        self.probs = probs or [0.5, 0.5]
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed_streams = 0

    def _next_script(self) -> Script:
        script = self.scripts[min(self.calls, len(self.scripts) - 1)]
        self.calls += 1
        return script

    async def generate(self, request: GenerateRequest) -> AsyncIterator[StreamItem]:
        script = self._next_script()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            for step in script:
                if isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, BaseException):
                    raise step
                elif isinstance(step, Final):
                    yield step
                else:
                    yield Delta(step)
        finally:
            self.in_flight -= 1
            self.closed_streams += 1

    async def choice_probs(self, messages: Sequence[ChatMessage], labels: Sequence[str]) -> list[float]:
        script = self._next_script()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            for step in script:
                if isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, BaseException):
                    raise step
            return self.probs
        finally:
            self.in_flight -= 1


class BatchingBackend(ScriptedBackend):
    """A backend with its own ``generate_batch`` (like the transformers backend)."""

    def __init__(self, scripts: list[Script]) -> None:
        super().__init__(scripts)
        self.batch_calls = 0

    async def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[Final]:
        self.batch_calls += 1
        script = self._next_script()
        for step in script:
            if isinstance(step, BaseException):
                raise step
        return [Final(text="batched", prompt_tokens=1, completion_tokens=1, finish_reason="stop") for _ in requests]


@dataclass
class FakeSleep:
    """Records backoff sleeps instead of sleeping."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class _TopOfRange(random.Random):
    """Jitter that always picks the top of its range, so delays equal their ceilings."""

    def uniform(self, a: float, b: float) -> float:
        return b


class _BottomOfRange(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


async def _collect(stream: AsyncIterator[StreamItem]) -> tuple[list[str], Final | None]:
    deltas: list[str] = []
    final: Final | None = None
    async for item in stream:
        if isinstance(item, Delta):
            deltas.append(item.text)
        else:
            final = item
    return deltas, final


@pytest.mark.asyncio
async def test_it_retries_transient_failures_before_the_first_delta() -> None:
    inner = ScriptedBackend([[_transient()], [_transient()], _ok("Hel", "lo")])
    sleep = FakeSleep()
    events: list[RetryEvent] = []
    model = ResilientModel(inner, max_retries=3, base_delay_s=1.0, sleep=sleep, on_retry=events.append)

    deltas, final = await _collect(model.generate(REQUEST))

    assert inner.calls == 3
    assert deltas == ["Hel", "lo"]  # shown once, not once per attempt
    assert final is not None and final.text == "Hello"
    assert len(sleep.delays) == 2
    assert [e.attempt for e in events] == [1, 2]
    assert [e.operation for e in events] == ["generate", "generate"]
    assert [e.delay_s for e in events] == sleep.delays


@pytest.mark.asyncio
async def test_it_gives_up_after_max_retries_with_a_transient_error() -> None:
    inner = ScriptedBackend([[_transient("engine overloaded")]])
    sleep = FakeSleep()
    model = ResilientModel(inner, max_retries=3, sleep=sleep)

    with pytest.raises(BackendError) as info:
        await _collect(model.generate(REQUEST))

    assert inner.calls == 4  # the first attempt and three retries
    assert len(sleep.delays) == 3
    assert not info.value.permanent
    assert "4 attempts" in info.value.message and "engine overloaded" in info.value.message


@pytest.mark.asyncio
async def test_it_backs_off_exponentially_up_to_the_cap() -> None:
    inner = ScriptedBackend([[_transient()]])
    top, bottom = FakeSleep(), FakeSleep()
    for sleep, rng in ((top, _TopOfRange()), (bottom, _BottomOfRange())):
        model = ResilientModel(inner, max_retries=6, base_delay_s=0.5, max_delay_s=5.0, sleep=sleep, rng=rng)
        with pytest.raises(BackendError):
            await model.complete(REQUEST)

    assert top.delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert bottom.delays == [0.25, 0.5, 1.0, 2.0, 2.5, 2.5]


@pytest.mark.asyncio
async def test_it_jitters_within_half_to_full_ceiling() -> None:
    model = ResilientModel(ScriptedBackend([_ok("x")]), base_delay_s=1.0, max_delay_s=8.0, rng=random.Random(7))
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0)]:
        delays = {model.backoff_delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 40  # actually random, so clients that failed together spread out


@pytest.mark.asyncio
async def test_it_does_not_retry_permanent_errors() -> None:
    error = BackendError("HTTP 400: max_tokens too large", permanent=True)
    inner = ScriptedBackend([[error]])
    sleep = FakeSleep()
    model = ResilientModel(inner, max_retries=5, sleep=sleep)

    with pytest.raises(BackendError) as info:
        await _collect(model.generate(REQUEST))
    assert info.value is error
    with pytest.raises(BackendError):
        await model.complete(REQUEST)
    with pytest.raises(BackendError):
        await model.choice_probs([{"role": "user", "content": "?"}], ["A", "B"])

    assert inner.calls == 3
    assert sleep.delays == []


@pytest.mark.asyncio
async def test_it_does_not_retry_programming_errors() -> None:
    inner = ScriptedBackend([[ValueError("bug")]])
    model = ResilientModel(inner, max_retries=5, sleep=FakeSleep())
    with pytest.raises(ValueError):
        await model.complete(REQUEST)
    assert inner.calls == 1


def test_it_classifies_errors_in_one_place() -> None:
    request = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    assert is_transient(BackendError("busy"))
    assert not is_transient(BackendError("bad request", permanent=True))
    assert is_transient(StreamInterrupted("cut", partial_text="Hel"))
    assert is_transient(httpx.ConnectError("refused", request=request))
    assert is_transient(httpx.ReadTimeout("slow", request=request))
    assert is_transient(httpx.RemoteProtocolError("dropped", request=request))
    assert is_transient(TimeoutError())
    assert is_transient(ConnectionResetError())
    assert not is_transient(ValueError("bug"))
    assert not is_transient(asyncio.CancelledError())


@pytest.mark.asyncio
async def test_it_retries_raw_transport_errors_and_timeouts() -> None:
    request = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    inner = ScriptedBackend([[httpx.ConnectError("refused", request=request)], [TimeoutError()], _ok("ok")])
    sleep = FakeSleep()
    model = ResilientModel(inner, max_retries=2, sleep=sleep)
    deltas, final = await _collect(model.generate(REQUEST))
    assert deltas == ["ok"] and final is not None
    assert inner.calls == 3 and len(sleep.delays) == 2


@pytest.mark.asyncio
async def test_it_raises_stream_interrupted_after_partial_output() -> None:
    inner = ScriptedBackend([["Hello", " wor", _transient("connection reset")], _ok("never", " shown")])
    sleep = FakeSleep()
    model = ResilientModel(inner, max_retries=3, sleep=sleep)

    seen: list[str] = []
    with pytest.raises(StreamInterrupted) as info:
        async for item in model.generate(REQUEST):
            assert isinstance(item, Delta)
            seen.append(item.text)

    assert seen == ["Hello", " wor"]
    assert info.value.partial_text == "Hello wor"
    assert not info.value.permanent
    assert "connection reset" in info.value.message
    assert inner.calls == 1  # not restarted behind the consumer's back
    assert sleep.delays == []


@pytest.mark.asyncio
async def test_it_raises_permanent_errors_after_partial_output_as_they_are() -> None:
    error = BackendError("content policy", permanent=True)
    model = ResilientModel(ScriptedBackend([["Hel", error]]), sleep=FakeSleep())
    with pytest.raises(BackendError) as info:
        await _collect(model.generate(REQUEST))
    assert info.value is error


@pytest.mark.asyncio
async def test_it_treats_a_stream_without_final_as_transient() -> None:
    inner = ScriptedBackend([[], _ok("fine")])
    model = ResilientModel(inner, max_retries=1, sleep=FakeSleep())
    deltas, final = await _collect(model.generate(REQUEST))
    assert deltas == ["fine"] and final is not None and inner.calls == 2

    cut = ResilientModel(ScriptedBackend([["half"]]), max_retries=1, sleep=FakeSleep())
    with pytest.raises(StreamInterrupted) as info:
        await _collect(cut.generate(REQUEST))
    assert info.value.partial_text == "half"


@pytest.mark.asyncio
async def test_it_retries_complete_whole_even_after_partial_output() -> None:
    # complete() shows nothing until the end, so a mid-stream failure can be redone transparently.
    inner = ScriptedBackend([["Hel", _transient()], _ok("Hello")])
    model = ResilientModel(inner, max_retries=2, sleep=FakeSleep())
    final = await model.complete(REQUEST)
    assert final.text == "Hello" and inner.calls == 2


@pytest.mark.asyncio
async def test_it_times_out_an_idle_stream_and_retries() -> None:
    inner = ScriptedBackend([[Pause(30)], [Pause(30)]])
    sleep = FakeSleep()
    model = ResilientModel(inner, max_retries=1, timeout_s=0.2, sleep=sleep)
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        await _collect(model.generate(REQUEST))
    assert time.monotonic() - started < 2.0
    assert inner.calls == 2 and len(sleep.delays) == 1
    assert not info.value.permanent and "2 attempts" in info.value.message
    assert inner.in_flight == 0 and inner.closed_streams == 2  # the stalled streams were closed


@pytest.mark.asyncio
async def test_it_times_out_between_items_not_over_the_whole_stream() -> None:
    # 0.6 s in all, longer than the timeout, but never more than 0.15 s without an item.
    slow_but_steady = ["a", Pause(0.15), "b", Pause(0.15), "c", Pause(0.15), "d", Pause(0.15), *_ok("e")]
    model = ResilientModel(ScriptedBackend([slow_but_steady]), timeout_s=0.45, sleep=FakeSleep())
    deltas, final = await _collect(model.generate(REQUEST))
    assert "".join(deltas) == "abcde" and final is not None


@pytest.mark.asyncio
async def test_it_interrupts_a_stream_that_goes_idle_after_output() -> None:
    model = ResilientModel(ScriptedBackend([["Hel", Pause(30)]]), timeout_s=0.2, sleep=FakeSleep())
    with pytest.raises(StreamInterrupted) as info:
        await _collect(model.generate(REQUEST))
    assert info.value.partial_text == "Hel"


@pytest.mark.asyncio
async def test_it_limits_complete_and_choice_probs_to_the_whole_timeout() -> None:
    steady = ["a", Pause(0.1), "b", Pause(0.1), "c", Pause(0.1), *_ok("d")]
    model = ResilientModel(ScriptedBackend([steady]), max_retries=0, timeout_s=0.15, sleep=FakeSleep())
    with pytest.raises(BackendError) as info:
        await model.complete(REQUEST)
    assert "longer than 0.15s" in info.value.message

    judge = ResilientModel(ScriptedBackend([[Pause(30)], []]), max_retries=1, timeout_s=0.1, sleep=FakeSleep())
    assert await judge.choice_probs([{"role": "user", "content": "?"}], ["A", "B"]) == [0.5, 0.5]


@pytest.mark.asyncio
async def test_it_respects_the_concurrency_limit() -> None:
    script = ["a", Pause(0.03), "b", Pause(0.03), *_ok("c")]
    inner = ScriptedBackend([script])
    model = ResilientModel(inner, max_concurrency=2, sleep=FakeSleep())

    results = await asyncio.gather(*(_collect(model.generate(REQUEST)) for _ in range(6)))
    assert inner.max_in_flight == 2
    assert all("".join(deltas) == "abc" for deltas, _ in results)

    inner.max_in_flight = 0
    await asyncio.gather(*(model.complete(REQUEST) for _ in range(6)))
    assert inner.max_in_flight == 2

    judge_inner = ScriptedBackend([[Pause(0.03)]])
    judge = ResilientModel(judge_inner, max_concurrency=3)
    await asyncio.gather(*(judge.choice_probs([{"role": "user", "content": "?"}], ["A", "B"]) for _ in range(9)))
    assert judge_inner.max_in_flight == 3


@pytest.mark.asyncio
async def test_it_releases_the_slot_while_backing_off() -> None:
    inner = ScriptedBackend([[_transient()], _ok("second"), _ok("first")])
    gate = asyncio.Event()

    async def held_sleep(seconds: float) -> None:
        await gate.wait()

    model = ResilientModel(inner, max_concurrency=1, sleep=held_sleep)
    first = asyncio.create_task(model.complete(REQUEST))
    while inner.calls < 1:  # wait until the first call failed and went to back off
        await asyncio.sleep(0.01)
    # With the only slot held during the backoff, this would wait for the gate forever.
    assert (await asyncio.wait_for(model.complete(REQUEST), 1.0)).text == "second"
    gate.set()
    assert (await first).text == "first"


@pytest.mark.asyncio
async def test_it_closes_the_inner_stream_when_the_consumer_stops() -> None:
    inner = ScriptedBackend([["a", Pause(0.01), "b", Pause(0.01), *_ok("c")]])
    model = ResilientModel(inner, max_concurrency=1)
    async with aclosing(cast(AsyncGenerator[StreamItem, None], model.generate(REQUEST))) as stream:
        async for _ in stream:
            break
    assert inner.in_flight == 0 and inner.closed_streams == 1
    assert (await model.complete(REQUEST)).text == "c"  # the slot was given back


@pytest.mark.asyncio
async def test_it_batches_per_request_or_whole_as_the_backend_prefers() -> None:
    plain = ScriptedBackend([[_transient()], _ok("x")])
    model = ResilientModel(plain, max_retries=2, max_concurrency=2, sleep=FakeSleep())
    finals = await model.generate_batch([REQUEST] * 3)
    assert [f.text for f in finals] == ["x", "x", "x"]
    assert plain.calls == 4  # one request failed once and was retried alone

    batching = BatchingBackend([[_transient()], []])
    wrapped = ResilientModel(batching, max_retries=2, sleep=FakeSleep())
    finals = await wrapped.generate_batch([REQUEST] * 3)
    assert [f.text for f in finals] == ["batched"] * 3
    assert batching.batch_calls == 2


@pytest.mark.asyncio
async def test_it_survives_a_failing_retry_hook() -> None:
    def broken_hook(event: RetryEvent) -> None:
        raise RuntimeError("logging is down")

    inner = ScriptedBackend([[_transient()], _ok("ok")])
    model = ResilientModel(inner, sleep=FakeSleep(), on_retry=broken_hook)
    assert (await model.complete(REQUEST)).text == "ok"


def test_it_keeps_one_semaphore_per_event_loop() -> None:
    inner = ScriptedBackend([_ok("x")])
    model = ResilientModel(inner, max_concurrency=1)
    # A cached wrapper used from two worker tasks, each with its own loop, must not trip over a
    # semaphore bound to the first loop.
    assert asyncio.run(model.complete(REQUEST)).text == "x"
    assert asyncio.run(model.complete(REQUEST)).text == "x"


@pytest.mark.asyncio
async def test_it_retries_a_backends_own_timeout_without_a_timeout_of_its_own() -> None:
    inner = ScriptedBackend([[TimeoutError()], _ok("ok")])
    model = ResilientModel(inner, timeout_s=None, max_retries=1, sleep=FakeSleep())
    assert (await model.complete(REQUEST)).text == "ok"
    inner.scripts, inner.calls = [[TimeoutError()]], 0
    with pytest.raises(BackendError) as info:
        await _collect(model.generate(REQUEST))
    assert "2 attempts" in info.value.message and inner.calls == 2
    assert model.backoff_delay(10_000) <= model.max_delay_s


def test_it_delegates_the_rest_to_the_inner_backend() -> None:
    inner = ScriptedBackend([_ok("x")])
    model = ResilientModel(inner)
    assert model.spec is inner.spec
    assert model.count_tokens("one two three") == inner.count_tokens("one two three")
    with pytest.raises(ValueError):
        ResilientModel(inner, max_retries=-1)
    with pytest.raises(ValueError):
        ResilientModel(inner, max_concurrency=0)


# ----- waiting for the model to load -----


class LoadingBackend(ScriptedBackend):
    """A backend whose model takes ``load_s`` to load (then fails with ``load_error`` if set).

    Like the real ones, ``wait_ready`` answers at once once loaded; ``loaded = False`` is a restart.
    """

    def __init__(self, load_s: float, load_error: BackendError | None = None) -> None:
        super().__init__([_ok("loaded")])
        self.load_s = load_s
        self.load_error = load_error
        self.loaded = False
        self.loads = 0
        self.waits = 0

    async def wait_ready(self) -> None:
        self.waits += 1
        if self.loaded:
            return
        self.loads += 1
        await asyncio.sleep(self.load_s)
        if self.load_error is not None:
            raise self.load_error
        self.loaded = True


@pytest.mark.asyncio
async def test_loading_the_model_does_not_count_against_the_request_timeout() -> None:
    inner = LoadingBackend(load_s=0.3)
    model = ResilientModel(inner, timeout_s=0.1, max_retries=0)
    final = await model.complete(REQUEST)
    assert final.text == "loaded" and inner.calls == 1
    items = [item async for item in model.generate(REQUEST)]
    assert isinstance(items[-1], Final)
    assert await model.choice_probs([{"role": "user", "content": "hi"}], ["A", "B"]) == [0.5, 0.5]
    assert inner.waits == 3 and inner.loads == 1
    # The shared backend was closed elsewhere and reloads: the next call waits for it again.
    inner.loaded = False
    assert (await model.complete(REQUEST)).text == "loaded"
    assert inner.loads == 2


@pytest.mark.asyncio
async def test_a_model_that_cannot_load_fails_at_once_without_retries() -> None:
    inner = LoadingBackend(load_s=0.0, load_error=BackendError("no such model folder", permanent=True))
    model = ResilientModel(inner, max_retries=5)
    with pytest.raises(BackendError) as info:
        await model.complete(REQUEST)
    assert info.value.permanent and "no such model folder" in info.value.message
    assert inner.calls == 0


@pytest.mark.asyncio
async def test_a_load_slower_than_ready_timeout_is_a_transient_error() -> None:
    inner = LoadingBackend(load_s=5.0)
    model = ResilientModel(inner, ready_timeout_s=0.1)
    with pytest.raises(BackendError) as info:
        await model.complete(REQUEST)
    assert not info.value.permanent and "not ready within" in info.value.message
    assert inner.calls == 0
    with pytest.raises(ValueError):
        ResilientModel(inner, ready_timeout_s=0)
