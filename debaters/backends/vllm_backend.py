"""vLLM's offline engine in process: whole debate rounds as one ``LLM.chat`` call on a GPU.

Spec::

    BackendSpec(backend="vllm", model="embedded" | "org/name" | "/path/to/hf-folder",
                options={"tensor_parallel_size": 1, "gpu_memory_utilization": 0.9, "max_model_len": None,
                         "dtype": "auto", "max_logprobs": 20, "enforce_eager": False, "batch_wait_ms": 5,
                         "engine_args": {...}})

``model="embedded"`` is the bundled SmolLM2 folder (see :mod:`debaters.embedded`); anything else goes to
``vllm.LLM(model=...)`` as it is (a Hub id or a local folder). ``engine_args`` is merged into the
``LLM(...)`` call for anything else vLLM's ``EngineArgs`` take (``enable_prefix_caching``,
``max_num_seqs``, ...); ``model`` cannot be overridden there, and ``trust_remote_code`` is refused: a
profile is edited in the browser, and code from a model repository should not run in a worker on the
strength of a form field (serve such a model with ``vllm serve --trust-remote-code`` and use the
``openai`` backend instead).

Install: the ``[vllm]`` extra, in its own environment (vLLM pins its own torch and transformers,
which must not replace the CPU install; see docs/serving.md). Importing this module imports neither
vllm nor torch: the web process validates ``vllm`` profiles without either installed.

How requests are batched. One engine thread per backend instance owns the ``vllm.LLM`` (created on
first use) and runs every call on it, because the engine is not safe to call from two threads at
once. Requests wait in an inbox; the thread takes *everything* waiting (after ``batch_wait_ms`` of
grace when it was idle, so that the requests of a round that arrive together leave together) and
runs one ``LLM.chat`` over all of them, each with its own ``vllm.SamplingParams``. So
``generate_batch`` is one ``LLM.chat`` over a whole round, and so are the concurrent ``generate``
calls with which the batch runner steps its debates. vLLM then schedules the batch on the GPU with
its own continuous batching and paged KV cache. The worker's event loop is never blocked by a call:
lease renewals and other debates' streams go on while the GPU works.

Sampling: every field of ``vllm.SamplingParams`` that changes what is sampled is set explicitly
(:func:`vllm_sampling_kwargs`), so the model's ``generation_config.json`` (which vLLM uses for the
defaults of fields left unset) cannot change a profile's sampling; only its end-of-sequence tokens
still apply, as they should.

Streaming: the offline engine returns whole completions, so ``generate`` yields the whole text as
one :class:`Delta` and then the :class:`Final`. Use ``vllm serve`` and the ``openai`` backend for
token-by-token streaming to human judges.

Where the engine cannot start. vLLM's engine runs its core in a child process, and a daemonic
process may not start children; Celery's prefork pool runs tasks in daemonic children (billiard
marks them so, in ``multiprocessing.current_process()`` too), and a child forked after CUDA was
initialised cannot use CUDA at all. :func:`fork_hazard` detects both, and the first request then fails
at once with a permanent :class:`BackendError` that names the fix: a worker with ``--pool=solo`` (one
per GPU) or ``--pool=threads`` (the engine is shared by the worker's tasks), or ``vllm serve`` with
the ``openai`` backend. A missing vllm is a permanent error naming the install command.

Worker processes. vLLM 0.33 starts its engine core (and, with tensor parallelism, its GPU workers)
with ``VLLM_WORKER_MULTIPROC_METHOD``, ``fork`` by default outside ``vllm serve``. Forking a process
that runs other threads (a Celery worker's pool, its event loop, the tokenizer's) can deadlock the
child on a lock some thread held, so the engine thread sets the method to ``spawn`` before importing
vLLM unless the environment already names one (and logs a warning when it names ``fork``).

Errors, classified as vLLM 0.33's own server does (``create_error_response``): the engine failing to
load is permanent (fix the profile or the machine). ``vllm.exceptions.VLLMClientError`` (its
``VLLMValidationError``: a prompt longer than ``max_model_len``, a bad sampling value, more logprobs
than ``max_logprobs``) is permanent, and so are the raw ``ValueError``/``TypeError``/``OverflowError``,
``NotImplementedError`` and chat-template errors vLLM still maps to 4xx; its ``GracefulHTTPError``
(queue full) and ``VLLMServerError`` are transient, like anything else. In 0.33
``VLLMValidationError`` is *not* a ``ValueError``: it derives from ``VLLMClientError`` ->
``VLLMError`` -> ``Exception``. One bad request makes the whole ``LLM.chat`` fail before generating,
so when a call over several requests fails with a permanent error the batch is split in halves and
each half run again: the bad request ends alone with its permanent error after about 2·log2(n)
calls, and the others complete in batches. A transient failure of a whole call fails every request
in it transiently (retried by the wrapper). When the engine died (``EngineDeadError``) the engine
thread ends after failing its requests, and the next request starts a new engine.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from debaters.backends.base import (
    BackendError,
    BackendLimits,
    BackendSpec,
    ChatMessage,
    Delta,
    Final,
    GenerateRequest,
    LimitError,
    ModelAPI,
    SamplingParams,
    StreamItem,
)

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "pip install 'debate-arena[vllm]' in a separate environment (vLLM pins its own torch and transformers; "
    "see docs/serving.md), or serve the model with `vllm serve` and use the openai backend"
)
WORKER_HINT = (
    "run this worker with `celery -A arena worker --pool=solo` (one worker per GPU) or `--pool=threads`, "
    "or serve the model with `vllm serve` and give the profile the openai backend"
)
MAX_TOP_LOGPROBS = 20
# vLLM 0.33's SamplingParams._verify_args: "temperature must be in [0, 2]" and "stop cannot contain
# an empty string" (ours allow temperatures up to 5).
MAX_VLLM_TEMPERATURE = 2.0
VLLM_LIMITS = BackendLimits(
    "vllm",
    source="vLLM 0.33's SamplingParams",
    max_temperature=MAX_VLLM_TEMPERATURE,
    empty_stop=False,
)
# How vLLM starts its engine core process; see "Worker processes" in the module docstring.
MULTIPROC_ENV = "VLLM_WORKER_MULTIPROC_METHOD"
_ROLES = frozenset({"system", "user", "assistant"})
_RESERVED_ENGINE_ARGS = frozenset({"model"})
_REFUSED_ENGINE_ARGS = frozenset({"trust_remote_code"})
_DTYPES = frozenset({"auto", "float16", "bfloat16", "float32", "half"})
_KNOWN_OPTIONS = frozenset(
    {
        "tensor_parallel_size",
        "gpu_memory_utilization",
        "max_model_len",
        "dtype",
        "max_logprobs",
        "enforce_eager",
        "batch_wait_ms",
        "engine_args",
    }
)


# --------------------------------------------------------------------------------------------------
# Options and pure conversions (tested without vLLM).


@dataclass(frozen=True)
class VLLMOptions:
    """The validated ``BackendSpec.options`` of a :class:`VLLMBackend` (see the module docstring)."""

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    dtype: str = "auto"
    max_logprobs: int = MAX_TOP_LOGPROBS
    enforce_eager: bool = False
    batch_wait_ms: float = 5.0
    engine_args: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> VLLMOptions:
        """Validate the options; a bad or unknown one is a permanent :class:`BackendError` (a profile to fix)."""
        opts = dict(spec.options)
        unknown = set(opts) - _KNOWN_OPTIONS
        if unknown:
            raise BackendError(
                f"vllm backend: unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_KNOWN_OPTIONS))} "
                "(other vLLM engine arguments go in `engine_args`)",
                permanent=True,
            )
        try:
            tp = _int(opts.get("tensor_parallel_size", 1), "tensor_parallel_size", minimum=1)
            util = _number(opts.get("gpu_memory_utilization", 0.9), "gpu_memory_utilization")
            if not 0.0 < util <= 1.0:
                raise ValueError("gpu_memory_utilization must be in (0, 1]")
            raw_len = opts.get("max_model_len")
            max_len = None if raw_len is None else _int(raw_len, "max_model_len", minimum=1)
            dtype = opts.get("dtype", "auto")
            if not isinstance(dtype, str) or dtype not in _DTYPES:
                raise ValueError(f"dtype must be one of {', '.join(sorted(_DTYPES))}, not {dtype!r}")
            max_logprobs = _int(opts.get("max_logprobs", MAX_TOP_LOGPROBS), "max_logprobs", minimum=1)
            eager = opts.get("enforce_eager", False)
            if not isinstance(eager, bool):
                raise ValueError("enforce_eager must be true or false")
            wait = _number(opts.get("batch_wait_ms", 5.0), "batch_wait_ms")
            if wait < 0:
                raise ValueError("batch_wait_ms must not be negative")
            engine_args = opts.get("engine_args", {})
            if not isinstance(engine_args, Mapping) or not all(isinstance(k, str) for k in engine_args):
                raise ValueError("engine_args must be a JSON object")
            reserved = _RESERVED_ENGINE_ARGS.intersection(engine_args)
            if reserved:
                raise ValueError(f"engine_args may not set {', '.join(sorted(reserved))} (use the profile's model)")
            refused = _REFUSED_ENGINE_ARGS.intersection(engine_args)
            if refused:
                raise ValueError(
                    "engine_args may not set trust_remote_code: serve such a model with `vllm serve "
                    "--trust-remote-code` and use the openai backend"
                )
        except ValueError as exc:
            raise BackendError(f"bad vllm backend option: {exc}", permanent=True) from exc
        return cls(tp, util, max_len, str(dtype), max_logprobs, eager, wait, dict(engine_args))

    def limits(self) -> BackendLimits:
        """What this engine accepts (see :mod:`debaters.backends.limits`)."""
        return dataclasses.replace(VLLM_LIMITS, max_logprobs=self.max_logprobs)


def _int(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}")
    return value


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number")
    return float(value)


def resolve_model(model: str) -> str:
    """What ``vllm.LLM(model=...)`` gets: the embedded folder for ``embedded``, else ``model`` unchanged."""
    if model != "embedded":
        return model
    from debaters import embedded

    try:
        return str(embedded.ensure_converted())
    except embedded.EmbeddedModelError as exc:
        raise BackendError(str(exc), permanent=True) from exc


def engine_kwargs(model: str, options: VLLMOptions) -> dict[str, object]:
    """The keyword arguments of ``vllm.LLM(...)`` for ``model`` (already resolved) and ``options``."""
    kwargs: dict[str, object] = {
        "model": model,
        "tensor_parallel_size": options.tensor_parallel_size,
        "gpu_memory_utilization": options.gpu_memory_utilization,
        "dtype": options.dtype,
        "max_logprobs": options.max_logprobs,
        "enforce_eager": options.enforce_eager,
    }
    if options.max_model_len is not None:
        kwargs["max_model_len"] = options.max_model_len
    kwargs.update(options.engine_args)
    return kwargs


def vllm_sampling_kwargs(params: SamplingParams) -> dict[str, object]:
    """The keyword arguments of ``vllm.SamplingParams`` for one of our requests.

    Everything that changes what is sampled is explicit, so a model's generation_config cannot
    supply a default (top_k, repetition penalty, ...). Stop strings are excluded from the text, as in
    the other backends; empty ones are dropped (vLLM refuses them). Anything else outside
    :data:`VLLM_LIMITS` (a temperature above 2) is a permanent :class:`BackendError`.
    """
    stop = [s for s in params.stop if s]
    try:
        params.validate()
        VLLM_LIMITS.check(params.replace(stop=tuple(stop)))
    except LimitError as exc:
        raise BackendError(f"vllm backend: {exc.message}", permanent=True) from exc
    except ValueError as exc:
        raise BackendError(str(exc), permanent=True) from exc
    return {
        "n": 1,
        "max_tokens": params.max_tokens,
        "min_tokens": 0,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": 0,  # 0: no top-k cut (vLLM also accepts -1)
        "min_p": 0.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "repetition_penalty": 1.0,
        "seed": params.seed,
        "stop": stop or None,
        "ignore_eos": False,
        "include_stop_str_in_output": False,
        "skip_special_tokens": True,
        "detokenize": True,
    }


def choice_sampling_kwargs(max_logprobs: int) -> dict[str, object]:
    """``vllm.SamplingParams`` for :meth:`VLLMBackend.choice_probs`: one greedy token and the top logprobs.

    Greedy because vLLM lists the *sampled* token first and then the top ``logprobs`` entries: a token
    sampled from outside the top k adds an entry that changes from call to call. At temperature 0
    the sampled token is the top one, so the entries are exactly the top k. The values are the
    model's own (vLLM's default ``logprobs_mode`` is ``raw_logprobs``: before temperature).
    """
    return {
        "n": 1,
        "max_tokens": 1,
        "temperature": 0.0,
        "top_p": 1.0,
        "top_k": 0,
        "min_p": 0.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "repetition_penalty": 1.0,
        "seed": 0,
        "logprobs": min(MAX_TOP_LOGPROBS, max_logprobs),
        "skip_special_tokens": True,
        "detokenize": True,
    }


def conversation(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """One ``LLM.chat`` conversation: plain ``{"role", "content"}`` dicts; bad messages are permanent errors."""
    if not messages:
        raise BackendError("a request needs at least one message", permanent=True)
    out: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES:
            raise BackendError(f"message {i} has role {role!r}; expected one of {', '.join(sorted(_ROLES))}", permanent=True)
        if not isinstance(content, str):
            raise BackendError(f"message {i} has no text content", permanent=True)
        out.append({"role": str(role), "content": content})
    return out


def final_from_output(output: object) -> Final:
    """Our :class:`Final` from a ``vllm.RequestOutput`` (only the attributes read here are required).

    vLLM's ``finish_reason`` is ``"stop"`` (end of sequence or a stop string) or ``"length"``; anything
    else (``"abort"``, none at all) is a transient :class:`BackendError`.
    """
    outputs = getattr(output, "outputs", None)
    if not outputs:
        raise BackendError("vLLM returned a request output without completions")
    completion = outputs[0]
    reason = getattr(completion, "finish_reason", None)
    if reason not in ("stop", "length"):
        raise BackendError(f"vLLM ended a request with finish_reason {reason!r}")
    text = getattr(completion, "text", None)
    if not isinstance(text, str):
        raise BackendError("vLLM returned a completion without text (was detokenize turned off?)")
    prompt_ids = getattr(output, "prompt_token_ids", None) or ()
    token_ids = getattr(completion, "token_ids", None) or ()
    return Final(text=text, prompt_tokens=len(prompt_ids), completion_tokens=len(token_ids), finish_reason=reason)


def label_probs(top: Mapping[int, object], labels: Sequence[str]) -> list[float]:
    """Renormalised probability of each label among one position's top logprobs.

    ``top`` maps token ids to vLLM ``Logprob`` objects (``.logprob``, ``.decoded_token``). A token counts
    for a label when its text equals the label once whitespace is stripped, so ``"A"`` and ``" A"`` both
    count. Raises a permanent :class:`BackendError` when no label is among the top tokens.
    """
    wanted = [label.strip() for label in labels]
    mass = [0.0] * len(labels)
    seen: list[str] = []
    for entry in top.values():
        token = getattr(entry, "decoded_token", None)
        logprob = getattr(entry, "logprob", None)
        if not isinstance(token, str) or not isinstance(logprob, (int, float)) or not math.isfinite(logprob):
            continue
        seen.append(token)
        for i, label in enumerate(wanted):
            if token.strip() == label:
                mass[i] += math.exp(logprob)
    total = sum(mass)
    if total <= 0.0:
        shown = ", ".join(repr(t) for t in seen[:10])
        raise BackendError(
            f"none of the labels {list(labels)!r} is among the top {len(seen)} first tokens ({shown})", permanent=True
        )
    return [m / total for m in mass]


# --------------------------------------------------------------------------------------------------
# Where the engine may start.


def fork_hazard() -> str | None:
    """Why vLLM's engine cannot start in this process, or ``None`` when it can.

    * A daemonic process (Celery's prefork pool children; billiard sets
      ``multiprocessing.current_process()`` to its daemonic worker) may not start the child process in
      which vLLM runs its engine core.
    * A process forked after its parent initialised CUDA cannot use CUDA (checked only when torch is
      already imported: this check must not import it).
    """
    process = multiprocessing.current_process()
    if process.daemon:
        return f"this is a daemonic worker process ({process.name}, e.g. a Celery prefork pool child)"
    billiard_process = sys.modules.get("billiard.process")
    if billiard_process is not None:
        current = billiard_process.current_process()
        if getattr(current, "daemon", False):
            return f"this is a Celery prefork pool child ({getattr(current, 'name', '?')})"
    torch = sys.modules.get("torch")
    if torch is not None:
        in_bad_fork = getattr(getattr(torch, "cuda", None), "_is_in_bad_fork", None)
        if callable(in_bad_fork) and in_bad_fork():
            return "this process was forked after its parent initialised CUDA"
    return None


# Raw exceptions vLLM 0.33's server still answers with a 4xx (create_error_response's fallback).
_RAW_CLIENT_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OverflowError, NotImplementedError)


@dataclass(frozen=True)
class VLLMErrorKinds:
    """vLLM's exception classes, read from the installed vLLM when the engine loads.

    ``client``: the request is wrong (``VLLMClientError``), permanent. ``graceful``: admission control
    (``GracefulHTTPError``: queue full), transient. ``dead``: the engine is gone (``EngineDeadError``).
    Before vLLM is imported all three are empty and only the raw exceptions below classify.
    """

    client: tuple[type[BaseException], ...] = ()
    graceful: tuple[type[BaseException], ...] = ()
    dead: tuple[type[BaseException], ...] = ()

    def classify(self, exc: BaseException) -> BackendError:
        """A failed ``LLM.chat`` as a :class:`BackendError`, permanent when vLLM blames the request."""
        if isinstance(exc, BackendError):
            return exc
        if isinstance(exc, self.graceful):
            permanent = False
        elif isinstance(exc, self.client):
            permanent = True
        else:
            template_error = any(c.__name__ == "TemplateError" for c in type(exc).__mro__)  # jinja2's, unimported
            permanent = template_error or isinstance(exc, _RAW_CLIENT_ERRORS)
        return BackendError(f"vLLM failed the request: {type(exc).__name__}: {exc}", permanent=permanent)

    def is_dead(self, exc: BaseException) -> bool:
        return isinstance(exc, self.dead)


def choose_multiproc_method() -> str:
    """Make vLLM start its processes with ``spawn`` unless the environment already chose; return the method.

    vLLM 0.33 reads ``VLLM_WORKER_MULTIPROC_METHOD`` (default ``fork`` outside ``vllm serve``) when it
    starts its engine core; forking a multi-threaded worker can deadlock the child.
    """
    method = os.environ.setdefault(MULTIPROC_ENV, "spawn")
    if method != "spawn":
        log.warning(
            "%s=%s: vLLM will fork this multi-threaded worker to start its engine, which can deadlock; "
            "unset it (the vllm backend then uses spawn) or set it to spawn",
            MULTIPROC_ENV,
            method,
        )
    return method


# --------------------------------------------------------------------------------------------------
# The engine thread.


class _Job:
    """One request for the engine thread; its result goes to ``future`` on the caller's loop."""

    __slots__ = ("conversation", "future", "kind", "labels", "loop", "sampling")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        conversation: list[dict[str, str]],
        sampling: dict[str, object],
        *,
        labels: tuple[str, ...] = (),
    ) -> None:
        self.loop = loop
        self.future: asyncio.Future[Final | list[float]] = loop.create_future()
        self.conversation = conversation
        self.sampling = sampling
        self.labels = labels
        self.kind = "choice" if labels else "generate"

    def abandoned(self) -> bool:
        return self.future.done()

    def resolve(self, result: Final | list[float] | BackendError) -> None:
        def _set() -> None:
            if self.future.done():
                return
            if isinstance(result, BackendError):
                self.future.set_exception(result)
            else:
                self.future.set_result(result)

        try:
            self.loop.call_soon_threadsafe(_set)
        except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
            pass


class _Stop:
    """Inbox sentinel: end the thread."""


class _Engine:
    """Owns one ``vllm.LLM`` in a daemon thread and runs one ``LLM.chat`` per batch of waiting jobs."""

    def __init__(self, model: str, options: VLLMOptions) -> None:
        self._model = model
        self._options = options
        self._cond = threading.Condition()
        self._inbox: collections.deque[_Job | _Stop] = collections.deque()
        self._closed = False  # set, under _cond, when the thread takes its last jobs
        self._ready = threading.Event()
        self.load_error: BackendError | None = None
        # Why the engine died (EngineDeadError), once it did: the thread then ends after its batch.
        self.dead: str | None = None
        # Sizes of the latest LLM.chat calls, for benchmarks and tests (bounded: a worker lives long).
        self.batches: collections.deque[int] = collections.deque(maxlen=10_000)
        self._llm: object | None = None
        self._sampling_cls: type | None = None
        self._errors = VLLMErrorKinds()
        self._thread = threading.Thread(target=self._run, name=f"vllm-engine:{model}", daemon=True)
        self._thread.start()

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def closed(self) -> bool:
        """The thread has taken its last jobs (it is ending): nothing submitted now would run."""
        return self._closed

    def submit(self, jobs: Sequence[_Job]) -> bool:
        """Hand jobs to the thread; False when it is ending (the caller starts a new engine)."""
        with self._cond:
            if self._closed:
                return False
            self._inbox.extend(jobs)
            self._cond.notify()
            return True

    def stop(self) -> None:
        with self._cond:
            self._inbox.append(_Stop())
            self._cond.notify()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    # ---- the thread ----

    def _run(self) -> None:
        try:
            self._load()
        except BackendError as exc:
            self.load_error = exc
        except Exception as exc:  # noqa: BLE001 - reported to every request instead
            log.exception("vllm backend failed to start %s", self._model)
            self.load_error = BackendError(f"vLLM could not load model {self._model!r}: {exc}", permanent=True)
        finally:
            self._ready.set()
        while True:
            jobs, stopping, waited = self._take(block=True)
            if self.load_error is not None:
                for job in jobs:
                    job.resolve(BackendError(self.load_error.message, permanent=True))
                if stopping:
                    break
                continue
            if waited and self._options.batch_wait_ms > 0 and not stopping:
                # The engine was idle: give the rest of a round a moment to arrive and join this call.
                # (Requests that arrived during the previous call leave at once: they waited enough.)
                time.sleep(self._options.batch_wait_ms / 1000)
                more, stopping, _ = self._take(block=False)
                jobs.extend(more)
            live = [job for job in jobs if not job.abandoned()]
            if live:
                self._run_batch(live)
            if stopping or self.dead is not None:
                break
        reason = "the vllm backend was closed" if self.dead is None else self.dead
        for job in self._drain():
            job.resolve(BackendError(reason))
        self._llm = None

    def _load(self) -> None:
        method = choose_multiproc_method()
        try:
            # Heavy imports on first use, in this thread: the web process and CPU workers never pay them.
            import vllm  # noqa: PLC0415
            import vllm.exceptions  # noqa: PLC0415
            import vllm.v1.engine.exceptions  # noqa: PLC0415
        except ImportError as exc:
            raise BackendError(f"the vllm backend needs vLLM, which is not importable here ({exc}): {INSTALL_HINT}", permanent=True) from exc
        self._errors = VLLMErrorKinds(
            client=(vllm.exceptions.VLLMClientError,),
            graceful=(vllm.exceptions.GracefulHTTPError,),
            dead=(vllm.v1.engine.exceptions.EngineDeadError,),
        )
        started = time.monotonic()
        kwargs = engine_kwargs(resolve_model(self._model), self._options)
        self._llm = vllm.LLM(**kwargs)
        self._sampling_cls = vllm.SamplingParams
        seconds = time.monotonic() - started
        log.info("vllm backend loaded %s in %.1f s (processes started with %s)", kwargs["model"], seconds, method)

    def _take(self, *, block: bool) -> tuple[list[_Job], bool, bool]:
        """(jobs, whether to stop, whether the inbox was empty so that this call waited)."""
        waited = False
        with self._cond:
            while block and not self._inbox:
                waited = True
                self._cond.wait()
            items = list(self._inbox)
            self._inbox.clear()
        return [i for i in items if isinstance(i, _Job)], any(isinstance(i, _Stop) for i in items), waited

    def _drain(self) -> list[_Job]:
        """The last jobs (the thread is ending): later submissions are refused, never lost."""
        with self._cond:
            self._closed = True
            items = list(self._inbox)
            self._inbox.clear()
        return [i for i in items if isinstance(i, _Job)]

    def _run_batch(self, jobs: list[_Job]) -> None:
        try:
            outputs = self._chat(jobs)
        except Exception as exc:  # noqa: BLE001 - isolate the request that broke the batch
            error = self._errors.classify(exc)
            if self._errors.is_dead(exc):
                self.dead = f"vLLM's engine died ({error.message}); the next request starts a new one"
                error = BackendError(self.dead)
            if len(jobs) == 1 or not error.permanent or self.dead is not None:
                # A transient failure of a whole call is nobody's fault in particular: all retry.
                for job in jobs:
                    job.resolve(error)
                return
            # A request vLLM refuses fails the whole call before anything is generated: halve the
            # batch until the bad request is alone, so the others still run in batches.
            log.warning("vllm backend: a batch of %d failed (%s); splitting it to isolate the request", len(jobs), exc)
            middle = len(jobs) // 2
            for half in (jobs[:middle], jobs[middle:]):
                live = [job for job in half if not job.abandoned()]
                if live:
                    self._run_batch(live)
            return
        for job, output in zip(jobs, outputs):
            try:
                if job.kind == "choice":
                    logprobs = getattr(output.outputs[0], "logprobs", None) if getattr(output, "outputs", None) else None
                    if not logprobs:
                        raise BackendError("vLLM returned no logprobs for the first token", permanent=True)
                    job.resolve(label_probs(logprobs[0], job.labels))
                else:
                    job.resolve(final_from_output(output))
            except BackendError as exc:
                job.resolve(exc)

    def _chat(self, jobs: list[_Job]) -> list[object]:
        assert self._llm is not None and self._sampling_cls is not None
        params = [self._sampling_cls(**job.sampling) for job in jobs]
        # ``LLM.chat`` takes one continue_final_message for a call: prefilled conversations (a final
        # assistant message, base.GenerateRequest) go in a call of their own.
        outputs: list[object] = [None] * len(jobs)
        for prefill in (False, True):
            picked = [i for i, job in enumerate(jobs) if (job.conversation[-1]["role"] == "assistant") == prefill]
            if not picked:
                continue
            part = list(
                self._llm.chat(  # type: ignore[attr-defined]
                    [jobs[i].conversation for i in picked],
                    sampling_params=[params[i] for i in picked],
                    use_tqdm=False,
                    add_generation_prompt=not prefill,
                    continue_final_message=prefill,
                )
            )
            if len(part) != len(picked):
                raise BackendError(f"vLLM returned {len(part)} outputs for {len(picked)} requests")
            for i, output in zip(picked, part):
                outputs[i] = output
        self.batches.append(len(jobs))
        return outputs


# --------------------------------------------------------------------------------------------------
# The backend.


class VLLMBackend(ModelAPI):
    """vLLM's offline engine behind :class:`ModelAPI`; see the module docstring."""

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        self.options = VLLMOptions.from_spec(spec)
        self._lock = threading.Lock()
        self._engine: _Engine | None = None
        self._count_lock = threading.Lock()
        self._tokenizer: object | None = None
        self._tokenizer_failed = False

    def _running(self) -> _Engine:
        reason = fork_hazard()
        if reason is not None:
            raise BackendError(f"vLLM's offline engine cannot start here: {reason}. {WORKER_HINT}", permanent=True)
        with self._lock:
            old = self._engine
            # ``dead`` is set before the failed batch's requests hear of it, while the thread is still
            # finishing: a request sent right after must not join the engine on its way out.
            if old is None or not old.is_alive or old.dead is not None or old.closed:
                if old is not None:
                    old.join(timeout=5)  # let it drop its LLM (GPU memory) before the next one loads
                self._engine = _Engine(self.spec.model, self.options)
            return self._engine

    def _submit(self, jobs: Sequence[_Job]) -> None:
        """To the running engine; to a new one when it turned out to be ending (a race with its death)."""
        for _ in range(3):
            if self._running().submit(jobs):
                return
        raise BackendError("vLLM's engine kept stopping while requests were sent to it")

    async def generate(self, request: GenerateRequest) -> AsyncIterator[StreamItem]:
        """A batch of one (joined with whatever else is waiting): the whole text as one delta, then the final."""
        final = await self.complete(request)
        if final.text:
            yield Delta(final.text)
        yield final

    async def complete(self, request: GenerateRequest) -> Final:
        (final,) = await self.generate_batch([request])
        return final

    async def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[Final]:
        """One ``LLM.chat`` over all ``requests`` (plus any other waiting ones); finals in order.

        The first failure is raised, and the other requests' results are dropped.
        """
        if not requests:
            return []
        loop = asyncio.get_running_loop()
        jobs = [_Job(loop, conversation(r.messages), vllm_sampling_kwargs(r.params)) for r in requests]
        self._submit(jobs)
        try:
            results = [await job.future for job in jobs]
        finally:
            for job in jobs:
                job.future.cancel()  # no effect on finished ones; lets the engine skip the rest
        finals: list[Final] = []
        for result in results:
            assert isinstance(result, Final)
            finals.append(result)
        return finals

    async def choice_probs(self, messages: Sequence[ChatMessage], labels: Sequence[str]) -> list[float]:
        """Probability of each label as the first answer token, from vLLM's top logprobs (at most 20).

        Asks greedily (:func:`choice_sampling_kwargs`), so the entries are exactly the top ones. Sums the
        probabilities of the top tokens equal to each label once whitespace is stripped, and renormalises
        over the labels; a permanent :class:`BackendError` when no label is among them.
        """
        if not labels:
            raise BackendError("choice_probs needs at least one label", permanent=True)
        job = _Job(
            asyncio.get_running_loop(),
            conversation(messages),
            choice_sampling_kwargs(self.options.max_logprobs),
            labels=tuple(labels),
        )
        self._submit([job])
        try:
            result = await job.future
        finally:
            job.future.cancel()
        assert isinstance(result, list)
        return result

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` with the model's own tokenizer (transformers, loaded once); else an estimate.

        A separate tokenizer instance, under a lock: Hugging Face fast tokenizers must not be shared
        between threads, and the engine's own is busy in the engine thread.
        """
        with self._count_lock:
            if self._tokenizer is None and not self._tokenizer_failed:
                try:
                    from transformers import AutoTokenizer  # noqa: PLC0415 - heavy, and only in workers

                    self._tokenizer = AutoTokenizer.from_pretrained(resolve_model(self.spec.model))
                except Exception as exc:  # noqa: BLE001 - counting is a budget, an estimate will do
                    log.warning("vllm backend: no tokenizer for %s (%s); estimating token counts", self.spec.model, exc)
                    self._tokenizer_failed = True
            if self._tokenizer is not None:
                return len(self._tokenizer.encode(text, add_special_tokens=False))  # type: ignore[attr-defined]
        return max(1, math.ceil(len(text) / 4))

    async def wait_ready(self) -> None:
        """Start the engine and wait until the model is loaded; raise its load error if it failed.

        Loading a large model takes minutes, longer than a request timeout: call this before the
        first request (a worker at start, a benchmark before timing).
        """
        engine = self._running()
        # Short waits: a caller that gives up (a timeout) leaves no thread blocked for the whole load.
        while not engine.wait_ready(0):
            await asyncio.to_thread(engine.wait_ready, 0.5)
        if engine.load_error is not None:
            raise BackendError(engine.load_error.message, permanent=True)

    @property
    def batch_sizes(self) -> list[int]:
        """Sizes of the ``LLM.chat`` calls made so far (empty before the engine starts)."""
        engine = self._engine
        return list(engine.batches) if engine is not None else []

    async def aclose(self) -> None:
        """Stop the engine thread (after the requests already waiting) and release the engine."""
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.stop()
            await asyncio.to_thread(engine.join)


__all__ = [
    "INSTALL_HINT",
    "MULTIPROC_ENV",
    "VLLM_LIMITS",
    "VLLMBackend",
    "VLLMErrorKinds",
    "VLLMOptions",
    "choice_sampling_kwargs",
    "choose_multiproc_method",
    "conversation",
    "engine_kwargs",
    "final_from_output",
    "fork_hazard",
    "label_probs",
    "resolve_model",
    "vllm_sampling_kwargs",
]
