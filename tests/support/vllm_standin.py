"""A stand-in for vLLM 0.33.0, for tests on machines without vLLM or a GPU.

Written from reading the released vLLM 0.33.0 wheel's source (``pip download --no-deps vllm==0.33.0``,
unpacked, never installed), so that a call, field or error the real engine or server would refuse is
refused here too, with the same class and message:

* ``vllm.exceptions``: ``VLLMError`` -> ``VLLMClientError`` -> ``VLLMValidationError`` (with
  ``parameter``/``value``, shown as `` (parameter=..., value=...)`` after the message), and
  ``VLLMServerError``, ``GracefulHTTPError``; ``vllm.v1.engine.exceptions.EngineDeadError``.
  ``VLLMValidationError`` is *not* a ``ValueError``.
* ``SamplingParams`` takes only 0.33's field names (a ``msgspec.Struct``: an unknown keyword is a
  ``TypeError``) and validates like its ``_verify_args``: temperature in [0, 2], top_p in (0, 1],
  max_tokens >= 1, no empty stop string, ...; a temperature below 1e-5 is greedy.
* ``LLM(model=..., max_model_len=..., max_logprobs=20, ...)``; ``LLM.chat(messages, sampling_params,
  use_tqdm, ...)`` with 0.33's signature. Every request of a call is checked before anything is
  generated, and one bad request fails the whole call: a prompt longer than ``max_model_len`` (the
  renderer's message), a prompt exactly ``max_model_len`` long (the input processor's), ``logprobs``
  above ``max_logprobs``, a list of params of the wrong length.
* Outputs are ``RequestOutput`` / ``CompletionOutput`` / ``Logprob`` with 0.33's fields. A position's
  logprobs list the *sampled* token first and then the top ``logprobs`` tokens by rank, as vLLM does.
* :func:`server_error` answers a chat-completions body as ``vllm serve`` 0.33 would refuse it (HTTP
  400 and its ``{"error": {...}}`` body), for scripted OpenAI-style servers.

The "model" is a toy: a chat renders as ``<|role|>content`` per message plus ``<|assistant|>``, one
token per character; the completion is the last user message reversed, one token per character,
then an end-of-sequence token. The first generated token's distribution is :data:`FIRST_TOKENS`
(used when logprobs are asked for: the completion is then that one sampled token).
"""

from __future__ import annotations

import math
import os
import random
import sys
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus

import pytest

VERSION = "0.33.0"
EOS_TOKEN_ID = 0
SAMPLING_EPS = 1e-5  # below this temperature vLLM samples greedily


# ----- vllm.exceptions, vllm.v1.engine.exceptions -----


class VLLMError(Exception):
    """vllm.exceptions.VLLMError."""


class VLLMClientError(VLLMError):
    """Caused by the request (the server answers 4xx)."""


class VLLMServerError(VLLMError):
    """Caused by the server (5xx)."""


class VLLMValidationError(VLLMClientError):
    def __init__(self, message: str, *, parameter: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.value = value

    def __str__(self) -> str:
        extras = []
        if self.parameter is not None:
            extras.append(f"parameter={self.parameter}")
        if self.value is not None:
            extras.append(f"value={self.value}")
        base = super().__str__()
        return f"{base} ({', '.join(extras)})" if extras else base


class GracefulHTTPError(VLLMError):
    def __init__(self, message: str, http_status: HTTPStatus) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status


class QueueOverflowError(GracefulHTTPError):
    def __init__(self) -> None:
        super().__init__(
            "The engine is currently busy and cannot accept new requests. Please try again later or on a different instance.",
            HTTPStatus.SERVICE_UNAVAILABLE,
        )


class EngineDeadError(VLLMServerError):
    def __init__(self) -> None:
        super().__init__("EngineCore encountered an issue. See stack trace (above) for the root cause.")


# ----- vllm.logprobs, vllm.outputs -----


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: Sequence[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    routed_experts: object = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    lora_request: object = None

    def finished(self) -> bool:
        return self.finish_reason is not None


class RequestOutput:
    def __init__(
        self,
        request_id: str,
        prompt: str | None,
        prompt_token_ids: list[int] | None,
        prompt_logprobs: object,
        outputs: list[CompletionOutput],
        finished: bool,
        metrics: object = None,
        lora_request: object = None,
        encoder_prompt: str | None = None,
        encoder_prompt_token_ids: list[int] | None = None,
        num_cached_tokens: int | None = None,
        **kwargs: object,
    ) -> None:
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.prompt_logprobs = prompt_logprobs
        self.outputs = outputs
        self.finished = finished
        self.metrics = metrics
        self.lora_request = lora_request
        self.encoder_prompt = encoder_prompt
        self.encoder_prompt_token_ids = encoder_prompt_token_ids
        self.num_cached_tokens = num_cached_tokens


# ----- vllm.SamplingParams -----

class SamplingParams:
    """vllm.SamplingParams: 0.33's field names, defaults and validation messages.

    Only the fields a caller here could want are listed (all of them 0.33's); a keyword vLLM does not
    have is a ``TypeError``, as ``msgspec.Struct`` raises it.
    """

    def __init__(
        self,
        *,
        n: int = 1,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repetition_penalty: float = 1.0,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float = 0.0,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        stop_token_ids: list[int] | None = None,
        bad_words: list[str] | None = None,
        ignore_eos: bool = False,
        max_tokens: int | None = 16,
        min_tokens: int = 0,
        logprobs: int | None = None,
        prompt_logprobs: int | None = None,
        logprob_token_ids: list[int] | None = None,
        detokenize: bool = True,
        skip_special_tokens: bool = True,
        spaces_between_special_tokens: bool = True,
        include_stop_str_in_output: bool = False,
    ) -> None:
        self.n = n
        self.presence_penalty = presence_penalty
        self.frequency_penalty = frequency_penalty
        self.repetition_penalty = repetition_penalty
        self.temperature = max(temperature, 1e-2) if 0 < temperature < 1e-2 else temperature
        self.top_p = top_p
        self.top_k = top_k
        self.min_p = min_p
        self.seed = None if seed == -1 else seed
        self.stop = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
        self.stop_token_ids = list(stop_token_ids or [])
        self.bad_words = list(bad_words or [])
        self.ignore_eos = ignore_eos
        self.max_tokens = max_tokens
        self.min_tokens = min_tokens
        self.logprobs = logprobs
        self.prompt_logprobs = prompt_logprobs
        self.logprob_token_ids = logprob_token_ids
        self.detokenize = detokenize
        self.skip_special_tokens = skip_special_tokens
        self.spaces_between_special_tokens = spaces_between_special_tokens
        self.include_stop_str_in_output = include_stop_str_in_output
        self._verify_args()
        if self.temperature < SAMPLING_EPS:  # greedy
            self.top_p, self.top_k, self.min_p = 1.0, 0, 0.0
            if self.n > 1:
                raise VLLMValidationError(f"n must be 1 when using greedy sampling, got {self.n}.")

    def _verify_args(self) -> None:
        if self.n < 1:
            raise VLLMValidationError(f"n must be at least 1, got {self.n}.")
        if not -2.0 <= self.presence_penalty <= 2.0:
            raise VLLMValidationError(f"presence_penalty must be in [-2, 2], got {self.presence_penalty}.")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            raise VLLMValidationError(f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}.")
        if self.repetition_penalty <= 0.0:
            raise VLLMValidationError(f"repetition_penalty must be greater than zero, got {self.repetition_penalty}.")
        t = self.temperature
        if not math.isfinite(t):
            raise VLLMValidationError(f"temperature must be a finite number, got {t}.", parameter="temperature", value=t)
        if t < 0.0:
            raise VLLMValidationError(f"temperature must be non-negative, got {t}.", parameter="temperature", value=t)
        if t > 2.0:
            raise VLLMValidationError(f"temperature must be in [0, 2], got {t}.", parameter="temperature", value=t)
        if not 0.0 < self.top_p <= 1.0:
            raise VLLMValidationError(f"top_p must be in (0, 1], got {self.top_p}.", parameter="top_p", value=self.top_p)
        if self.top_k < -1:
            raise VLLMValidationError(f"top_k must be 0 (disable), or at least 1, got {self.top_k}.")
        if not 0.0 <= self.min_p <= 1.0:
            raise VLLMValidationError(f"min_p must be in [0, 1], got {self.min_p}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise VLLMValidationError(
                f"max_tokens must be at least 1, got {self.max_tokens}.", parameter="max_tokens", value=self.max_tokens
            )
        if self.min_tokens < 0:
            raise VLLMValidationError(f"min_tokens must be greater than or equal to 0, got {self.min_tokens}.")
        if self.logprobs is not None and self.logprobs != -1 and self.logprobs < 0:
            raise VLLMValidationError(
                f"logprobs must be non-negative or -1, got {self.logprobs}.", parameter="logprobs", value=self.logprobs
            )
        if any(not s for s in self.stop):
            raise VLLMValidationError("stop cannot contain an empty string.")
        if any(not w for w in self.bad_words):
            raise VLLMValidationError(f"bad_words cannot contain an empty string. Got bad_words={self.bad_words}")
        if self.stop and not self.detokenize:
            raise VLLMValidationError(
                "stop strings are only supported when detokenize is True. Set detokenize=True to use stop."
            )


# ----- the toy model -----

# (token id, text, probability) of the first generated token, most likely first.
FIRST_TOKENS: tuple[tuple[int, str, float], ...] = (
    (11, "Well", 0.40),
    (12, " A", 0.30),
    (13, " B", 0.10),
    (14, "A", 0.05),
    (15, "The", 0.05),
    (16, " I", 0.04),
    (17, "B", 0.03),
    (18, "So", 0.03),
)


def render(conversation: Sequence[Mapping[str, str]]) -> str:
    """The toy chat template: ``<|role|>content`` per message, then the generation prompt."""
    return "".join(f"<|{m['role']}|>{m['content']}" for m in conversation) + "<|assistant|>"


def tokenize(text: str) -> list[int]:
    """One token per character (ids above the special ones)."""
    return [100 + ord(c) for c in text]


def _first_token_logprobs(params: SamplingParams) -> tuple[int, str, dict[int, Logprob]]:
    """The sampled first token and its logprobs entry: the sampled token first, then the top ``logprobs``."""
    if params.temperature < SAMPLING_EPS:
        sampled = FIRST_TOKENS[0]
    else:
        rng = random.Random(params.seed)
        sampled = rng.choices(FIRST_TOKENS, weights=[p for _, _, p in FIRST_TOKENS])[0]
    k = params.logprobs or 0
    ranked = {tid: Logprob(math.log(p), rank, text) for rank, (tid, text, p) in enumerate(FIRST_TOKENS, start=1)}
    entry = {sampled[0]: ranked[sampled[0]]}
    for tid, _, _ in FIRST_TOKENS[:k]:
        entry.setdefault(tid, ranked[tid])
    return sampled[0], sampled[1], entry


@dataclass
class LLM:
    """vllm.LLM: the engine arguments it was given, and every ``chat`` call (for assertions)."""

    model: str
    max_model_len: int = 8192
    max_logprobs: int = 20
    engine_args: dict[str, object] = field(default_factory=dict)
    calls: list[tuple[list[list[dict[str, str]]], list[SamplingParams]]] = field(default_factory=list)
    multiproc_method: str | None = None
    fail_next: list[BaseException] = field(default_factory=list)

    def chat(
        self,
        messages: Sequence[Mapping[str, str]] | Sequence[Sequence[Mapping[str, str]]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
        lora_request: object = None,
        priority: object = None,
        chat_template: str | None = None,
        chat_template_content_format: str = "auto",
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: object = None,
        chat_template_kwargs: dict[str, object] | None = None,
        tokenization_kwargs: dict[str, object] | None = None,
        mm_processor_kwargs: dict[str, object] | None = None,
    ) -> list[RequestOutput]:
        conversations = [list(c) for c in messages] if messages and not isinstance(messages[0], Mapping) else [list(messages)]
        if sampling_params is None:
            params: list[SamplingParams] = [SamplingParams() for _ in conversations]
        elif isinstance(sampling_params, SamplingParams):
            params = [sampling_params] * len(conversations)
        else:
            params = list(sampling_params)
            if len(params) != len(conversations):
                raise VLLMValidationError(
                    f"The lengths of prompts ({len(conversations)}) and params ({len(params)}) must be the same."
                )
        self.calls.append(([[dict(m) for m in c] for c in conversations], params))
        if self.fail_next:
            raise self.fail_next.pop(0)
        prompts = [tokenize(render(c)) for c in conversations]
        for prompt, p in zip(prompts, params):  # all requests are checked before any is generated
            self._validate(len(prompt), p)
        return [self._generate(str(i), c, prompt, p) for i, (c, prompt, p) in enumerate(zip(conversations, prompts, params))]

    def _validate(self, prompt_len: int, params: SamplingParams) -> None:
        if prompt_len > self.max_model_len:
            raise VLLMValidationError(
                f"This model's maximum context length is {self.max_model_len} tokens. However, your prompt contains "
                f"{prompt_len} input tokens, which exceeds this limit even without any output tokens. "
                "Please reduce the length of the input prompt.",
                parameter="input_tokens",
                value=prompt_len,
            )
        if prompt_len == self.max_model_len:
            raise VLLMValidationError(
                f"The decoder prompt (length {prompt_len}) plus the number of requested output tokens (at least 1) is "
                f"longer than the maximum model length of {self.max_model_len}. Make sure that `max_model_len` is no "
                "smaller than the number of text tokens (prompt + requested output tokens)."
            )
        if params.logprobs and params.logprobs > self.max_logprobs:
            raise VLLMValidationError(
                f"Requested sample logprobs of {params.logprobs}, which is greater than max allowed: {self.max_logprobs}",
                parameter="logprobs",
                value=params.logprobs,
            )

    def _generate(
        self, request_id: str, conversation: Sequence[Mapping[str, str]], prompt: list[int], params: SamplingParams
    ) -> RequestOutput:
        if params.logprobs is not None:
            token_id, text, entry = _first_token_logprobs(params)
            completion = CompletionOutput(0, text, [token_id], None, [entry], finish_reason="length")
            return RequestOutput(request_id, None, prompt, None, [completion], True)
        room = self.max_model_len - len(prompt)
        limit = room if params.max_tokens is None else min(room, params.max_tokens)
        answer = next((m["content"] for m in reversed(conversation) if m["role"] == "user"), "")[::-1]
        hits = [(answer.find(stop), stop) for stop in params.stop if stop in answer]
        if hits:
            at, stop = min(hits)
            generated = answer[: at + len(stop)]  # the model produced the stop string, then stopped
            text = generated if params.include_stop_str_in_output else answer[:at]
            reason, stop_reason, token_ids = "stop", stop, tokenize(generated)
        else:
            text, reason, stop_reason, token_ids = answer, "stop", None, [*tokenize(answer), EOS_TOKEN_ID]
        if len(token_ids) > limit:
            token_ids = token_ids[:limit]
            text, reason, stop_reason = answer[:limit], "length", None
        completion = CompletionOutput(0, text, token_ids, None, None, finish_reason=reason, stop_reason=stop_reason)
        return RequestOutput(request_id, None, prompt, None, [completion], True)


# ----- installing it as `vllm` -----


@dataclass
class StandIn:
    """The installed stand-in: every ``LLM`` built, and how the environment chose worker processes."""

    engines: list[LLM] = field(default_factory=list)
    fail_load: BaseException | None = None


def install(monkeypatch: pytest.MonkeyPatch) -> StandIn:
    """Put the stand-in into ``sys.modules`` as ``vllm`` (and its submodules) for one test."""
    state = StandIn()

    def make_llm(model: str, *, max_model_len: int | None = None, max_logprobs: int = 20, **engine_args: object) -> LLM:
        if state.fail_load is not None:
            raise state.fail_load
        llm = LLM(model, max_model_len or 8192, max_logprobs, dict(engine_args))
        llm.multiproc_method = os.environ.get("VLLM_WORKER_MULTIPROC_METHOD")
        state.engines.append(llm)
        return llm

    def module(name: str, **attrs: object) -> types.ModuleType:
        mod = types.ModuleType(name)
        for key, value in attrs.items():
            setattr(mod, key, value)
        monkeypatch.setitem(sys.modules, name, mod)
        return mod

    exceptions = module(
        "vllm.exceptions", VLLMError=VLLMError, VLLMClientError=VLLMClientError, VLLMServerError=VLLMServerError,
        VLLMValidationError=VLLMValidationError, GracefulHTTPError=GracefulHTTPError, QueueOverflowError=QueueOverflowError,
    )
    engine_exceptions = module("vllm.v1.engine.exceptions", EngineDeadError=EngineDeadError)
    engine = module("vllm.v1.engine", exceptions=engine_exceptions)
    v1 = module("vllm.v1", engine=engine)
    module(
        "vllm", __version__=VERSION, LLM=make_llm, SamplingParams=SamplingParams, RequestOutput=RequestOutput,
        CompletionOutput=CompletionOutput, exceptions=exceptions, v1=v1,
    )
    return state


# ----- vllm serve's answers to bad chat-completion requests -----


def server_error(body: Mapping[str, object], *, max_model_len: int = 8192, max_logprobs: int = 20) -> dict[str, object] | None:
    """The 400 body ``vllm serve`` 0.33 answers to this chat-completions request, or ``None`` if it takes it.

    Checked in the server's order: the request model's validators, the tokenizer parameters
    (``max_tokens`` against ``--max-model-len``), ``SamplingParams``, then the engine's logprobs cap.
    """
    top = _int_or_none(body.get("top_logprobs"))
    wants_logprobs = bool(body.get("logprobs"))
    param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    max_tokens = _int_or_none(body.get(param))
    temperature, top_p, stop = body.get("temperature"), body.get("top_p"), body.get("stop")
    try:
        if top is not None and (top == -1 or top > 0) and not wants_logprobs:
            raise VLLMValidationError("when using `top_logprobs`, `logprobs` must be set to true.", parameter="top_logprobs")
        if max_tokens is not None and max_tokens > max_model_len:
            raise VLLMValidationError(
                f"{param}={max_tokens} cannot be greater than max_model_len={max_model_len}. Please request fewer output tokens.",
                parameter=param,
                value=max_tokens,
            )
        SamplingParams(
            temperature=float(temperature) if isinstance(temperature, (int, float)) else 1.0,
            top_p=float(top_p) if isinstance(top_p, (int, float)) else 1.0,
            stop=[str(s) for s in stop] if isinstance(stop, list) else str(stop) if stop is not None else None,
            max_tokens=max_tokens,
            logprobs=top if wants_logprobs else None,
        )
        if wants_logprobs and top is not None and top > max_logprobs:
            raise VLLMValidationError(
                f"Requested sample logprobs of {top}, which is greater than max allowed: {max_logprobs}",
                parameter="logprobs",
                value=top,
            )
    except VLLMValidationError as exc:
        return {"error": {"message": str(exc), "type": "BadRequestError", "param": exc.parameter, "code": 400}}
    return None


def top_logprobs_entries(body: Mapping[str, object]) -> list[dict[str, object]]:
    """``top_logprobs`` of the first token as ``vllm serve`` lists them: the engine's entry (the sampled
    token first, then the top ones) cut to the first ``top_logprobs`` items, so a token sampled from
    outside the top k pushes the k-th out. Unseeded sampling differs from call to call, as on a server."""
    temperature, seed = body.get("temperature"), _int_or_none(body.get("seed"))
    k = _int_or_none(body.get("top_logprobs")) or 0
    params = SamplingParams(temperature=float(temperature) if isinstance(temperature, (int, float)) else 1.0, seed=seed, logprobs=k)
    _, _, entry = _first_token_logprobs(params)
    return [
        {"token": lp.decoded_token, "logprob": lp.logprob, "bytes": list((lp.decoded_token or "").encode())}
        for lp in list(entry.values())[:k]
    ]


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
