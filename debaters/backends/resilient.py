"""Retries, timeouts and a concurrency limit around any :class:`ModelAPI`.

Backends only classify their failures (:class:`BackendError` with ``permanent`` set or not);
:class:`ResilientModel` decides what to do about them, and :func:`is_transient` is the one place that
says which failures are worth another attempt.

Streams are retried only while nothing has reached the consumer. Once a delta was yielded, a transient
failure raises :class:`StreamInterrupted` carrying the text received so far, because restarting the
stream would repeat that text to the consumer; the caller decides whether to redo the turn.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from debaters.backends.base import (
    BackendError,
    ChatMessage,
    Delta,
    Final,
    GenerateRequest,
    ModelAPI,
    StreamItem,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


class StreamInterrupted(BackendError):
    """A transient failure after a stream had already yielded deltas; it was not restarted.

    ``partial_text`` is the concatenation of the deltas the consumer received. The request can be redone
    from scratch (the error is transient), but the consumer must discard or replace what it showed.
    """

    def __init__(self, message: str, *, partial_text: str) -> None:
        super().__init__(message, permanent=False)
        self.partial_text = partial_text


@dataclass(frozen=True)
class RetryEvent:
    """What the ``on_retry`` hook is told before each backoff sleep."""

    operation: str  # "generate", "complete", "choice_probs" or "generate_batch"
    attempt: int  # the attempt that just failed, counting from 1
    delay_s: float  # how long ResilientModel sleeps before the next attempt
    error: BaseException


RetryHook = Callable[[RetryEvent], None]
Sleep = Callable[[float], Awaitable[None]]


@functools.cache
def _transient_types() -> tuple[type[BaseException], ...]:
    # TimeoutError covers asyncio.timeout and asyncio.wait_for (asyncio.TimeoutError is TimeoutError
    # since 3.11); ConnectionError covers plain socket failures of backends that use no HTTP library.
    types: list[type[BaseException]] = [TimeoutError, ConnectionError]
    try:
        import httpx
    except ImportError:  # a deployment without HTTP backends
        pass
    else:
        types.append(httpx.TransportError)
    return tuple(types)


def is_transient(exc: BaseException) -> bool:
    """Whether another attempt may succeed: non-permanent :class:`BackendError`, timeouts, transport errors.

    Anything else (permanent backend errors, programming errors, cancellation) is not retried.
    """
    if isinstance(exc, BackendError):
        return not exc.permanent
    return isinstance(exc, _transient_types())


class ResilientModel(ModelAPI):
    """Wraps ``inner`` with retries (exponential backoff with jitter), timeouts and a concurrency limit.

    * ``max_retries``: attempts after the first for a transient failure (0 disables retrying).
    * Backoff before retry *n* (1-based) is drawn uniformly from ``[d/2, d]`` with
      ``d = min(max_delay_s, base_delay_s * 2 ** (n - 1))``; the jitter keeps many clients that failed
      together from retrying together.
    * ``timeout_s``: limit for one attempt of ``complete`` / ``choice_probs``, and for streams the longest
      wait for the next item (an idle timeout, so long answers are fine). ``None`` disables it. A timeout
      is transient. ``generate_batch`` on a backend with its own batching uses ``batch_timeout_s``.
    * ``ready_timeout_s``: before each call the wrapper awaits the inner backend's ``wait_ready``
      (a local model loading) for up to this long, outside ``timeout_s`` and without retries.
    * ``max_concurrency``: requests in flight at once through this wrapper (``None``: unlimited). A slot
      is held for the whole of a stream, including while the consumer handles its items, and released
      during backoff sleeps.
    * ``on_retry``: called with a :class:`RetryEvent` before each backoff (for logging); its exceptions
      are logged and ignored.
    * ``sleep`` and ``rng`` are injectable for tests.

    When the retries are used up the last transient error is raised as a (transient) ``BackendError``
    that says how many attempts were made; permanent errors are raised as they are, at once.
    Consumers that stop iterating :meth:`generate` early should close it (``contextlib.aclosing``) so
    the slot and the backend's connection are released at once.
    """

    def __init__(
        self,
        inner: ModelAPI,
        *,
        max_retries: int = 3,
        base_delay_s: float = 0.5,
        max_delay_s: float = 10.0,
        timeout_s: float | None = 120.0,
        batch_timeout_s: float | None = None,
        ready_timeout_s: float | None = 1800.0,
        max_concurrency: int | None = None,
        on_retry: RetryHook | None = None,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(inner.spec)
        self.honours_constraints = inner.honours_constraints
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if base_delay_s < 0 or max_delay_s < 0:
            raise ValueError("delays must be >= 0")
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError("timeout_s must be positive or None")
        if batch_timeout_s is not None and batch_timeout_s <= 0:
            raise ValueError("batch_timeout_s must be positive or None")
        if ready_timeout_s is not None and ready_timeout_s <= 0:
            raise ValueError("ready_timeout_s must be positive or None")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1 or None")
        self.inner = inner
        self.max_retries = max_retries
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.timeout_s = timeout_s
        self.batch_timeout_s = batch_timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.max_concurrency = max_concurrency
        self.on_retry = on_retry
        self._sleep: Sleep = sleep or asyncio.sleep
        self._rng = rng or random.Random()
        # asyncio.Semaphore binds to the first loop that waits on it; one per loop keeps a cached wrapper
        # usable from worker tasks that each run their own loop.
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._semaphores_lock = threading.Lock()

    # ----- ModelAPI -----

    async def generate(self, request: GenerateRequest) -> AsyncIterator[StreamItem]:
        """Stream like the inner backend; failures before the first delta are retried transparently.

        After a delta was yielded, a transient failure raises :class:`StreamInterrupted` and a permanent
        one is raised as it is. A stream that ends without a :class:`Final` counts as a transient failure.
        """
        await self.wait_ready()
        attempt = 0
        while True:
            attempt += 1
            received: list[str] = []
            failure: Exception
            async with self._slot(), _closing(self.inner.generate(request)) as stream:
                iterator = aiter(stream)
                while True:
                    try:
                        async with asyncio.timeout(self.timeout_s):
                            item = await anext(iterator)
                    except StopAsyncIteration:
                        failure = BackendError("the backend ended a stream without a final result")
                        break
                    except TimeoutError as exc:
                        failure = BackendError(f"no stream item within {_seconds(self.timeout_s)}")
                        failure.__cause__ = exc
                        break
                    except Exception as exc:
                        failure = exc
                        break
                    # Yield outside the timeout: the consumer's own pace is not the backend's idleness.
                    yield item
                    if isinstance(item, Final):
                        return
                    if isinstance(item, Delta):
                        received.append(item.text)
            if received:
                if is_transient(failure):
                    raise StreamInterrupted(
                        f"stream interrupted after {len(received)} deltas: {failure}", partial_text="".join(received)
                    ) from failure
                raise failure
            await self._before_retry("generate", attempt, failure)

    async def complete(self, request: GenerateRequest) -> Final:
        """The inner ``complete`` with retries: nothing was shown, so a failure anywhere is retried whole."""
        return await self._call("complete", lambda: self.inner.complete(request), self.timeout_s)

    async def choice_probs(self, messages: Sequence[ChatMessage], labels: Sequence[str]) -> list[float]:
        return await self._call("choice_probs", lambda: self.inner.choice_probs(messages, labels), self.timeout_s)

    async def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[Final]:
        """Per request (own slot, timeout, retries) unless the inner backend batches by itself.

        A backend that overrides ``generate_batch`` (the transformers backend batches on the device) gets
        the whole batch as one call, holding one slot, retried whole, limited by ``batch_timeout_s``.
        """
        if type(self.inner).generate_batch is ModelAPI.generate_batch:
            return list(await asyncio.gather(*(self.complete(r) for r in requests)))
        return await self._call("generate_batch", lambda: self.inner.generate_batch(requests), self.batch_timeout_s)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    async def wait_ready(self) -> None:
        """Wait (up to ``ready_timeout_s``) for the inner backend to load; every call does this first.

        Loading a model is not a request: it does not count against ``timeout_s`` and is not
        retried. A load that fails raises the backend's error; one that takes too long raises a
        transient :class:`BackendError`. Asked every time (backends answer at once when loaded), so
        a shared backend that was closed and reloads is waited for again.
        """
        try:
            async with asyncio.timeout(self.ready_timeout_s):
                await self.inner.wait_ready()
        except TimeoutError as exc:
            raise BackendError(f"the model was not ready within {_seconds(self.ready_timeout_s)}") from exc

    async def aclose(self) -> None:
        await self.inner.aclose()

    # ----- helpers -----

    def backoff_delay(self, attempt: int) -> float:
        """The sleep after failed attempt ``attempt`` (1-based): jittered in ``[d/2, d]``, see the class doc."""
        # The exponent is capped so a huge max_retries cannot overflow the float.
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0 ** min(attempt - 1, 60))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]], timeout_s: float | None) -> T:
        await self.wait_ready()
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._slot():
                    # The timeout starts once a slot is held: queueing behind the limit is not slowness.
                    async with asyncio.timeout(timeout_s):
                        return await call()
            except Exception as exc:
                failure: Exception = exc
                if isinstance(exc, TimeoutError):
                    failure = BackendError(f"{operation} took longer than {_seconds(timeout_s)}")
                    failure.__cause__ = exc
                await self._before_retry(operation, attempt, failure)

    async def _before_retry(self, operation: str, attempt: int, failure: Exception) -> None:
        """Raise ``failure`` when it is permanent or retries are used up; otherwise report and back off."""
        if not is_transient(failure):
            raise failure
        if attempt > self.max_retries:
            message = failure.message if isinstance(failure, BackendError) else repr(failure)
            raise BackendError(f"{operation} failed after {attempt} attempts: {message}") from failure
        delay = self.backoff_delay(attempt)
        if self.on_retry is not None:
            try:
                self.on_retry(RetryEvent(operation=operation, attempt=attempt, delay_s=delay, error=failure))
            except Exception:  # a logging hook must not turn a retry into a failure
                logger.exception("on_retry hook failed")
        await self._sleep(delay)

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self.max_concurrency is None:
            yield
            return
        loop = asyncio.get_running_loop()
        with self._semaphores_lock:
            semaphore = self._semaphores.get(loop)
            if semaphore is None:
                semaphore = self._semaphores[loop] = asyncio.Semaphore(self.max_concurrency)
        async with semaphore:
            yield


def _seconds(timeout_s: float | None) -> str:
    # A TimeoutError can come from inside the backend even when this wrapper sets no timeout.
    return "the backend's own timeout" if timeout_s is None else f"{timeout_s:g}s"


@asynccontextmanager
async def _closing(stream: AsyncIterator[StreamItem]) -> AsyncIterator[AsyncIterator[StreamItem]]:
    """Like ``contextlib.aclosing`` for any async iterator: async generators get ``aclose``d on exit."""
    try:
        yield stream
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


__all__ = ["ResilientModel", "RetryEvent", "RetryHook", "StreamInterrupted", "is_transient"]
