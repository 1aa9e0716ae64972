"""What each backend accepts, decided in one place: when a profile is saved, and before every request.

A profile whose sampling its backend (or the server behind it) cannot serve is refused when it is
saved, naming the parameter and the limit, instead of failing at the first request of a tournament.
The backends check every request against the same :class:`~debaters.backends.base.BackendLimits`, so
a request built by code (a judge's chain of thought, a debate's token limit) fails at once with a
permanent error instead of reaching the server.

| backend | temperature | max_tokens | stop strings | bound from |
|---|---|---|---|---|
| `transformers`, and backends added by `ARENA_BACKENDS` | 0–5 | ≤ 32,768 | any | this project's `SamplingParams` |
| `vllm` (offline engine) | 0–2 | ≤ 32,768 (the engine ends a completion at `max_model_len` with `finish_reason="length"`; it does not refuse more) | no empty string (requests drop them) | vLLM 0.33 `SamplingParams._verify_args` |
| `openai` | 0–2 | ≤ `options.max_model_len` when given (the server's `--max-model-len`) | no empty string (requests drop them) | vLLM 0.33's server (`TokenizeParams`, `SamplingParams`) and OpenAI's API |

Options are checked here too: a `vllm` or `openai` profile with a bad option is refused with the
backend's own message. Both backend modules import neither vllm nor torch, so this runs in the web
process; the `transformers` backend's module imports torch, so its options are checked when a
worker loads it (or by the profile's Test), and only the generic ranges apply here.
"""

from __future__ import annotations

from debaters.backends.base import BackendLimits, BackendSpec, SamplingParams
from debaters.backends.openai_backend import OpenAIOptions
from debaters.backends.vllm_backend import VLLMOptions


def limits_for(spec: BackendSpec) -> BackendLimits:
    """The limits of ``spec``'s backend with its options; a bad option is a permanent ``BackendError``."""
    if spec.backend == "vllm":
        return VLLMOptions.from_spec(spec).limits()
    if spec.backend == "openai":
        return OpenAIOptions.from_spec(spec).limits()
    return BackendLimits(spec.backend)


def check_profile(spec: BackendSpec, params: SamplingParams) -> None:
    """Refuse a profile its backend cannot serve.

    Raises a permanent :class:`~debaters.backends.base.BackendError` for a bad option and a
    :class:`~debaters.backends.base.LimitError` (a ``ValueError`` with ``parameter`` and ``limit``) for
    sampling outside the backend's limits.
    """
    params.validate()
    limits_for(spec).check(params)


__all__ = ["check_profile", "limits_for"]
