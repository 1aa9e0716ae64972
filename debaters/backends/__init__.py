"""Model backends, registered by name and imported only when chosen.

The web process never imports torch: nothing here imports a heavy dependency at module level, and
``get_backend`` imports the chosen backend's module on first use.
"""

from __future__ import annotations

import importlib
import threading

from debaters.backends.base import BackendError, BackendSpec, ModelAPI

BACKENDS: dict[str, str] = {
    "transformers": "debaters.backends.transformers_backend.TransformersBackend",
    "openai": "debaters.backends.openai_backend.OpenAIBackend",
    "vllm": "debaters.backends.vllm_backend.VLLMBackend",
}


def _extra_backends() -> dict[str, str]:
    """Backends added by configuration: ARENA_BACKENDS="name=package.module.Class,other=..."."""
    import os

    extra: dict[str, str] = {}
    for item in os.environ.get("ARENA_BACKENDS", "").split(","):
        if item.strip():
            name, sep, path = item.partition("=")
            if not sep or not name.strip() or "." not in path:
                raise BackendError(f"ARENA_BACKENDS entry {item!r} is not name=package.module.Class", permanent=True)
            extra[name.strip()] = path.strip()
    return extra


_instances: dict[object, ModelAPI] = {}
_lock = threading.Lock()


def register_backend(name: str, dotted_path: str) -> None:
    """Register a backend class by dotted path (tests register their doubles this way)."""
    BACKENDS[name] = dotted_path


def backend_names() -> list[str]:
    """The names of every registered backend (built in and ``ARENA_BACKENDS``), without importing one."""
    return sorted({**BACKENDS, **_extra_backends()})


def backend_class(name: str) -> type[ModelAPI]:
    registry = {**BACKENDS, **_extra_backends()}
    try:
        path = registry[name]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise BackendError(f"unknown backend {name!r}; known: {known}", permanent=True) from None
    module_name, _, class_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f"backend {name!r} is not installed here: {exc}", permanent=True) from exc
    cls = getattr(module, class_name)
    if not (isinstance(cls, type) and issubclass(cls, ModelAPI)):
        raise BackendError(f"{path} is not a ModelAPI", permanent=True)
    return cls


def get_backend(spec: BackendSpec) -> ModelAPI:
    """One instance per spec per process, so a worker loads each model once."""
    key = spec.key()
    with _lock:
        api = _instances.get(key)
        if api is None:
            api = backend_class(spec.backend)(spec)
            _instances[key] = api
        return api


def forget_backends() -> None:
    """Drop cached instances (tests; a worker reloading its configuration)."""
    with _lock:
        _instances.clear()


__all__ = ["BACKENDS", "BackendError", "BackendSpec", "ModelAPI", "backend_class", "backend_names", "forget_backends", "get_backend", "register_backend"]
