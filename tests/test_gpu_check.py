"""bench/gpu_check.py runs end to end on the CPU with tiny sizes, offline, from nothing: random weights of
the built-in SmolLM2 shape (2 layers), a tokenizer trained on the bundled stories, its own SQLite database
and embedded Redis, the real batch runner. Speed is not asserted; that the three modes generated the same
amount of text on the same prompts is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert "--device" in result.stdout and "random weights" in result.stdout
