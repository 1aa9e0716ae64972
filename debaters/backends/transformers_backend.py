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
* The KV cache is transformers' ``Cache`` with :class:`_BufferedLayer` layers: views into
  buffers with room to grow, so a decoding step writes one column in place instead of
  re-concatenating the whole cache (what ``DynamicLayer`` does, at the cost of a full copy of
  the cache per step).

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

This module imports torch and transformers at import time; :mod:`debaters.backends` imports it only
when a profile chooses the ``transformers`` backend, so the web process never does.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

if "torch" not in sys.modules and not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ):
    # torch's OpenMP threads (GNU libgomp in the pip wheels) busy-wait for each other after every
    # parallel region. On a small machine shared with the web server, the database or another
    # worker, a spinning thread holds the core its descheduled sibling needs: a decoding step
    # measured 5-25x slower on 2 busy cores. Passive waiting fixes that but costs 25-60% on an idle
    # machine; a short spin (measured on 2 idle cores: 43 ms per batch-1 step vs 36 ms spinning
    # and 57 ms passive) keeps most of both. libgomp reads this once, when torch is first
    # imported, so it only takes effect if this module is the first to import torch. Workers get it
    # from their environment (`manage.py serve`, docker/compose.yaml, .env.example); this default is
    # for everything else that runs the backend in process (benchmarks, tests, a shell).
    os.environ["GOMP_SPINCOUNT"] = "5000"

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import Cache, DynamicLayer

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

log = logging.getLogger(__name__)

_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_KNOWN_OPTIONS = {
    "device",
    "dtype",
    "max_batch_size",
    "batch_wait_ms",
    "max_prefill_tokens",
    "num_threads",
    "prefix_cache_mb",
}
# A cached prefix shorter than this is not worth gathering (a chat template's header, say).
_MIN_PREFIX_REUSE = 16
# A newcomer waits one decoding step for a sibling's prompt to be cached when that saves this many
# more prompt tokens than the cache offers now.
_DEFER_GAIN = 64
# Nucleus sampling first looks at this many top tokens; only rows whose nucleus is wider fall back
# to sorting the whole vocabulary (exact either way, but sorting 49k logits per row is slow on CPU).
_TOP_K_PROBE = 256
_REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class TransformersOptions:
    """Validated ``BackendSpec.options`` for this backend."""

    device: str = "auto"
    dtype: str = "auto"
    max_batch_size: int = 32
    batch_wait_ms: float = 5.0
    max_prefill_tokens: int = 8192
    num_threads: int | None = None
    prefix_cache_mb: float = 1024.0

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> TransformersOptions:
        """Parse and check options; a bad value is a permanent :class:`BackendError`.

        Unknown keys are logged and ignored: profiles may carry options meant for the wrappers.
        """
        opts = dict(spec.options)
        unknown = set(opts) - _KNOWN_OPTIONS
        if unknown:
            log.warning("transformers backend ignores unknown options: %s", ", ".join(sorted(unknown)))
        try:
            device = str(opts.get("device", "auto"))
            if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
                raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', not {device!r}")
            dtype = str(opts.get("dtype", "auto"))
            if dtype != "auto" and dtype not in _DTYPES:
                raise ValueError(f"dtype must be one of auto, {', '.join(_DTYPES)}; not {dtype!r}")
            max_batch_size = _as_int(opts.get("max_batch_size", 32), "max_batch_size")
            batch_wait_ms = float(_as_number(opts.get("batch_wait_ms", 5.0), "batch_wait_ms"))
            max_prefill = _as_int(opts.get("max_prefill_tokens", 8192), "max_prefill_tokens")
            raw_threads = opts.get("num_threads")
            num_threads = None if raw_threads is None else _as_int(raw_threads, "num_threads")
            prefix_cache_mb = float(_as_number(opts.get("prefix_cache_mb", 1024.0), "prefix_cache_mb"))
            if min(max_batch_size, max_prefill, 1 if num_threads is None else num_threads) < 1:
                raise ValueError("max_batch_size, max_prefill_tokens and num_threads must be positive")
            if batch_wait_ms < 0 or prefix_cache_mb < 0:
                raise ValueError("batch_wait_ms and prefix_cache_mb must not be negative")
        except ValueError as exc:
            raise BackendError(f"bad transformers backend option: {exc}", permanent=True) from exc
        return cls(device, dtype, max_batch_size, batch_wait_ms, max_prefill, num_threads, prefix_cache_mb)


def default_dtype(device: str) -> str:
    """What ``dtype: auto`` means on ``device``: float32 on a CPU, bfloat16 on CUDA.

    float32 keeps a greedy completion (and a seeded sample) independent of what else is in the
    batch, so a tournament replays the same whatever the load. On CPUs with AMX (Intel Sapphire
    Rapids and later) ``dtype: bfloat16`` batches 1.4x faster still (README) at the cost of that
    invariance; elsewhere a CPU emulates bfloat16 and it is slower.
    """
    return "float32" if device.startswith("cpu") else "bfloat16"


def _as_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    return value


def _as_number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number")
    return float(value)


def resolve_model_path(model: str) -> Path:
    """The local folder for ``model``: ``embedded`` converts the bundled GGUF once (see :mod:`debaters.embedded`)."""
    if model == "embedded":
        from debaters import embedded

        try:
            return embedded.ensure_converted()
        except embedded.EmbeddedModelError as exc:
            raise BackendError(str(exc), permanent=True) from exc
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise BackendError(
            f"transformers backend: model {model!r} is neither 'embedded' nor a local Hugging Face folder "
            "with a config.json",
            permanent=True,
        )
    return path


def _load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(path))


# --------------------------------------------------------------------------------------------------
# Jobs: what the event-loop side hands to the scheduler thread.


class _Job:
    """Base of everything in the scheduler's inbox. ``cancelled`` is set by the consumer's side."""

    __slots__ = ("cancelled", "done", "loop", "queue")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[StreamItem | list[float] | BackendError] = asyncio.Queue()
        self.cancelled = False  # written by the event loop thread, read by the scheduler
        self.done = False  # written by the scheduler once the last item has been sent


class _GenJob(_Job):
    __slots__ = ("request", "stream")

    def __init__(self, loop: asyncio.AbstractEventLoop, request: GenerateRequest, *, stream: bool) -> None:
        super().__init__(loop)
        self.request = request
        self.stream = stream  # False: only the Final is sent (generate_batch)


class _ChoiceJob(_Job):
    __slots__ = ("labels", "messages")

    def __init__(self, loop: asyncio.AbstractEventLoop, messages: Sequence[ChatMessage], labels: Sequence[str]) -> None:
        super().__init__(loop)
        self.messages = tuple(messages)
        self.labels = tuple(labels)


class _Stop:
    """Inbox sentinel: finish the thread."""


class _Row:
    """One sequence in the running batch (scheduler thread only)."""

    __slots__ = (
        "completion_tokens",
        "deferred",
        "emitted",
        "eos_ids",
        "generated",
        "generator",
        "job",
        "max_new",
        "prompt_ids",
        "sampled",
        "stop",
        "temperature",
        "top_p",
    )

    def __init__(self, job: _GenJob, prompt_ids: list[int], max_new: int, eos_ids: frozenset[int]) -> None:
        params = job.request.params
        self.job = job
        self.prompt_ids = prompt_ids
        self.max_new = max_new
        self.eos_ids = eos_ids
        self.temperature = params.temperature
        self.top_p = params.top_p
        self.stop = tuple(s for s in params.stop if s)
        self.generated: list[int] = []  # completion ids without the end-of-sequence token
        self.sampled: list[int] = []  # every sampled id, end-of-sequence included
        self.deferred = False  # waited once for a sibling's prompt to be cached (never twice)
        self.completion_tokens = 0  # includes the end-of-sequence token when one was produced
        self.emitted = ""  # text already sent as deltas: always a prefix of the final text
        self.generator: torch.Generator | None = None
        if self.temperature > 0:
            seed = params.seed if params.seed is not None else secrets.randbits(63)
            self.generator = torch.Generator(device="cpu")
            self.generator.manual_seed(seed)


# --------------------------------------------------------------------------------------------------
# The scheduler thread.


class _Scheduler:
    """Owns the model and runs the continuous-batching loop in one daemon thread."""

    def __init__(self, model_name: str, options: TransformersOptions) -> None:
        self._model_name = model_name
        self._opts = options
        self._cond = threading.Condition()
        self._inbox: collections.deque[_Job | _Stop] = collections.deque()
        self._closed = False  # set under _cond when the thread stops taking jobs
        self._ready = threading.Event()
        self._load_error: BackendError | None = None
        # Scheduler-thread state.
        self.model: PreTrainedModel | None = None
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.device = torch.device("cpu")
        self.context = 0  # max_position_embeddings: prompt + completion must fit
        self.eos_ids: frozenset[int] = frozenset()
        self.pad_id = 0
        self._waiting: collections.deque[_Row] = collections.deque()
        self._rows: list[_Row] = []
        self._cache: Cache | None = None
        self._mask: torch.Tensor | None = None  # [B, T] long, 1 = real token in the cache
        self._next: torch.Tensor | None = None  # [B] sampled tokens not yet fed to the model
        self._pos: torch.Tensor | None = None  # [B] position id of the next fed token
        self._prefixes = _PrefixCache(int(options.prefix_cache_mb * 2**20))
        self._kv_token_bytes = 0  # keys + values of one token over all layers (set by _load)
        # Prompt tokens admitted, how many came from the prefix cache, and where the time went
        # (read by benchmarks and tests).
        self.stats = {
            "prefill_tokens": 0,
            "reused_tokens": 0,
            "prefix_hits": 0,
            "prefills": 0,
            "prefill_ms": 0,
            "decode_steps": 0,
            "decode_ms": 0,
        }
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Job, StreamItem | list[float] | BackendError]]] = {}
        self._thread = threading.Thread(target=self._run, name=f"transformers-backend:{model_name}", daemon=True)
        self._thread.start()

    # ---- called from other threads ----

    def submit(self, jobs: Sequence[_Job]) -> None:
        """Queue jobs for the thread; raises a transient :class:`BackendError` once it has ended."""
        with self._cond:
            if self._closed:
                raise BackendError("transformers backend was closed")
            self._inbox.extend(jobs)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._inbox.append(_Stop())
            self._cond.notify()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    @property
    def load_error(self) -> BackendError | None:
        """Why the model could not be loaded (set before :meth:`wait_ready` returns), else None."""
        return self._load_error

    @property
    def is_alive(self) -> bool:
        """True while the thread takes jobs."""
        return self._thread.is_alive() and not self._closed

    # ---- the thread ----

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            # Whatever ended the loop, nobody may be left waiting for an answer.
            self._shutdown()
            self._flush()

    def _serve(self) -> None:
        with torch.inference_mode():
            try:
                self._load()
            except BackendError as exc:
                self._load_error = exc
            except Exception as exc:  # noqa: BLE001 - reported to every request instead
                log.exception("transformers backend failed to load %s", self._model_name)
                self._load_error = BackendError(f"could not load model {self._model_name!r}: {exc}", permanent=True)
            finally:
                self._ready.set()
            stopping = False
            while not stopping:
                try:
                    stopping = self._iteration()
                except Exception as exc:  # noqa: BLE001 - last resort: fail the batch, keep serving
                    log.exception("transformers backend: scheduler iteration failed")
                    self._fail_running(exc)
                self._flush()

    def _load(self) -> None:
        opts = self._opts
        path = resolve_model_path(self._model_name)
        device = opts.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(
                "transformers backend: device 'cuda' requested but CUDA is not available", permanent=True
            )
        dtype_name = opts.dtype if opts.dtype != "auto" else default_dtype(device)
        if opts.num_threads is not None:
            torch.set_num_threads(opts.num_threads)
        started = time.monotonic()
        self.tokenizer = _load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=_DTYPES[dtype_name])
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        config = self.model.config
        self.context = int(getattr(config, "max_position_embeddings", 0) or 2048)
        eos: set[int] = set()
        for source in (getattr(self.model.generation_config, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(source, int):
                eos.add(source)
            elif isinstance(source, (list, tuple)):
                eos.update(int(t) for t in source)
        self.eos_ids = frozenset(eos)
        self._kv_token_bytes = _kv_bytes_per_token(config, _DTYPES[dtype_name])
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (min(eos) if eos else 0))
        elapsed = time.monotonic() - started
        log.info("transformers backend loaded %s on %s/%s in %.1f s", path, device, dtype_name, elapsed)

    def _iteration(self) -> bool:
        """One turn of the loop: take new jobs, score choices, admit newcomers, decode one step.

        Returns True when the thread should stop.
        """
        idle = not self._rows and not self._waiting
        jobs, stopping = self._take_inbox(block=idle, timeout=None)
        if stopping:
            return True
        choice_jobs = self._accept(jobs)
        if choice_jobs:
            self._score_choices(choice_jobs)
        self._drop_cancelled()
        if self._waiting and len(self._rows) < self._opts.max_batch_size:
            if not self._rows and self._opts.batch_wait_ms > 0:
                # Idle until now: give concurrent submitters a moment to join the first prefill.
                if self._gather_more():
                    return True
            self._admit()
        if self._rows:
            self._step()
        return False

    def _take_inbox(self, *, block: bool, timeout: float | None) -> tuple[list[_Job], bool]:
        with self._cond:
            if block and not self._inbox:
                self._cond.wait(timeout)
            items = list(self._inbox)
            self._inbox.clear()
        stopping = any(isinstance(item, _Stop) for item in items)
        return [item for item in items if isinstance(item, _Job)], stopping

    def _gather_more(self) -> bool:
        """Collect arrivals for up to ``batch_wait_ms``; returns True when asked to stop."""
        deadline = time.monotonic() + self._opts.batch_wait_ms / 1000
        while len(self._waiting) < self._opts.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            jobs, stopping = self._take_inbox(block=True, timeout=remaining)
            if stopping:
                return True
            choice_jobs = self._accept(jobs)
            if choice_jobs:
                self._score_choices(choice_jobs)
        return False

    def _accept(self, jobs: list[_Job]) -> list[_ChoiceJob]:
        """Tokenise new generation jobs into the waiting queue; return the choice jobs."""
        choice_jobs: list[_ChoiceJob] = []
        for job in jobs:
            if job.cancelled:
                continue
            if self._load_error is not None:
                self._send(job, BackendError(self._load_error.message, permanent=self._load_error.permanent), last=True)
                continue
            if isinstance(job, _ChoiceJob):
                choice_jobs.append(job)
                continue
            assert isinstance(job, _GenJob)
            try:
                prompt_ids = self._encode_chat(job.request.messages)
            except BackendError as exc:
                self._send(job, exc, last=True)
                continue
            except Exception as exc:  # noqa: BLE001 - a bad request must not stop the thread
                self._send(job, BackendError(f"could not render the prompt: {exc}", permanent=True), last=True)
                continue
            max_new = min(job.request.params.max_tokens, self.context - len(prompt_ids))
            self._waiting.append(_Row(job, prompt_ids, max_new, self.eos_ids))
        return choice_jobs

    def _encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Chat template with the generation prompt, as token ids; too long is a permanent error."""
        assert self.tokenizer is not None
        if not messages:
            raise BackendError("a request needs at least one message", permanent=True)
        text = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        assert isinstance(text, str)
        # The template already contains every special token the model expects.
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) >= self.context:
            raise BackendError(
                f"prompt is {len(ids)} tokens but the model's context is {self.context} tokens; "
                "shorten the prompt (nothing would be left to generate)",
                permanent=True,
            )
        return ids

    # ---- admission and the running batch ----

    def _drop_cancelled(self) -> None:
        if any(row.job.cancelled for row in self._waiting):
            self._waiting = collections.deque(row for row in self._waiting if not row.job.cancelled)
        if any(row.job.cancelled for row in self._rows):
            self._keep([i for i, row in enumerate(self._rows) if not row.job.cancelled])

    def _admit(self) -> None:
        """Prefill the oldest waiting rows and merge them into the running batch (FIFO).

        A row whose prompt starts with a cached sequence only runs the rest of its prompt. A row
        that shares a much longer prefix with a row of this group than with anything cached (two
        debaters given the same story, say) waits for the next admission, one decoding step
        later, when that row's prompt is cached: the shared part then runs once, not twice.
        """
        room = self._opts.max_batch_size - len(self._rows)
        group: list[_Row] = []
        reuse: list[tuple[_PrefixEntry | None, int]] = []
        deferred: list[_Row] = []
        longest = 0
        while self._waiting and len(group) < room:
            candidate = self._waiting.popleft()
            entry, shared = self._prefixes.longest(candidate.prompt_ids)
            if group and self._may_defer(candidate) and self._sibling_prefix(candidate, group) >= shared + _DEFER_GAIN:
                candidate.deferred = True
                deferred.append(candidate)
                continue
            suffix = len(candidate.prompt_ids) - shared
            padded = max(longest, suffix) * (len(group) + 1)
            if group and padded > self._opts.max_prefill_tokens:
                self._waiting.appendleft(candidate)
                break
            group.append(candidate)
            reuse.append((entry, shared))
            longest = max(longest, suffix)
        self._waiting.extendleft(reversed(deferred))  # first in line next time, in their order
        try:
            cache, mask, logits = self._prefill([row.prompt_ids for row in group], reuse)
            self._remember_prompts(group, cache, mask)
            tokens = self._choose(group, logits)
            alive = [i for i, (row, token) in enumerate(zip(group, tokens)) if not self._advance(row, token)]
            if not alive:
                return
            if len(alive) < len(group):
                index = torch.tensor(alive, device=mask.device)
                for layer in _layers(cache):
                    layer.select_rows(index, 0)
                mask = mask.index_select(0, index)
        except Exception as exc:  # noqa: BLE001 - fail these requests, keep serving the others
            log.exception("transformers backend: prefill failed")
            self._fail(group, exc)
            return
        rows = [group[i] for i in alive]
        nxt = torch.tensor([tokens[i] for i in alive], device=mask.device)
        try:
            self._merge(rows, cache, mask, nxt, mask.sum(dim=1))
        except Exception as exc:  # noqa: BLE001 - the running batch may be half-merged: fail it all
            log.exception("transformers backend: merging newcomers failed")
            self._fail(rows, exc)
            self._fail_running(exc)

    def _may_defer(self, row: _Row) -> bool:
        """Whether ``row`` may wait for a sibling: once only, and only if such a prompt fits in the cache."""
        return not row.deferred and 0 < len(row.prompt_ids) * self._kv_token_bytes <= self._prefixes.capacity // 2

    @staticmethod
    def _sibling_prefix(candidate: _Row, group: list[_Row]) -> int:
        """The longest prefix ``candidate`` could take from a group member's prompt once that is cached."""
        limit = len(candidate.prompt_ids) - 1
        return max(_common_prefix(row.prompt_ids, candidate.prompt_ids, limit) for row in group)

    def _prefill(
        self, prompts: list[list[int]], reuse: list[tuple[_PrefixEntry | None, int]]
    ) -> tuple[Cache, torch.Tensor, torch.Tensor]:
        """Run left-padded prompts; return their cache, mask and next-token logits ``[n, V]``.

        ``reuse[i]`` is a cached entry and how many of prompt ``i``'s first tokens it covers. Every
        row runs the same number of tokens, ``longest``, the longest uncovered rest: a row with a
        shorter rest runs some of its covered tokens again instead of padding (the same work, as
        padding is computed too). So each row is ``[padding][cached prefix][tokens run]`` with no
        gap, and the cache is no wider than the longest prompt.
        """
        assert self.model is not None
        started = time.perf_counter()
        longest = max(len(prompt) - shared for prompt, (_, shared) in zip(prompts, reuse))
        reuse = [
            (entry, max(0, len(prompt) - longest)) if entry is not None else (None, 0)
            for prompt, (entry, _) in zip(prompts, reuse)
        ]
        width = max(used for _, used in reuse)
        ids, mask = self._left_pad([prompt[used:] for prompt, (_, used) in zip(prompts, reuse)])
        self.stats["prefill_tokens"] += sum(len(p) for p in prompts)
        if width == 0:
            cache = Cache(layer_class_to_replicate=_BufferedLayer)
        else:
            self.stats["reused_tokens"] += sum(used for _, used in reuse)
            self.stats["prefix_hits"] += sum(1 for _, used in reuse if used)
            head = torch.zeros((len(prompts), width), dtype=mask.dtype, device=mask.device)
            for i, (_, used) in enumerate(reuse):
                head[i, width - used :] = 1
            mask = torch.cat([head, mask], dim=1)
            cache = self._preloaded_cache(reuse, width, ids.shape[1])
        positions = ((mask.cumsum(dim=1) - 1).clamp_min(0))[:, width:]
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1
        )
        self.stats["prefills"] += 1
        self.stats["prefill_ms"] += round((time.perf_counter() - started) * 1000)
        return out.cache, mask, out.logits[:, -1, :]

    def _preloaded_cache(self, reuse: list[tuple[_PrefixEntry | None, int]], width: int, incoming: int) -> Cache:
        """A cache of ``width`` columns holding each row's cached prefix right-aligned, zeros elsewhere."""
        sample = next(entry for entry, shared in reuse if entry is not None and shared)
        capacity = width + incoming + max(64, (width + incoming) // 4)
        layers: list[_BufferedLayer] = []
        for index, (k0, v0) in enumerate(zip(sample.keys, sample.values, strict=True)):
            kbuf = k0.new_zeros((len(reuse), k0.shape[0], capacity, k0.shape[2]))
            vbuf = v0.new_zeros((len(reuse), v0.shape[0], capacity, v0.shape[2]))
            for row, (entry, shared) in enumerate(reuse):
                if entry is not None and shared:
                    kbuf[row, :, width - shared : width].copy_(entry.keys[index][:, :shared])
                    vbuf[row, :, width - shared : width].copy_(entry.values[index][:, :shared])
            layers.append(_BufferedLayer.preloaded(kbuf, vbuf, width))
        return Cache(layers=layers)

    def _remember_prompts(self, rows: list[_Row], cache: Cache, mask: torch.Tensor) -> None:
        """Put each prefilled prompt's keys and values in the prefix cache."""
        for i, row in enumerate(rows):
            self._remember(row.prompt_ids, cache, mask, i)

    def _remember(self, ids: list[int], cache: Cache, mask: torch.Tensor, row: int) -> None:
        """Copy one row's keys and values into the prefix cache; a failure here fails no request."""
        if not self._prefixes.wants(ids, len(ids) * self._kv_token_bytes):
            return
        try:
            columns = mask[row].nonzero().squeeze(1)
            assert len(columns) == len(ids), "the cache must hold exactly the row's tokens"
            pairs = [layer.row_columns(row, columns) for layer in _layers(cache)]
            self._prefixes.add(list(ids), [k for k, _ in pairs], [v for _, v in pairs])
        except Exception:  # noqa: BLE001 - out of memory, say: serve on without the cache's contents
            log.exception("transformers backend: could not store a prefix; emptying the prefix cache")
            self._prefixes.clear()

    def _left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        longest = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), longest), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[i, longest - len(prompt) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _merge(self, rows: list[_Row], cache: Cache, mask: torch.Tensor, nxt: torch.Tensor, pos: torch.Tensor) -> None:
        """Append prefilled rows to the running batch, left-padding the shorter cache."""
        if not self._rows:
            self._rows, self._cache, self._mask, self._next, self._pos = rows, cache, mask, nxt, pos
            return
        assert self._cache is not None and self._mask is not None and self._next is not None and self._pos is not None
        width = max(self._mask.shape[1], mask.shape[1])
        for old, new in zip(_layers(self._cache), _layers(cache), strict=True):
            old.stack_below(new, width)
        self._mask = torch.cat(
            [F.pad(self._mask, (width - self._mask.shape[1], 0)), F.pad(mask, (width - mask.shape[1], 0))], dim=0
        )
        self._next = torch.cat([self._next, nxt])
        self._pos = torch.cat([self._pos, pos])
        self._rows = self._rows + rows

    def _keep(self, keep: list[int]) -> None:
        """Keep only rows ``keep`` of the running batch and trim all-padding leading columns."""
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._rows, self._cache, self._mask, self._next, self._pos = [], None, None, None, None
            return
        assert self._cache is not None and self._mask is not None and self._next is not None and self._pos is not None
        index = torch.tensor(keep, device=self._mask.device)
        mask = self._mask.index_select(0, index)
        # Rows are [padding..., tokens...]; the smallest leading padding can go for every row.
        trim = int(mask.argmax(dim=1).min())
        for layer in _layers(self._cache):
            layer.select_rows(index, trim)
        self._mask = mask[:, trim:]
        self._next = self._next.index_select(0, index)
        self._pos = self._pos.index_select(0, index)
        self._rows = [self._rows[i] for i in keep]

    def _step(self) -> None:
        """Feed every row's pending token, sample the next one, retire finished rows."""
        assert self.model is not None and self._mask is not None and self._next is not None and self._pos is not None
        rows = self._rows
        try:
            started = time.perf_counter()
            ones = torch.ones((len(rows), 1), dtype=self._mask.dtype, device=self._mask.device)
            mask = torch.cat([self._mask, ones], dim=1)
            out = self.model(
                input_ids=self._next[:, None],
                attention_mask=mask,
                position_ids=self._pos[:, None],
                cache=self._cache,
                use_cache=True,
            )
            self._mask = mask
            self._pos = self._pos + 1
            tokens = self._choose(rows, out.logits[:, -1, :])
            self.stats["decode_steps"] += 1
            self.stats["decode_ms"] += round((time.perf_counter() - started) * 1000)
        except Exception as exc:  # noqa: BLE001 - fail the batch, keep the thread
            log.exception("transformers backend: decoding step failed")
            self._fail_running(exc)
            return
        # Past this point the batch is consistent; anything raising below is caught by _run.
        keep = [i for i, (row, token) in enumerate(zip(rows, tokens)) if not self._advance(row, token)]
        if len(keep) < len(rows):
            assert self._cache is not None
            kept = set(keep)
            for i, row in enumerate(rows):
                if i not in kept:  # the cache holds its prompt and every sampled token but the last
                    self._remember(row.prompt_ids + row.sampled[:-1], self._cache, self._mask, i)
        self._next = torch.tensor(tokens, device=self._mask.device)
        self._keep(keep)

    # ---- sampling and text ----

    def _choose(self, rows: Sequence[_Row], logits: torch.Tensor) -> list[int]:
        """The next token of each row: argmax for greedy rows, a seeded nucleus draw otherwise."""
        tokens: list[int] = logits.argmax(dim=-1).tolist()
        sampled = [i for i, row in enumerate(rows) if row.temperature > 0]
        if not sampled:
            return tokens
        sub = logits.index_select(0, torch.tensor(sampled, device=logits.device)).float().cpu()
        temps = torch.tensor([rows[i].temperature for i in sampled], dtype=torch.float32)
        probs = torch.softmax(sub / temps[:, None], dim=-1)
        k = min(_TOP_K_PROBE, probs.shape[-1])
        top_p_vals, top_ids = probs.topk(k, dim=-1)
        cumulative = top_p_vals.cumsum(dim=-1)
        for j, i in enumerate(sampled):
            row = rows[i]
            assert row.generator is not None
            if row.top_p >= 1.0:
                tokens[i] = int(torch.multinomial(probs[j], 1, generator=row.generator))
                continue
            if float(cumulative[j, -1]) >= row.top_p:
                vals, ids = top_p_vals[j], top_ids[j]
            else:  # a flat distribution: the nucleus is wider than the probe, sort it all
                vals, ids = probs[j].sort(descending=True)
            # Keep the smallest prefix whose mass reaches top_p (always at least one token).
            keep = int(((vals.cumsum(dim=-1) - vals) < row.top_p).sum())
            choice = int(torch.multinomial(vals[:keep], 1, generator=row.generator))
            tokens[i] = int(ids[choice])
        return tokens

    def _advance(self, row: _Row, token: int) -> bool:
        """Record ``token`` for ``row``, send any settled text; True when the row is finished."""
        assert self.tokenizer is not None
        row.completion_tokens += 1
        row.sampled.append(token)
        finish: str | None = None
        if token in row.eos_ids:
            finish = "stop"
        else:
            row.generated.append(token)
            if row.completion_tokens >= row.max_new:
                finish = "length"
        text = self.tokenizer.decode(row.generated, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        settled = text if finish else text.rstrip(_REPLACEMENT)
        cut = _find_stop(settled, row.stop, len(row.emitted))
        if cut is not None:
            settled, finish = settled[:cut], "stop"
        elif finish is None:
            settled = settled[: len(settled) - _partial_stop(settled, row.stop, len(row.emitted))]
        if not settled.startswith(row.emitted):
            # Byte-level BPE decoding only ever extends the text; if a tokenizer breaks that, keep
            # what was sent (deltas must still add up to the final text) and log it.
            log.warning("transformers backend: detokenised text changed after it was sent")
            settled = row.emitted + settled[len(row.emitted) :]
        delta = settled[len(row.emitted) :]
        if delta:
            row.emitted = settled
            if row.job.stream:
                self._send(row.job, Delta(delta))
        if finish is None:
            return False
        final = Final(
            text=row.emitted,
            prompt_tokens=len(row.prompt_ids),
            completion_tokens=row.completion_tokens,
            finish_reason=finish,
        )
        self._send(row.job, final, last=True)
        return True

    # ---- choice scoring ----

    def _score_choices(self, jobs: list[_ChoiceJob]) -> None:
        """One forward pass (per ``max_batch_size`` group) for pending ``choice_probs`` requests."""
        assert self.tokenizer is not None
        ready: list[tuple[_ChoiceJob, list[int], list[list[int]]]] = []
        for job in jobs:
            try:
                prompt = self._encode_chat(job.messages)
                candidates = [self._label_tokens(label) for label in job.labels]
            except BackendError as exc:
                self._send(job, exc, last=True)
                continue
            except Exception as exc:  # noqa: BLE001
                self._send(job, BackendError(f"could not render the prompt: {exc}", permanent=True), last=True)
                continue
            ready.append((job, prompt, candidates))
        size = self._opts.max_batch_size
        for start in range(0, len(ready), size):
            chunk = ready[start : start + size]
            try:
                # A judge that reasoned first is scored on its reasoning prompt plus the reasoning:
                # that prefix is in the cache.
                prompts = [prompt for _, prompt, _ in chunk]
                reuse = [self._prefixes.longest(p) for p in prompts]
                if any(shared for _, shared in reuse):
                    _, _, logits = self._prefill(prompts, reuse)
                else:  # nothing to reuse: no need to keep every layer's keys and values
                    ids, mask = self._left_pad(prompts)
                    positions = (mask.cumsum(dim=1) - 1).clamp_min(0)
                    assert self.model is not None
                    out = self.model(
                        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=1
                    )
                    logits = out.logits[:, -1, :]
                probs = torch.softmax(logits.float(), dim=-1).cpu()
            except Exception as exc:  # noqa: BLE001
                log.exception("transformers backend: choice scoring failed")
                for job, _, _ in chunk:
                    self._send(job, BackendError(f"choice scoring failed: {type(exc).__name__}: {exc}"), last=True)
                continue
            for row_probs, (job, _, candidates) in zip(probs, chunk):
                masses = [float(row_probs[ids].sum()) for ids in candidates]
                total = sum(masses)
                result = [m / total for m in masses] if total > 0 else [1.0 / len(masses)] * len(masses)
                self._send(job, result, last=True)

    def _label_tokens(self, label: str) -> list[int]:
        """Distinct first tokens of ``label`` and of ``" " + label`` (their probabilities are summed)."""
        assert self.tokenizer is not None
        if not label.strip():
            raise BackendError("choice labels must be non-empty", permanent=True)
        ids: list[int] = []
        for variant in (label, " " + label):
            encoded = self.tokenizer.encode(variant, add_special_tokens=False)
            if encoded and encoded[0] not in ids:
                ids.append(encoded[0])
        return ids

    # ---- delivery ----

    def _send(self, job: _Job, item: StreamItem | list[float] | BackendError, *, last: bool = False) -> None:
        if last:
            job.done = True
        self._outbox.setdefault(job.loop, []).append((job, item))

    def _flush(self) -> None:
        """Hand this step's items to their event loops: one thread-safe callback per loop."""
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                for job, _ in items:
                    job.cancelled = True

    def _fail(self, rows: Sequence[_Row], exc: Exception) -> None:
        """Fail these rows' requests (transient: a retry may well succeed) unless already finished."""
        for row in rows:
            if not row.job.done:
                self._send(row.job, BackendError(f"generation failed: {type(exc).__name__}: {exc}"), last=True)

    def _fail_running(self, exc: Exception) -> None:
        """Fail every request in the running batch and drop the batch."""
        self._fail(self._rows, exc)
        self._rows, self._cache, self._mask, self._next, self._pos = [], None, None, None, None

    def _shutdown(self) -> None:
        closed = "transformers backend was closed"
        pending = [row.job for row in self._rows] + [row.job for row in self._waiting]
        with self._cond:
            self._closed = True
            pending += [item for item in self._inbox if isinstance(item, _Job)]
            self._inbox.clear()
        for job in pending:
            if not job.done:
                self._send(job, BackendError(closed), last=True)
        self._rows, self._waiting = [], collections.deque()
        self._cache = self._mask = self._next = self._pos = None


def _deliver(items: list[tuple[_Job, StreamItem | list[float] | BackendError]]) -> None:
    for job, item in items:
        job.queue.put_nowait(item)


class _BufferedLayer(DynamicLayer):
    """A cache layer whose ``keys``/``values`` are views into buffers with room to grow.

    transformers' ``DynamicLayer`` concatenates the whole cache with each new token, copying every
    layer's keys and values at every decoding step; on a CPU that copy costs as much as the
    attention itself. Here a step writes one column in place and the buffers grow by a margin
    only when full. Shapes are ``[batch, kv_heads, seq, head_dim]``; the scheduler reshapes the
    batch with :meth:`select_rows` and :meth:`stack_below`.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__()
        self._kbuf: torch.Tensor | None = None
        self._vbuf: torch.Tensor | None = None
        self._len = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        if self._kbuf is None or self._vbuf is None or self._len + n > self._kbuf.shape[2]:
            self._reserve(key_states, value_states, self._len + n)
        assert self._kbuf is not None and self._vbuf is not None
        self._kbuf[:, :, self._len : self._len + n].copy_(key_states)
        self._vbuf[:, :, self._len : self._len + n].copy_(value_states)
        self._len += n
        self._sync()
        return self.keys, self.values  # type: ignore[return-value]

    def _reserve(self, key_states: torch.Tensor, value_states: torch.Tensor, needed: int) -> None:
        capacity = needed + max(64, needed // 4)
        kbuf = key_states.new_empty((*key_states.shape[:2], capacity, key_states.shape[3]))
        vbuf = value_states.new_empty((*value_states.shape[:2], capacity, value_states.shape[3]))
        if self._kbuf is not None and self._vbuf is not None and self._len:
            kbuf[:, :, : self._len].copy_(self._kbuf[:, :, : self._len])
            vbuf[:, :, : self._len].copy_(self._vbuf[:, :, : self._len])
        self._kbuf, self._vbuf = kbuf, vbuf

    def _sync(self) -> None:
        assert self._kbuf is not None and self._vbuf is not None
        self.keys = self._kbuf[:, :, : self._len]
        self.values = self._vbuf[:, :, : self._len]

    def get_seq_length(self) -> int:
        return self._len

    def select_rows(self, index: torch.Tensor, trim: int) -> None:
        """Keep batch rows ``index`` and drop the first ``trim`` (all-padding) columns."""
        assert self._kbuf is not None and self._vbuf is not None
        self._kbuf = self._kbuf.index_select(0, index)[:, :, trim:]
        self._vbuf = self._vbuf.index_select(0, index)[:, :, trim:]
        self._len -= trim
        self._sync()

    def stack_below(self, other: _BufferedLayer, width: int) -> None:
        """Append ``other``'s rows to this batch, both right-aligned in ``width`` columns.

        The padding columns are zero: a masked key gets no weight, but a masked value is still
        multiplied by that zero weight, so it must not be NaN.
        """
        assert self._kbuf is not None and self._vbuf is not None and other._kbuf is not None and other._vbuf is not None
        mine, theirs = self._kbuf.shape[0], other._kbuf.shape[0]
        capacity = width + max(64, width // 4)
        shape = (mine + theirs, self._kbuf.shape[1], capacity, self._kbuf.shape[3])
        kbuf, vbuf = self._kbuf.new_zeros(shape), self._vbuf.new_zeros(shape)
        for rows, layer in ((slice(0, mine), self), (slice(mine, mine + theirs), other)):
            start = width - layer._len
            kbuf[rows, :, start:width].copy_(layer._kbuf[:, :, : layer._len])
            vbuf[rows, :, start:width].copy_(layer._vbuf[:, :, : layer._len])
        self._kbuf, self._vbuf, self._len = kbuf, vbuf, width
        self._sync()

    @classmethod
    def preloaded(cls, kbuf: torch.Tensor, vbuf: torch.Tensor, length: int) -> _BufferedLayer:
        """A layer over buffers whose first ``length`` columns are already filled."""
        layer = cls()
        layer.lazy_initialization(kbuf, vbuf)
        layer._kbuf, layer._vbuf, layer._len = kbuf, vbuf, length
        layer._sync()
        return layer

    def row_columns(self, row: int, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of one row's keys and values at ``columns``: ``[kv_heads, len(columns), head_dim]``."""
        assert self._kbuf is not None and self._vbuf is not None
        return self._kbuf[row].index_select(1, columns), self._vbuf[row].index_select(1, columns)


class _PrefixEntry:
    """A token sequence and its keys/values (one ``[kv_heads, len, head_dim]`` pair per layer)."""

    __slots__ = ("ids", "keys", "nbytes", "values")

    def __init__(self, ids: list[int], keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        self.ids = ids
        self.keys = keys
        self.values = values
        self.nbytes = sum(t.numel() * t.element_size() for t in (*keys, *values))


class _PrefixCache:
    """Keys and values of recent sequences, reused when a new prompt starts with the same tokens.

    A debater's later turn repeats its system prompt, its source excerpts and the question, and a
    conversation's next request repeats the last one and its answer, so most of a later prompt was
    computed before; so does a judge's scoring prompt after its chain of thought.
    Keys carry the rotary embedding of their position, and positions come from the count of real
    tokens, so a cached prefix is valid in any row at any padding. Bounded in bytes, least
    recently used first out; an entry that another entry extends is dropped. Scheduler thread only.
    """

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity = capacity_bytes
        self.size = 0
        self._entries: collections.OrderedDict[int, _PrefixEntry] = collections.OrderedDict()
        self._next_key = 0

    def __len__(self) -> int:
        return len(self._entries)

    def longest(self, ids: list[int]) -> tuple[_PrefixEntry | None, int]:
        """The entry sharing the longest prefix with ``ids`` and that length (at most ``len(ids) - 1``)."""
        best: tuple[_PrefixEntry | None, int, int] = (None, 0, -1)
        limit = len(ids) - 1  # the last prompt token must be run to get the next token's logits
        for key, entry in self._entries.items():
            shared = _common_prefix(entry.ids, ids, limit)
            if shared > best[1]:
                best = (entry, shared, key)
        entry, shared, key = best
        if entry is None or shared < _MIN_PREFIX_REUSE:
            return None, 0
        self._entries.move_to_end(key)
        return entry, shared

    def wants(self, ids: list[int], nbytes: int) -> bool:
        """Whether a sequence of ``nbytes`` would be stored (else a caller need not copy it out).

        A sequence that an entry already covers is not: that entry counts as used instead.
        """
        if not self.capacity or len(ids) < _MIN_PREFIX_REUSE or nbytes > self.capacity:
            return False
        for key, entry in self._entries.items():
            if _common_prefix(entry.ids, ids, len(ids)) == len(ids):
                self._entries.move_to_end(key)
                return False
        return True

    def add(self, ids: list[int], keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        entry = _PrefixEntry(ids, keys, values)
        if len(ids) < _MIN_PREFIX_REUSE or entry.nbytes > self.capacity:
            return
        for key, old in list(self._entries.items()):
            shared = _common_prefix(old.ids, ids, len(ids))
            if shared == len(ids):  # already covered by a longer (or equal) entry
                self._entries.move_to_end(key)
                return
            if shared == len(old.ids):  # the new sequence extends this one
                self._drop(key)
        while self._entries and self.size + entry.nbytes > self.capacity:
            self._drop(next(iter(self._entries)))
        self._entries[self._next_key] = entry
        self._next_key += 1
        self.size += entry.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.size = 0

    def _drop(self, key: int) -> None:
        self.size -= self._entries.pop(key).nbytes


def _kv_bytes_per_token(config: object, dtype: torch.dtype) -> int:
    """Bytes of keys and values one token takes over all layers (0 when the config does not say)."""
    layers = getattr(config, "num_hidden_layers", 0) or 0
    heads = getattr(config, "num_attention_heads", 0) or 0
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or (getattr(config, "hidden_size", 0) // heads if heads else 0)
    return 2 * int(layers) * int(kv_heads) * int(head_dim) * dtype.itemsize


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    """Length of the common prefix of ``a`` and ``b``, at most ``limit`` (slice compares run in C)."""
    hi = min(len(a), len(b), limit)
    if hi <= 0 or a[0] != b[0]:
        return 0
    if a[:hi] == b[:hi]:
        return hi
    lo = 1  # a[:lo] == b[:lo] holds; a[:hi] == b[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _layers(cache: Cache) -> list[_BufferedLayer]:
    layers = list(cache.layers)
    assert all(isinstance(layer, _BufferedLayer) for layer in layers)
    return layers  # type: ignore[return-value]


def _find_stop(text: str, stops: tuple[str, ...], start: int) -> int | None:
    """Index of the earliest stop string in ``text`` at or after ``start`` (held-back text never precedes it)."""
    best: int | None = None
    for stop in stops:
        index = text.find(stop, start)
        if index != -1 and (best is None or index < best):
            best = index
    return best


def _partial_stop(text: str, stops: tuple[str, ...], start: int) -> int:
    """Length of the longest suffix of ``text[start:]`` that could begin a stop string."""
    hold = 0
    tail_len = len(text) - start
    for stop in stops:
        for k in range(min(len(stop) - 1, tail_len), hold, -1):
            if text.endswith(stop[:k]):
                hold = k
                break
    return hold


# --------------------------------------------------------------------------------------------------
# The ModelAPI.


class TransformersBackend(ModelAPI):
    """A local Hugging Face causal LM served by a continuous-batching scheduler thread.

    The scheduler thread (and the model load) starts on first use; :meth:`aclose` stops it and a
    later request starts a fresh one.
    """

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        self.options = TransformersOptions.from_spec(spec)
        self._lock = threading.Lock()
        self._scheduler: _Scheduler | None = None
        self._count_lock = threading.Lock()  # separate: a first count_tokens may load for seconds
        self._count_tokenizer: PreTrainedTokenizerBase | None = None

    def _running(self) -> _Scheduler:
        with self._lock:
            if self._scheduler is None or not self._scheduler.is_alive:
                self._scheduler = _Scheduler(self.spec.model, self.options)
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
        job = _ChoiceJob(asyncio.get_running_loop(), messages, labels)
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
                self._count_tokenizer = _load_tokenizer(resolve_model_path(self.spec.model))
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

    def _gen_job(self, request: GenerateRequest, *, stream: bool) -> _GenJob:
        try:
            request.params.validate()
        except ValueError as exc:
            raise BackendError(str(exc), permanent=True) from exc
        return _GenJob(asyncio.get_running_loop(), request, stream=stream)


__all__ = ["TransformersBackend", "TransformersOptions", "default_dtype", "resolve_model_path"]
