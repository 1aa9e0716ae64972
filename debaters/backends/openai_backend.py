"""A backend for servers that speak the OpenAI chat completions API (vLLM, ``transformers serve``, OpenAI, ...).

Spec options (``BackendSpec.options``):

``base_urls`` (list of str, required)
    The API roots, including the version segment, e.g. ``["http://gpu1:8000/v1", "http://gpu2:8000/v1"]``;
    requests go to ``<base_url>/chat/completions``. A single string is accepted too. With several URLs each
    request goes to the one with the fewest requests outstanding from this process (round robin among
    ties), and a URL that refuses connections (or does not accept one in ``timeout_s``) is skipped for
    ``cooldown_s`` seconds: the request moves on to the next URL at once, since nothing was sent yet.
``api_key_env`` (str, optional)
    The name of an environment variable holding the API key, read on every request (the key itself is
    never stored in a profile or on this object).
``timeout_s`` (number, default 60)
    Connect timeout and idle timeout: a server that sends nothing for this long fails the request with
    a transient :class:`BackendError`.
``cooldown_s`` (number, default 30)
    How long a URL that refused a connection is skipped.
``extra_body`` (dict, optional)
    Merged into every request body, e.g. ``{"structured_outputs": {"choice": ["A", "B"]}}`` or
    ``{"chat_template_kwargs": {...}}`` for vLLM. ``messages`` and ``stream`` cannot be overridden.
``max_logprobs`` (int, default 20)
    Upper bound for ``top_logprobs`` in :meth:`OpenAIBackend.choice_probs`; lower it to the server's cap.
``max_model_len`` (int, optional)
    The server's context length (``vllm serve --max-model-len``; compose sets 8192). vLLM answers 400
    to a ``max_tokens`` above it, so a profile asking for more is refused when it is saved
    (:mod:`debaters.backends.limits`). A ``max_tokens`` above what is left after the prompt is fine:
    the server clamps it.

Server quirks worth knowing:

* vLLM 0.33 silently ignores the old ``guided_json`` / ``guided_choice`` / ``guided_regex`` fields; use
  ``structured_outputs`` in ``extra_body`` instead.
* vLLM rejects ``top_logprobs`` above its ``--max-logprobs`` (default 20); OpenAI caps it at 20 as well.
* vLLM 0.33 answers 400 to a temperature above 2 ("temperature must be in [0, 2]"), to an empty stop
  string ("stop cannot contain an empty string") and to ``max_tokens`` above ``--max-model-len``;
  OpenAI's API refuses temperatures above 2 too. Requests drop empty stop strings, and anything else
  outside :meth:`OpenAIOptions.limits` is a permanent :class:`BackendError` before it is sent.
* vLLM lists the *sampled* token first in ``top_logprobs`` and then the top entries, so at a
  temperature above 0 a token sampled from outside the top k pushes the k-th out, differently on
  every call. :meth:`OpenAIBackend.choice_probs` therefore asks at temperature 0, where the sampled
  token is the top one (the logprobs are the model's own either way: vLLM reports them before
  temperature by default).
* ``transformers serve`` ignores ``logprobs``/``top_logprobs`` (so :meth:`choice_probs` cannot work there:
  use the transformers backend for AI judging), ignores ``stream_options`` but still reports usage in
  its last chunk, and never sends ``data: [DONE]``. A stream is therefore complete once a choice carried
  a ``finish_reason``; a stream that ends before that is a transient failure.

Errors: refused or reset connections, timeouts, HTTP 408/429/5xx, error events inside a stream and
streams that end without a ``finish_reason`` raise a transient :class:`BackendError`; other HTTP 4xx
(400/401/403/404/422, ...) raise a permanent one carrying the server's message. Retrying is the
business of :class:`debaters.backends.resilient.ResilientModel`.

Cancellation: cancelling the task that iterates :meth:`OpenAIBackend.generate` closes the HTTP response
at once, so the server sees the disconnect and can stop generating. A consumer that stops iterating
early without being cancelled should close the generator (``contextlib.aclosing``) for the same effect.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass

import httpx

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
    continues_reply,
)

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_COOLDOWN_S = 30.0
MAX_TOP_LOGPROBS = 20
# vLLM 0.33's server and OpenAI's API: "temperature must be in [0, 2]".
MAX_SERVER_TEMPERATURE = 2.0

# Statuses worth trying again: the server is overloaded, restarting or timed out, not refusing the request.
_TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})
_RESERVED_BODY_KEYS = frozenset({"messages", "stream"})
_NO_LOGPROBS = (
    "this server returned no logprobs for the answer labels (transformers serve, for one, ignores "
    "`logprobs`); judge with the transformers backend, which scores the labels itself"
)


@dataclass(frozen=True)
class OpenAIOptions:
    """The validated ``BackendSpec.options`` of an :class:`OpenAIBackend` (see the module docstring)."""

    base_urls: tuple[str, ...]
    api_key_env: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    cooldown_s: float = DEFAULT_COOLDOWN_S
    extra_body: Mapping[str, object] | None = None
    max_logprobs: int = MAX_TOP_LOGPROBS
    max_model_len: int | None = None

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> OpenAIOptions:
        """Validate the options; a bad value is a permanent :class:`BackendError` (a profile to fix)."""
        opts = spec.options
        raw_urls = opts.get("base_urls")
        if isinstance(raw_urls, str):
            raw_urls = [raw_urls]
        if (
            not isinstance(raw_urls, (list, tuple))
            or not raw_urls
            or not all(isinstance(u, str) and u for u in raw_urls)
        ):
            raise BackendError("openai backend: `base_urls` must be a non-empty list of URLs", permanent=True)
        urls: list[str] = []
        for url in raw_urls:
            if not url.startswith(("http://", "https://")):
                raise BackendError(
                    f"openai backend: base URL {url!r} must start with http:// or https://", permanent=True
                )
            urls.append(url.rstrip("/"))

        api_key_env = opts.get("api_key_env")
        if api_key_env is not None and (not isinstance(api_key_env, str) or not api_key_env):
            raise BackendError("openai backend: `api_key_env` must name an environment variable", permanent=True)

        extra_body = opts.get("extra_body")
        if extra_body is not None:
            if not isinstance(extra_body, Mapping):
                raise BackendError("openai backend: `extra_body` must be a JSON object", permanent=True)
            reserved = _RESERVED_BODY_KEYS.intersection(extra_body)
            if reserved:
                raise BackendError(
                    f"openai backend: `extra_body` may not set {', '.join(sorted(reserved))}", permanent=True
                )
            extra_body = dict(extra_body)

        max_logprobs = opts.get("max_logprobs", MAX_TOP_LOGPROBS)
        if not isinstance(max_logprobs, int) or isinstance(max_logprobs, bool) or max_logprobs < 1:
            raise BackendError("openai backend: `max_logprobs` must be a positive integer", permanent=True)

        max_model_len = opts.get("max_model_len")
        if max_model_len is not None and (
            not isinstance(max_model_len, int) or isinstance(max_model_len, bool) or max_model_len < 2
        ):
            raise BackendError(
                "openai backend: `max_model_len` must be the server's context length in tokens (an integer >= 2)",
                permanent=True,
            )

        return cls(
            base_urls=tuple(urls),
            api_key_env=api_key_env,
            timeout_s=_positive_float(opts, "timeout_s", DEFAULT_TIMEOUT_S),
            cooldown_s=_positive_float(opts, "cooldown_s", DEFAULT_COOLDOWN_S, allow_zero=True),
            extra_body=extra_body,
            max_logprobs=max_logprobs,
            max_model_len=max_model_len,
        )

    def limits(self) -> BackendLimits:
        """What the server accepts (see :mod:`debaters.backends.limits`)."""
        context = self.max_model_len
        context_source = "the server's context length: option max_model_len, vllm serve --max-model-len"
        return BackendLimits(
            "openai",
            source="vLLM 0.33's server and OpenAI's API",
            max_temperature=MAX_SERVER_TEMPERATURE,
            max_tokens=BackendLimits.max_tokens if context is None else context,
            max_tokens_source="" if context is None else context_source,
            empty_stop=False,
            max_logprobs=min(MAX_TOP_LOGPROBS, self.max_logprobs),
        )


def _positive_float(opts: Mapping[str, object], name: str, default: float, *, allow_zero: bool = False) -> float:
    value = opts.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        raise BackendError(f"openai backend: `{name}` must be a positive number of seconds", permanent=True)
    return float(value)


@dataclass
class _Endpoint:
    url: str
    in_flight: int = 0
    down_until: float = 0.0


class _Balancer:
    """Least outstanding requests, round robin on ties, skipping URLs in their connection cool-down.

    Thread-safe, because one backend instance serves every event loop of the process.
    """

    def __init__(self, urls: Sequence[str], cooldown_s: float) -> None:
        self._endpoints = [_Endpoint(url) for url in urls]
        self._cooldown_s = cooldown_s
        self._next = 0
        self._lock = threading.Lock()

    def acquire(self, exclude: set[int]) -> int | None:
        """Pick an endpoint not in ``exclude`` and count a request on it; ``None`` when all are excluded."""
        with self._lock:
            now = time.monotonic()
            n = len(self._endpoints)
            order = [(self._next + k) % n for k in range(n) if (self._next + k) % n not in exclude]
            if not order:
                return None
            # When every URL is cooling down, try them anyway: the cool-down only orders the attempts, and
            # refusing without trying would turn a restarted server into an outage.
            up = [i for i in order if self._endpoints[i].down_until <= now] or order
            chosen = min(up, key=lambda i: self._endpoints[i].in_flight)  # first minimum: round robin on ties
            self._next = (chosen + 1) % n
            self._endpoints[chosen].in_flight += 1
            return chosen

    def release(self, index: int) -> None:
        with self._lock:
            self._endpoints[index].in_flight -= 1

    def mark_down(self, index: int) -> None:
        with self._lock:
            self._endpoints[index].down_until = time.monotonic() + self._cooldown_s

    def url(self, index: int) -> str:
        return self._endpoints[index].url

    def in_flight(self) -> dict[str, int]:
        with self._lock:
            return {e.url: e.in_flight for e in self._endpoints}


class OpenAIBackend(ModelAPI):
    """Streams chat completions from OpenAI-compatible servers over ``httpx`` (no SDK).

    ``spec.model`` is sent as the request's ``model``: for ``transformers serve`` pinned to a local folder
    it must be exactly the path the server was started with.
    """

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        self.options = OpenAIOptions.from_spec(spec)
        self.limits = self.options.limits()
        self._balancer = _Balancer(self.options.base_urls, self.options.cooldown_s)
        # httpx clients hold connections bound to the event loop that opened them, and a worker may run
        # several loops over the life of this (cached) instance: one client per loop.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._clients_lock = threading.Lock()

    # ----- public API -----

    async def generate(self, request: GenerateRequest) -> AsyncIterator[StreamItem]:
        """Stream deltas then one :class:`Final`; see the module docstring for errors and cancellation."""
        body = self._body(request.messages, request.params, stream=True)
        pieces: list[str] = []
        text_chunks = 0
        finish: str | None = None
        usage: tuple[int, int] | None = None
        async with self._post(body) as (response, url):
            try:
                # aclosing: a consumer that stops early must not leave the parser for the GC to finalise.
                async with aclosing(_sse_data(response.aiter_lines())) as events:
                    async for data in events:
                        if data == "[DONE]":
                            break
                        chunk = _parse_json(data, url)
                        _raise_for_error_event(chunk, url)
                        usage = _usage(chunk) or usage
                        text, reason = _first_choice(chunk)
                        if reason is not None:
                            finish = reason
                        if text:
                            pieces.append(text)
                            text_chunks += 1
                            yield Delta(text)
            except httpx.TransportError as exc:
                if finish is None:
                    raise _transport_error(exc, url, self.options.timeout_s) from exc
                # The answer is complete; a server that hangs or drops before its usage chunk or [DONE]
                # costs us only the usage numbers, which are estimated below.
        if finish is None:
            raise BackendError(f"the stream from {url} ended without a finish_reason (server died mid-stream?)")
        if usage is None:
            # vLLM, TGI and transformers serve send one token per chunk, so chunks are a fair count.
            usage = (self._estimate_prompt_tokens(request.messages), text_chunks)
        yield Final(
            text="".join(pieces),
            prompt_tokens=usage[0],
            completion_tokens=usage[1],
            finish_reason=_finish_reason(finish, url),
        )

    async def choice_probs(self, messages: Sequence[ChatMessage], labels: Sequence[str]) -> list[float]:
        """Probability of each label as the first answer token, from the server's ``top_logprobs``.

        Sends one greedy non-streaming request (``max_tokens=1``, ``temperature=0``, ``logprobs=true``,
        ``top_logprobs`` = at most 20 and at most ``max_logprobs``), sums the probabilities of the top tokens equal to each label once
        whitespace is stripped, and renormalises over the labels. Raises a permanent :class:`BackendError`
        when the server returns no logprobs or none of the labels is among the top tokens.
        """
        if not labels:
            raise BackendError("choice_probs needs at least one label", permanent=True)
        # Greedy: vLLM lists the sampled token first, so above temperature 0 an off-top sample would push
        # the k-th entry out (see the module docstring). top_p 1: nothing is cut from what is reported.
        params = SamplingParams(max_tokens=1, temperature=0.0, top_p=1.0)
        body = self._body(tuple(messages), params, stream=False)
        body["logprobs"] = True
        body["top_logprobs"] = self.limits.max_logprobs
        async with self._post(body) as (response, url):
            try:
                raw = await response.aread()
            except httpx.TransportError as exc:
                raise _transport_error(exc, url, self.options.timeout_s) from exc
        top = _first_token_top_logprobs(_parse_json(raw.decode("utf-8", "replace"), url))
        if not top:
            raise BackendError(f"{url}: {_NO_LOGPROBS}", permanent=True)
        wanted = [label.strip() for label in labels]
        mass = [0.0] * len(labels)
        for token, logprob in top:
            stripped = token.strip()
            for i, label in enumerate(wanted):
                if stripped == label:
                    mass[i] += math.exp(logprob)
        total = sum(mass)
        if total <= 0.0:
            seen = ", ".join(repr(t) for t, _ in top[:10])
            raise BackendError(
                f"{url}: none of the labels {list(labels)!r} is among the top {len(top)} first tokens ({seen}); "
                f"{_NO_LOGPROBS}",
                permanent=True,
            )
        return [m / total for m in mass]

    def count_tokens(self, text: str) -> int:
        """An estimate without a tokenizer: about four characters per token for English BPE vocabularies."""
        return max(1, math.ceil(len(text) / 4))

    async def aclose(self) -> None:
        """Close this loop's HTTP client and forget clients of other loops (they cannot be awaited here)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._clients_lock:
            client = self._clients.pop(loop) if loop is not None and loop in self._clients else None
            self._clients.clear()
        if client is not None:
            await client.aclose()

    def in_flight(self) -> dict[str, int]:
        """Requests outstanding per base URL, from this process (for monitoring)."""
        return self._balancer.in_flight()

    # ----- helpers -----

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            client = self._clients.get(loop)
            if client is None or client.is_closed:
                t = self.options.timeout_s
                client = httpx.AsyncClient(
                    timeout=httpx.Timeout(t, connect=t, read=t, write=t, pool=t),
                    # Concurrency is ResilientModel's to limit; a pool cap here would only add PoolTimeouts.
                    limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
                )
                self._clients[loop] = client
            return client

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream, application/json"}
        name = self.options.api_key_env
        if name:
            key = os.environ.get(name)
            if not key:
                raise BackendError(
                    f"openai backend: environment variable {name} (api_key_env) is not set", permanent=True
                )
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _body(self, messages: Sequence[ChatMessage], params: SamplingParams, *, stream: bool) -> dict[str, object]:
        """The request body; sampling outside :attr:`limits` is a permanent :class:`BackendError`, unsent."""
        params = params.replace(stop=tuple(s for s in params.stop if s))  # the server refuses empty ones
        try:
            params.validate()
            self.limits.check(params)
        except LimitError as exc:
            raise BackendError(f"openai backend: {exc.message}", permanent=True) from exc
        except ValueError as exc:
            raise BackendError(f"openai backend: {exc}", permanent=True) from exc
        body: dict[str, object] = {
            "model": self.spec.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        if continues_reply(messages):
            # Assistant-message prefill (base.GenerateRequest), as vLLM's chat completions take it. A
            # server without these parameters refuses them (400, permanent) or replies afresh.
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if self.options.extra_body:
            body.update(self.options.extra_body)
        return body

    def _estimate_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        # A few tokens per message for the chat template's role markers.
        return sum(self.count_tokens(m["content"]) + 4 for m in messages)

    @asynccontextmanager
    async def _post(self, body: Mapping[str, object]) -> AsyncIterator[tuple[httpx.Response, str]]:
        """POST to a balanced endpoint and yield the open, successful response and its base URL.

        Connection failures move on to the next endpoint (nothing reached a server); HTTP errors raise.
        The response is closed on exit, however the block ends, which is what makes cancellation prompt.
        """
        client = self._client()
        headers = self._headers()
        tried: set[int] = set()
        last_error: httpx.TransportError | None = None
        while True:
            index = self._balancer.acquire(tried)
            if index is None:
                urls = ", ".join(self.options.base_urls)
                raise BackendError(f"cannot connect to {urls}: {last_error!r}") from last_error
            tried.add(index)
            url = self._balancer.url(index)
            try:
                try:
                    request = client.build_request("POST", f"{url}/chat/completions", json=body, headers=headers)
                    response = await client.send(request, stream=True)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    self._balancer.mark_down(index)
                    last_error = exc
                    continue
                except httpx.TransportError as exc:
                    raise _transport_error(exc, url, self.options.timeout_s) from exc
                try:
                    if not response.is_success:
                        try:
                            await response.aread()
                        except httpx.TransportError as exc:
                            raise BackendError(f"HTTP {response.status_code} from {url}, body lost: {exc!r}") from exc
                        raise _status_error(response, url)
                    yield response, url
                finally:
                    await response.aclose()
            finally:
                self._balancer.release(index)
            return


# ----- protocol helpers (pure functions) -----


async def _sse_data(lines: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """The ``data`` of each server-sent event; multi-line data is joined with newlines, comments dropped."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue  # keep-alive comment
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def _parse_json(text: str, url: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # A truncated or garbled body: most likely a proxy or a dying server, so worth a retry.
        raise BackendError(f"malformed JSON from {url}: {text[:200]!r}") from exc


def _get(obj: object, key: str) -> object:
    return obj.get(key) if isinstance(obj, dict) else None


def _first_choice(chunk: object) -> tuple[str, str | None]:
    """Text and finish_reason of choice 0 in a stream chunk (usage-only chunks have no choices)."""
    choices = _get(chunk, "choices")
    if not isinstance(choices, list):
        return "", None
    for choice in choices:
        if _get(choice, "index") in (0, None):
            content = _get(_get(choice, "delta"), "content")
            reason = _get(choice, "finish_reason")
            return (content if isinstance(content, str) else ""), (reason if isinstance(reason, str) else None)
    return "", None


def _usage(chunk: object) -> tuple[int, int] | None:
    usage = _get(chunk, "usage")
    prompt, completion = _get(usage, "prompt_tokens"), _get(usage, "completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return prompt, completion
    return None


def _finish_reason(reason: str, url: str) -> str:
    if reason == "length":
        return "length"
    if reason in ("abort", "error"):
        # vLLM reports requests it aborted (e.g. on shutdown) this way: nothing wrong with the request.
        raise BackendError(f"{url} aborted the generation (finish_reason={reason!r})")
    # "stop", "eos", "tool_calls", "content_filter", ...: the model is done.
    return "stop"


def _error_text(payload: object) -> str | None:
    """The human message in an error body: OpenAI/vLLM ``{"error": {"message"}}``, FastAPI ``{"detail"}``, ..."""
    error = _get(payload, "error")
    if isinstance(error, str):
        return error
    for candidate in (_get(error, "message"), _get(payload, "detail"), _get(payload, "message")):
        if isinstance(candidate, str):
            return candidate
        if candidate is not None:
            return json.dumps(candidate)[:1000]
    return None


def _error_code(payload: object) -> int | None:
    for code in (_get(_get(payload, "error"), "code"), _get(payload, "code")):
        if isinstance(code, int):
            return code
        if isinstance(code, str) and code.isdigit():
            return int(code)
    return None


def _raise_for_error_event(chunk: object, url: str) -> None:
    """vLLM and transformers serve report failures after the 200 header as an ``error`` event."""
    if _get(chunk, "error") is None:
        return
    message = _error_text(chunk) or json.dumps(chunk)[:500]
    code = _error_code(chunk)
    permanent = code is not None and 400 <= code < 500 and code not in _TRANSIENT_STATUSES
    raise BackendError(f"{url} reported an error mid-stream: {message}", permanent=permanent)


def _status_error(response: httpx.Response, url: str) -> BackendError:
    status = response.status_code
    text = response.text
    try:
        message = _error_text(json.loads(text)) or text
    except json.JSONDecodeError:
        message = text
    message = message.strip()[:1000] or response.reason_phrase
    transient = status >= 500 or status in _TRANSIENT_STATUSES
    return BackendError(f"HTTP {status} from {url}: {message}", permanent=not transient)


def _transport_error(exc: httpx.TransportError, url: str, timeout_s: float) -> BackendError:
    if isinstance(exc, httpx.TimeoutException):
        return BackendError(f"{url} sent nothing for {timeout_s:g}s ({type(exc).__name__})")
    return BackendError(f"connection to {url} failed: {exc!r}")


def _first_token_top_logprobs(payload: object) -> list[tuple[str, float]]:
    """``choices[0].logprobs.content[0].top_logprobs`` as (token, logprob) pairs; empty when absent."""
    choices = _get(payload, "choices")
    if not isinstance(choices, list) or not choices:
        return []
    content = _get(_get(choices[0], "logprobs"), "content")
    if not isinstance(content, list) or not content:
        return []
    top = _get(content[0], "top_logprobs")
    if not isinstance(top, list):
        return []
    pairs: list[tuple[str, float]] = []
    for entry in top:
        token, logprob = _get(entry, "token"), _get(entry, "logprob")
        if isinstance(token, str) and isinstance(logprob, (int, float)) and not isinstance(logprob, bool):
            pairs.append((token, float(logprob)))
    return pairs


__all__ = ["DEFAULT_COOLDOWN_S", "DEFAULT_TIMEOUT_S", "MAX_TOP_LOGPROBS", "OpenAIBackend", "OpenAIOptions"]
