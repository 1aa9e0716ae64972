"""Loading: the backend's options, its dtype, where the model lives and its tokenizer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from debaters.backends.base import BackendError, BackendSpec

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_KNOWN_OPTIONS = {
    "device",
    "dtype",
    "max_batch_size",
    "batch_wait_ms",
    "max_prefill_tokens",
    "num_threads",
    "prefix_cache_mb",
}


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
            if dtype != "auto" and dtype not in DTYPES:
                raise ValueError(f"dtype must be one of auto, {', '.join(DTYPES)}; not {dtype!r}")
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


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(path))
