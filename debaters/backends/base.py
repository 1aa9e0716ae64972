"""The one interface every model backend implements.

A backend turns chat requests into text. ``generate`` streams one request as text deltas followed by
exactly one :class:`Final`; ``generate_batch`` runs many requests and returns their finals in order;
``choice_probs`` returns the model's probability of each option label as the next token. Retries,
timeouts and concurrency limits are not the backend's business: :mod:`debaters.backends.resilient`
wraps every backend with them.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

from debaters.backends.constraint import TextConstraint


class ChatMessage(TypedDict):
    role: str
    content: str


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> SamplingParams:
        """Build from a profile's JSON; unknown keys are an error so typos do not pass silently."""
        known = {"max_tokens", "temperature", "top_p", "seed", "stop"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown sampling parameters: {', '.join(sorted(unknown))}")
        kwargs: dict[str, object] = dict(data)
        if "stop" in kwargs:
            stop = kwargs["stop"]
            if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
                raise ValueError("stop must be a list of strings")
            kwargs["stop"] = tuple(stop)
        params = cls(**kwargs)  # type: ignore[arg-type]
        params.validate()
        return params

    def validate(self) -> None:
        """The ranges every backend shares; a value outside is a :class:`LimitError` naming it."""
        if not 1 <= self.max_tokens <= 32768:
            raise LimitError("max_tokens", (1, 32768), "max_tokens must be between 1 and 32768")
        if not 0.0 <= self.temperature <= 5.0:
            raise LimitError("temperature", (0.0, 5.0), "temperature must be between 0 and 5")
        if not 0.0 < self.top_p <= 1.0:
            raise LimitError("top_p", (0.0, 1.0), "top_p must be in (0, 1]")

    def replace(self, **changes: object) -> SamplingParams:
        from dataclasses import replace

        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class GenerateRequest:
    """One chat request.

    When the last message is the assistant's, the backend *continues* it (assistant-message
    prefill): the model's reply starts with that text, and the deltas and ``Final.text`` hold only
    what the model added after it. Otherwise the reply is a new assistant message.
    """

    messages: tuple[ChatMessage, ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    # Constrained decoding (copy from a text, avoid others' n-grams), honoured by the backends whose
    # ``honours_constraints`` is true and ignored by the rest; see debaters.backends.constraint.
    constraint: TextConstraint | None = None


def continues_reply(messages: Sequence[ChatMessage]) -> bool:
    """Whether ``messages`` ask the model to continue their last (assistant) message; see :class:`GenerateRequest`."""
    return bool(messages) and messages[-1]["role"] == "assistant"


@dataclass(frozen=True)
class Delta:
    """A piece of generated text, in order. Concatenating every delta gives ``Final.text``."""

    text: str


@dataclass(frozen=True)
class Final:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of sequence or a stop string) or "length"


StreamItem = Delta | Final


class BackendError(Exception):
    """A backend failed. ``permanent`` errors (bad request, unknown model) are not retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


class LimitError(ValueError):
    """Sampling parameters that a backend, or the server behind it, would refuse.

    ``parameter`` names the field (``temperature``, ``max_tokens``, ``stop``) and ``limit`` the bound it
    broke; the message says both and where the bound comes from, for the person editing the profile.
    """

    def __init__(self, parameter: str, limit: object, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.limit = limit
        self.message = message


@dataclass(frozen=True)
class BackendLimits:
    """What one backend and the engine or server behind it accept; built by :mod:`debaters.backends.limits`.

    ``max_tokens`` bounds a request's ``max_tokens`` (a server's context length, say); ``empty_stop`` is
    whether an empty stop string is accepted (vLLM refuses one); ``max_logprobs`` is the most top
    logprobs the server returns. ``source`` names whose limits these are and ``max_tokens_source`` where
    ``max_tokens`` comes from, for error messages (each message names only its own parameter, so a
    form can put it on that field).
    """

    backend: str
    source: str = "this project"
    max_temperature: float = 5.0
    max_tokens: int = 32768
    max_tokens_source: str = ""
    empty_stop: bool = True
    max_logprobs: int | None = None

    def check(self, params: SamplingParams) -> None:
        """Raise :class:`LimitError` for the first parameter of ``params`` outside these limits."""
        accepts = f"the most the {self.backend} backend accepts"
        if params.temperature > self.max_temperature:
            raise LimitError(
                "temperature",
                self.max_temperature,
                f"temperature {params.temperature:g} is above {self.max_temperature:g}, {accepts} "
                f"(a limit of {self.source})",
            )
        if params.max_tokens > self.max_tokens:
            raise LimitError(
                "max_tokens",
                self.max_tokens,
                f"max_tokens {params.max_tokens} is above {self.max_tokens}, {accepts} "
                f"({self.max_tokens_source or f'a limit of {self.source}'})",
            )
        if not self.empty_stop and any(not s for s in params.stop):
            raise LimitError(
                "stop",
                "no empty string",
                f"stop contains an empty string, which the {self.backend} backend refuses (a limit of {self.source})",
            )


@dataclass(frozen=True)
class BackendSpec:
    """Where a model lives. Stored on a debater or judge profile as JSON.

    ``backend`` names a registered backend; ``model`` is what that backend loads or asks for
    (``embedded`` means the bundled SmolLM2); ``options`` are backend-specific (``device``,
    ``base_urls``, ``api_key_env``, ...).
    """

    backend: str
    model: str
    options: Mapping[str, object] = field(default_factory=dict)

    def key(self) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        return (self.backend, self.model, tuple(sorted((k, repr(v)) for k, v in self.options.items())))


class ModelAPI(ABC):
    """A model provider. Subclasses implement ``generate``; the rest have sound defaults."""

    # Whether a request's ``constraint`` is applied while decoding (else it is ignored).
    honours_constraints: bool = False

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec

    @abstractmethod
    def generate(self, request: GenerateRequest) -> AsyncIterator[StreamItem]:
        """Stream one request: any number of :class:`Delta`, then exactly one :class:`Final`."""

    async def complete(self, request: GenerateRequest) -> Final:
        final: Final | None = None
        async for item in self.generate(request):
            if isinstance(item, Final):
                final = item
        if final is None:
            raise BackendError("backend ended a stream without a final result")
        return final

    async def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[Final]:
        """Run many requests; the default sends them concurrently and lets the backend batch."""
        return list(await asyncio.gather(*(self.complete(r) for r in requests)))

    async def choice_probs(self, messages: Sequence[ChatMessage], labels: Sequence[str]) -> list[float]:
        """The model's next-token probability of each label, renormalised to sum to 1."""
        raise BackendError(f"backend {self.spec.backend!r} cannot score choices", permanent=True)

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` for this model; backends without a tokenizer estimate."""
        return max(1, round(len(text.split()) * 1.3))

    async def wait_ready(self) -> None:
        """Return once the backend can serve; raise :class:`BackendError` if it never will.

        Backends that load a model in the background (transformers, vllm) wait for the load here;
        the default has nothing to wait for.
        """

    async def aclose(self) -> None:
        """Release connections or memory. Safe to call twice."""
