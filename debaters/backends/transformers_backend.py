"""Local transformers backend with continuous batching.

Spec::

    BackendSpec(backend="transformers", model="embedded" | "/path/to/hf-folder",
                options={"device": "cpu" | "cuda" | "auto", "dtype": "auto" | "float32" | "bfloat16" | "float16",
                         "max_batch_size": 32, "batch_wait_ms": 5, "max_prefill_tokens": 8192,
                         "num_threads": None, "prefix_cache_mb": 1024})

``model="embedded"`` is the bundled SmolLM2-135M-Instruct (see :mod:`debaters.embedded`); anything else
must be a local Hugging Face folder. ``dtype="auto"`` is float32 on CPU and bfloat16 on CUDA
(:func:`default_dtype`): float32 keeps greedy output independent of batch composition; bfloat16
is faster on CPUs with AMX (Sapphire Rapids and later) but then a greedy completion can change with
what else is in the batch. ``num_threads`` (default: leave torch's
choice, one per core) calls ``torch.set_num_threads``, which is process-wide.

How it works. Each backend instance owns one scheduler thread; the model and its KV cache live
there and nothing else touches them. ``generate`` (from any asyncio event loop) puts a job in the
scheduler's inbox and awaits items on a per-request :class:`asyncio.Queue`; the scheduler pushes
items back with ``loop.call_soon_threadsafe``, one callback per loop per decoding step.

The scheduler runs its own decoding loop over a *running batch* (continuous batching):

* Rows are left-padded; a 2-D attention mask marks real tokens and position ids come from the
  mask, so a row's numbers do not depend on how much padding it carries.
* Newcomers are admitted first-in-first-out at the next step (except that one may wait a single
  step for a sibling's prompt to be cached, see below): they are prefilled as their own
  left-padded batch, then their KV-cache tensors are merged into the running batch's by
  left-padding the shorter cache along the sequence axis. Nobody waits for a running batch to
  finish, so no request starves; ``max_batch_size`` bounds the running batch and
  ``max_prefill_tokens`` bounds one prefill (at least one request is always admitted).
* Finished rows (end of sequence, a stop string, ``max_tokens`` or the context limit) leave the
  batch; leading columns that became padding for every remaining row are trimmed.
* A prefix cache keeps the keys and values of recent prompts and finished completions
  (``prefix_cache_mb``, least recently used first out; 0 turns it off). A newcomer whose prompt
  starts with a cached sequence (the next turn of a debate repeats the system prompt, the source
  excerpts and the transcript so far) copies that prefix into its cache rows and runs only the
  rest of its prompt. Positions count real tokens, so a reused prefix gives the same keys it
  would have been computed to.
* ``choice_probs`` requests are scored with one batched forward pass between decoding steps.
* The KV cache (:mod:`~debaters.backends.transformers.kv_cache`) is transformers' ``Cache`` with
  layers that are views into buffers with room to grow, so a decoding step writes one column in
  place instead of re-concatenating the whole cache (what ``DynamicLayer`` does, at the cost of a
  full copy of the cache per step).

Sampling is per request: ``temperature == 0`` is greedy; otherwise temperature, then nucleus
(``top_p``) filtering, then a draw from a per-request ``torch.Generator`` (seeded from ``seed``,
else at random), so a seeded request draws the same random numbers whatever else is in the
batch. Sampling runs on the CPU so that seeds mean the same on every device.

Text is detokenised incrementally by decoding the row's whole completion each step and emitting
the new suffix. Text is held back while it ends in an incomplete UTF-8 sequence (U+FFFD) or in a
prefix of a stop string, so emitted text never changes later and the deltas concatenate to
``Final.text`` exactly.

Errors: a prompt that does not fit the model's context raises a permanent :class:`BackendError`;
an exception inside the scheduler fails the requests it affected (the running batch for a
decoding step, the newcomers for a prefill) with a transient :class:`BackendError`, and the
thread goes on serving.

The parts live in the package :mod:`debaters.backends.transformers` (loading, jobs, the scheduler,
the KV cache, the prefix cache, choice scoring, stop strings); this module is the ``ModelAPI`` and
the path the backend is registered under. It imports torch and transformers at import time (through
that package, which first sets ``GOMP_SPINCOUNT``); :mod:`debaters.backends` imports it only when a
profile chooses the ``transformers`` backend, so the web process never does.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from debaters.backends.base import (
    BackendError,
    BackendSpec,
    ChatMessage,
    Delta,
    Final,
    GenerateRequest,
    ModelAPI,
    StreamItem,
)
from debaters.backends.transformers.jobs import ChoiceJob, GenJob
from debaters.backends.transformers.loading import (
    TransformersOptions,
    default_dtype,
    load_tokenizer,
    resolve_model_path,
)
from debaters.backends.transformers.scheduler import Scheduler

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class TransformersBackend(ModelAPI):
    """A local Hugging Face causal LM served by a continuous-batching scheduler thread.

    The scheduler thread (and the model load) starts on first use; :meth:`aclose` stops it and a
    later request starts a fresh one.
    """

    honours_constraints = True  # a request's TextConstraint masks the tokens it samples from

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        self.options = TransformersOptions.from_spec(spec)
        self._lock = threading.Lock()
        self._scheduler: Scheduler | None = None
        self._count_lock = threading.Lock()  # separate: a first count_tokens may load for seconds
        self._count_tokenizer: PreTrainedTokenizerBase | None = None

    def _running(self) -> Scheduler:
        with self._lock:
            if self._scheduler is None or not self._scheduler.is_alive:
                self._scheduler = Scheduler(self.spec.model, self.options)
            return self._scheduler

    async def generate(self, request: GenerateRequest) -> AsyncIterator[StreamItem]:
        """Stream deltas then one :class:`Final`; a failure raises :class:`BackendError`."""
        job = self._gen_job(request, stream=True)
        self._running().submit([job])
        try:
            while True:
                item = await job.queue.get()
                if isinstance(item, BackendError):
                    raise item
                if isinstance(item, (Delta, Final)):
                    yield item
                if isinstance(item, Final):
                    return
        finally:
            # Stops the work if the consumer went away early (no effect once finished).
            job.cancelled = True

    async def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[Final]:
        """Submit every request at once so they share batches; finals come back in order.

        The first failure cancels the rest and is raised.
        """
        jobs = [self._gen_job(request, stream=False) for request in requests]
        if not jobs:
            return []
        self._running().submit(jobs)
        finals: list[Final] = []
        try:
            for job in jobs:
                item = await job.queue.get()
                if isinstance(item, BackendError):
                    raise item
                assert isinstance(item, Final)
                finals.append(item)
        finally:
            for job in jobs:
                job.cancelled = True
        return finals

    async def choice_probs(self, messages: Sequence[ChatMessage], labels: Sequence[str]) -> list[float]:
        """Next-token probability of each label after the assistant prompt, renormalised to sum to 1.

        A label's mass is the *sum* over the distinct first tokens of ``label`` and ``" " + label``
        (the model may answer either way; the two are different, disjoint next tokens). Labels that
        share a first token (``"Alice"``/``"Anna"`` may both start with ``"A"``) share its mass:
        use short distinct labels such as ``A``/``B``.
        """
        if not labels:
            raise BackendError("choice_probs needs at least one label", permanent=True)
        job = ChoiceJob(asyncio.get_running_loop(), messages, labels)
        self._running().submit([job])
        try:
            item = await job.queue.get()
        finally:
            job.cancelled = True
        if isinstance(item, BackendError):
            raise item
        assert isinstance(item, list)
        return item

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` with the model's tokenizer (no special tokens added).

        Uses its own tokenizer instance (loaded on first call, converting the embedded model if
        needed), because a Hugging Face fast tokenizer must not be shared between threads.
        """
        with self._count_lock:
            if self._count_tokenizer is None:
                self._count_tokenizer = load_tokenizer(resolve_model_path(self.spec.model))
            return len(self._count_tokenizer.encode(text, add_special_tokens=False))

    def stats(self) -> dict[str, int]:
        """Counters of the running scheduler: prompt tokens admitted and reused, prefill and decoding time."""
        with self._lock:
            scheduler = self._scheduler
        return dict(scheduler.stats) if scheduler is not None else {}

    async def aclose(self) -> None:
        """Stop the scheduler thread; pending requests fail with a transient :class:`BackendError`."""
        with self._lock:
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.stop()
            await asyncio.to_thread(scheduler.join)

    async def wait_ready(self) -> None:
        """Start the scheduler and wait until the model is loaded (or failed to load; then raise)."""
        scheduler = self._running()
        # Short waits: a caller that gives up (a timeout) leaves no thread blocked for the whole load.
        while not scheduler.wait_ready(0):
            await asyncio.to_thread(scheduler.wait_ready, 0.5)
        error = scheduler.load_error
        if error is not None:
            raise BackendError(error.message, permanent=error.permanent)

    def _gen_job(self, request: GenerateRequest, *, stream: bool) -> GenJob:
        try:
            request.params.validate()
        except ValueError as exc:
            raise BackendError(str(exc), permanent=True) from exc
        return GenJob(asyncio.get_running_loop(), request, stream=stream)


__all__ = ["TransformersBackend", "TransformersOptions", "default_dtype", "resolve_model_path"]
