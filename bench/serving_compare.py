"""The embedded model in process vs served by ``transformers serve --continuous-batching``, side by side.

The question this answers: on a CPU-only deployment (``make run``), should the worker run the embedded
SmolLM2 in process (the ``transformers`` backend, which batches concurrent requests itself) or talk to
``transformers serve DIR --continuous-batching`` through the ``openai`` backend, the path GPU
deployments use with ``vllm serve``?

For each level of concurrency (1, 8 and 16 by default) it streams ``--requests`` requests (at least as
many as the level) with at most that many in flight, each a ~400-token prompt built from the bundled
QuALITY stories, ``max_tokens`` 48, greedy, through ``ModelAPI.generate`` as the live runner does, and
prints generated tokens per second of wall time for both paths and their ratio. Both run on this
machine's CPU with the same weights and the same thread count; the levels alternate between the two
paths so that a burst of load from other processes does not land on one of them only.

    python bench/serving_compare.py                      # 1, 8 and 16 concurrent requests
    python bench/serving_compare.py --levels 4,16 --repeat 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from debaters.backends import backend_class  # noqa: E402
from debaters.backends.base import BackendSpec, ChatMessage, Final, GenerateRequest, ModelAPI, SamplingParams  # noqa: E402

DATA = ROOT / "arena" / "data" / "quality-questions.jsonl"


@dataclass
class Run:
    tokens: int = 0
    seconds: float = 0.0
    first_token_s: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def build_prompts(count: int, prompt_tokens: int, count_tokens: Callable[[str], int]) -> list[list[ChatMessage]]:
    """``count`` distinct debate-like prompts of about ``prompt_tokens`` tokens (story excerpt + question)."""
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts: list[list[ChatMessage]] = []
    for i in range(count):
        row = rows[i % len(rows)]
        words = row["source"]["text"].split()
        offset = (i // len(rows)) * 300  # a different excerpt when the questions run out
        tail = f"\n\nQuestion: {row['question']}\nArgue for the answer: {row['answers'][i % 2]}. Quote the story."
        budget = prompt_tokens - count_tokens(tail) - 20
        lo, hi = 0, min(len(words) - offset, 2000)
        while lo < hi:  # the longest excerpt within budget
            mid = (lo + hi + 1) // 2
            if count_tokens(" ".join(words[offset : offset + mid])) <= budget:
                lo = mid
            else:
                hi = mid - 1
        prompts.append([{"role": "user", "content": " ".join(words[offset : offset + lo]) + tail}])
    return prompts


async def _one(api: ModelAPI, request: GenerateRequest, run: Run) -> Final:
    """Stream one request; records the time to its first item (from when it was sent)."""
    started = time.perf_counter()
    final: Final | None = None
    first = True
    async for item in api.generate(request):
        if first:
            run.first_token_s.append(time.perf_counter() - started)
            first = False
        if isinstance(item, Final):
            final = item
    assert final is not None
    return final


async def measure(api: ModelAPI, prompts: Sequence[list[ChatMessage]], concurrency: int, max_tokens: int) -> Run:
    """Stream every prompt with at most ``concurrency`` in flight; tokens/s over the whole wall time."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    gate = asyncio.Semaphore(concurrency)
    run = Run()

    async def guarded(messages: list[ChatMessage]) -> Final:
        async with gate:
            return await _one(api, GenerateRequest(tuple(messages), params), run)  # type: ignore[arg-type]

    started = time.perf_counter()
    finals = await asyncio.gather(*(guarded(p) for p in prompts))
    run.seconds = time.perf_counter() - started
    run.tokens = sum(f.completion_tokens for f in finals)
    return run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``transformers serve FOLDER --continuous-batching`` on a free loopback port, offline."""

    def __init__(self, folder: Path, log_path: Path) -> None:
        import httpx

        executable = Path(sys.executable).with_name("transformers")
        if not executable.exists():
            found = shutil.which("transformers")
            if found is None:
                raise SystemExit("the transformers CLI is not installed")
            executable = Path(found)
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [str(executable), "serve", str(folder), "--continuous-batching", "--host", "127.0.0.1", "--port", str(self.port),
             "--device", "cpu", "--dtype", "float32"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"transformers serve exited with {self.process.returncode}; see {log_path}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"transformers serve did not answer /health within 120 s; see {log_path}")
            time.sleep(0.25)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)
        self._log.close()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/serving_compare.py",
        description=(
            "Tokens/s of the embedded model in process (transformers backend) against transformers serve "
            "--continuous-batching through the openai backend, at several levels of concurrency, on the CPU."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--levels", default="1,8,16", help="comma-separated numbers of requests in flight")
    parser.add_argument("--requests", type=int, default=4, help="requests per level (at least the level)")
    parser.add_argument("--prompt-tokens", type=int, default=400, help="approximate tokens per prompt")
    parser.add_argument("--max-tokens", type=int, default=48, help="max_tokens per request")
    parser.add_argument("--repeat", type=int, default=1, help="measure every level this many times per path; the best is kept")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    try:
        args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    except ValueError:
        parser.error("--levels takes integers, e.g. 1,8,16")
    if not args.levels or min(args.levels) < 1 or args.requests < 1 or args.max_tokens < 1 or args.repeat < 1:
        parser.error("levels, --requests, --max-tokens and --repeat must be positive")
    return args


async def _main(args: argparse.Namespace) -> dict[str, object]:
    from debaters.embedded import ensure_converted

    folder = ensure_converted()
    in_process = backend_class("transformers")(
        BackendSpec(backend="transformers", model=str(folder), options={"device": "cpu", "max_batch_size": max(16, max(args.levels))})
    )
    await in_process.wait_ready()
    workdir = Path(tempfile.mkdtemp(prefix="arena-serving-compare-"))
    server = Server(folder, workdir / "transformers-serve.log")
    served = backend_class("openai")(
        BackendSpec(backend="openai", model=str(folder), options={"base_urls": [server.base_url], "timeout_s": 600})
    )
    try:
        prompts = build_prompts(max(max(args.levels), args.requests), args.prompt_tokens, in_process.count_tokens)
        sizes = [in_process.count_tokens(p[0]["content"]) for p in prompts]
        print(
            f"{len(prompts)} prompts of {min(sizes)}-{max(sizes)} tokens (+ chat template), max_tokens {args.max_tokens}, greedy; "
            f"torch threads {_torch_threads()}; load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        for api in (in_process, served):  # warm-up: first-call allocations are not throughput
            await measure(api, prompts[:2], 2, 4)
        results: dict[int, dict[str, Run]] = {}
        for level in args.levels:
            batch = prompts[: max(level, args.requests)]
            best: dict[str, Run] = {}
            for _ in range(args.repeat):
                for name, api in (("in-process", in_process), ("served", served)):
                    run = await measure(api, batch, level, args.max_tokens)
                    if name not in best or run.tokens_per_s > best[name].tokens_per_s:
                        best[name] = run
                    print(f"  {level:>2} in flight, {name:<10}: {run.tokens} tokens in {run.seconds:.1f} s = {run.tokens_per_s:.1f} tok/s", flush=True)
            results[level] = best
    finally:
        await served.aclose()
        await in_process.aclose()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"{'in flight':>9} | {'in process tok/s':>16} | {'served tok/s':>12} | {'served / in process':>19} | first token (median s): in process, served")
    figures: dict[str, object] = {}
    for level, best in results.items():
        a, b = best["in-process"], best["served"]
        ratio = b.tokens_per_s / a.tokens_per_s if a.tokens_per_s else 0.0
        print(
            f"{level:>9} | {a.tokens_per_s:>16.1f} | {b.tokens_per_s:>12.1f} | {ratio:>19.2f} | "
            f"{_median(a.first_token_s):.2f}, {_median(b.first_token_s):.2f}"
        )
        figures[str(level)] = {
            "in_process_tokens_per_s": a.tokens_per_s,
            "served_tokens_per_s": b.tokens_per_s,
            "served_over_in_process": ratio,
            "in_process_first_token_s": _median(a.first_token_s),
            "served_first_token_s": _median(b.first_token_s),
        }
    print(f"load average now {os.getloadavg()[0]:.2f} (other processes on this machine skew the figures)")
    return figures


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    figures = asyncio.run(_main(args))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
