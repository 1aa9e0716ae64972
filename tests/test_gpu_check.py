"""bench/gpu_check.py runs end to end on the CPU with tiny sizes, offline, from nothing: random weights of
the built-in SmolLM2 shape (2 layers), a tokenizer trained on the bundled stories, its own SQLite database
and embedded Redis, the real batch runner. Speed is not asserted; that the three modes generated the same
amount of text on the same prompts is. Its vllm part, which needs CUDA and vLLM, runs in process against
the vLLM 0.33 stand-in (tests/support/vllm_standin.py).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import vllm_standin

from debaters.embedded import ensure_converted

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_it_measures_the_batch_runner_against_raw_generate_on_the_cpu(tmp_path: Path) -> None:
    out_json = tmp_path / "figures.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "ARENA_DATA_DIR")}
    result = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--device", "cpu", "--debates", "2", "--rounds", "1", "--max-tokens", "8",
         "--context-tokens", "60", "--random-weights", "--no-local-files", "--layers", "1", "--json", str(out_json)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "RANDOM WEIGHTS" in result.stdout and "gibberish" in result.stdout
    assert "vllm: not importable here" in result.stdout or "vllm: needs CUDA" in result.stdout
    figures = json.loads(out_json.read_text())
    assert figures["random_weights"] is True and figures["device"] == "cpu"
    # It says which parts ran and which were skipped, and for lack of what.
    parts = {name.split(":")[0]: part for name, part in figures["parts"].items()}
    assert parts["transformers backend on cpu"] == {"status": "ran", "reason": ""}
    vllm = parts["vllm backend (offline engine)"]
    assert vllm["status"] == "skipped" and ("not importable" in vllm["reason"] or "needs CUDA" in vllm["reason"])
    assert "parts:\n  ran      transformers backend on cpu" in result.stdout
    assert "  skipped  vllm backend (offline engine)" in result.stdout
    tokens = {key: f["tokens"] for key, f in figures["figures"].items()}
    # 2 debates x 2 speakers x 1 round x 8 tokens; random weights never end a speech early.
    assert tokens == {"transformers/runner": 32, "transformers/generate_batch": 32, "transformers/raw": 32}
    assert all(f["tokens_per_s"] > 0 for f in figures["figures"].values())
    assert set(figures["ratios"]) == {
        "transformers/runner / transformers/raw",
        "transformers/generate_batch / transformers/raw",
        "transformers/runner / transformers/generate_batch",
    }
    for line in ("transformers: batch runner", "transformers: backend generate_batch", "transformers: raw model.generate"):
        assert line in result.stdout


def test_it_explains_itself() -> None:
    result = subprocess.run([sys.executable, "bench/gpu_check.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "--device" in result.stdout and "random weights" in result.stdout and "--backends" in result.stdout


@pytest.mark.django_db(transaction=True)
def test_it_runs_the_vllm_part_through_the_runner_against_the_vllm_standin(monkeypatch: pytest.MonkeyPatch) -> None:
    """The vllm part (which needs CUDA and vLLM) end to end on the vLLM 0.33 stand-in: the real runner,
    the real vllm backend, an engine that refuses what vLLM refuses."""
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD", raising=False)
    standin = vllm_standin.install(monkeypatch)
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # its dataclasses look their module up
    spec.loader.exec_module(gpu_check)
    args = gpu_check._parse(["--debates", "2", "--rounds", "1", "--max-tokens", "8", "--context-tokens", "60", "--backends", "vllm"])
    figures: dict[str, gpu_check.Figure] = {}
    extra: dict[str, object] = {}
    gpu_check._vllm_part(args, str(ensure_converted(progress=False)), "bfloat16", [], figures, extra)
    (engine,) = standin.engines
    assert engine.engine_args["dtype"] == "bfloat16" and engine.engine_args["enable_prefix_caching"] is False
    assert extra["vllm_multiproc_method"] == "spawn"
    # 2 debates x 2 speakers x 1 round x 8 tokens, through the runner and again through generate_batch.
    assert {key: figure.tokens for key, figure in figures.items()} == {"vllm/runner": 32, "vllm/generate_batch": 32}
    # The replay is one generate_batch: one LLM.chat of all four requests. The warm-up and the timed
    # run go through the batch runner, whose four concurrent generate calls a round join within
    # batch_wait_ms of each other; on a loaded machine some arrive later and leave in a call of their
    # own, so only their total (4 + 4) is fixed.
    *runner, replay = extra["vllm_chat_batch_sizes"]
    assert replay == 4
    assert sum(runner) == 8 and all(1 <= size <= 4 for size in runner)
