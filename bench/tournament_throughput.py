"""Generation throughput for a tournament-like load: sequential vs batched vs raw ``model.generate``.

Builds debate-like requests from QuALITY stories (two debaters per question, one per answer, each
prompt about ``--prompt-tokens`` tokens) and runs ``--rounds`` rounds; a round-2 prompt carries the
debater's own round-1 argument and the opponent's. Each mode plays its own debate, so its round-2
prompts come from its own round-1 text (identical across modes under greedy decoding, up to
floating-point ties). Throughput is completion tokens (end-of-sequence token included) per second
of wall time, prefill included:

  (a) one request at a time through ``ModelAPI.generate``;
  (b) every request of a round at once through ``ModelAPI.generate`` (what the batch runner does);
  (c) transformers' own ``model.generate`` on the same prompts as one left-padded greedy batch
      (transformers backend only).

Run ``python bench/tournament_throughput.py --help`` for the options. Example::

    python bench/tournament_throughput.py                       # embedded model, all three modes
    python bench/tournament_throughput.py --modes b,c --questions 4
    python bench/tournament_throughput.py --backend openai --base-url http://localhost:8000/v1 --model NAME
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from debaters.backends import backend_class  # noqa: E402
from debaters.backends.base import (  # noqa: E402
    BackendSpec,
    ChatMessage,
    Delta,
    Final,
    GenerateRequest,
    ModelAPI,
    SamplingParams,
)

DATA_CANDIDATES = (
    ROOT / "arena" / "data" / "quality-questions.jsonl",
    Path("/work/shared/data/quality-questions.jsonl"),
)


@dataclass(frozen=True)
class Question:
    title: str
    story: str
    question: str
    answers: tuple[str, str]


@dataclass
class RoundResult:
    seconds: float
    completion_tokens: int
    texts: list[str]


@dataclass
class ModeResult:
    name: str
    rounds: list[RoundResult]

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.rounds)

    @property
    def tokens(self) -> int:
        return sum(r.completion_tokens for r in self.rounds)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def _data_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    for candidate in DATA_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise SystemExit(f"no question file found; looked for {', '.join(map(str, DATA_CANDIDATES))} (use --data)")


def load_questions(path: Path, count: int) -> list[Question]:
    """The first ``count`` two-answer questions of a QuALITY jsonl file."""
    questions: list[Question] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            answers = row.get("answers") or []
            if len(answers) != 2:
                continue
            source = row.get("source") or {}
            title, story = source.get("title", ""), source.get("text", "")
            questions.append(Question(title, story, row["question"], (answers[0], answers[1])))
            if len(questions) == count:
                break
    if len(questions) < count:
        raise SystemExit(f"{path} has only {len(questions)} usable questions, {count} wanted")
    return questions


class PromptBuilder:
    """Debate prompts of about ``prompt_tokens`` tokens (story excerpt trimmed to fit)."""

    def __init__(self, count_tokens: "TokenCounter", prompt_tokens: int) -> None:
        self._count = count_tokens
        self._target = prompt_tokens

    def opening(self, q: Question, side: int) -> list[ChatMessage]:
        name = "AB"[side]
        head = (
            f"You are debater {name} in a debate about a story. A judge who cannot read the story will decide "
            "which answer is correct from your arguments and the quotes you give.\n\n"
            f"Story: {q.title}\n"
        )
        tail = (
            f"\n\nQuestion: {q.question}\nAnswer A: {q.answers[0]}\nAnswer B: {q.answers[1]}\n\n"
            f"You argue for answer {name}: \"{q.answers[side]}\". Give your opening argument in a few sentences, "
            "quoting the story where it helps."
        )
        budget = max(32, self._target - self._count(head + tail) - 40)  # 40: the chat template's own tokens
        return [{"role": "user", "content": head + self._excerpt(q.story, budget) + tail}]

    def rebuttal(self, opening: list[ChatMessage], own: str, opponent: str) -> list[ChatMessage]:
        return [
            *opening,
            {"role": "assistant", "content": own},
            {
                "role": "user",
                "content": f"Your opponent argued:\n{opponent}\n\nRebut their argument and restate yours briefly.",
            },
        ]

    def _excerpt(self, story: str, tokens: int) -> str:
        words = story.split()
        lo, hi = 0, len(words)
        while lo < hi:  # the longest word prefix within budget
            mid = (lo + hi + 1) // 2
            if self._count(" ".join(words[:mid])) <= tokens:
                lo = mid
            else:
                hi = mid - 1
        return " ".join(words[:lo])


class TokenCounter:
    def __init__(self, api: ModelAPI) -> None:
        self._api = api

    def __call__(self, text: str) -> int:
        return self._api.count_tokens(text)


def _requests(all_messages: Sequence[list[ChatMessage]], max_tokens: int) -> list[GenerateRequest]:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    return [GenerateRequest(messages=tuple(m), params=params) for m in all_messages]


async def _stream(api: ModelAPI, request: GenerateRequest) -> Final:
    final: Final | None = None
    async for item in api.generate(request):
        if isinstance(item, Final):
            final = item
        else:
            assert isinstance(item, Delta)
    assert final is not None
    return final


def _round(started: float, finals: Sequence[Final]) -> RoundResult:
    tokens = sum(f.completion_tokens for f in finals)
    return RoundResult(time.perf_counter() - started, tokens, [f.text for f in finals])


async def _run_sequential(api: ModelAPI, requests: list[GenerateRequest]) -> RoundResult:
    started = time.perf_counter()
    return _round(started, [await _stream(api, r) for r in requests])


async def _run_concurrent(api: ModelAPI, requests: list[GenerateRequest]) -> RoundResult:
    started = time.perf_counter()
    return _round(started, await asyncio.gather(*(_stream(api, r) for r in requests)))


class RawGenerate:
    """transformers' ``model.generate`` on one left-padded batch (greedy), for comparison."""

    def __init__(self, model_name: str, device: str, dtype: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from debaters.backends.transformers_backend import default_dtype, resolve_model_path

        path = resolve_model_path(model_name)
        self.torch = torch
        self.device = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype_name = dtype if dtype != "auto" else default_dtype(self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.tokenizer.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype_name))
        self.model = model.to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos])

    def run(self, all_messages: Sequence[list[ChatMessage]], max_tokens: int) -> RoundResult:
        torch = self.torch
        started = time.perf_counter()
        texts = [
            self.tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in all_messages
        ]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(
                **batch, max_new_tokens=max_tokens, do_sample=False, pad_token_id=self.tokenizer.pad_token_id,
                temperature=None, top_p=None, top_k=None,
            )
        seconds = time.perf_counter() - started
        new = out[:, batch["input_ids"].shape[1] :].tolist()
        tokens, decoded = 0, []
        for row in new:
            cut = next((i for i, t in enumerate(row) if t in self.eos), None)
            kept = row if cut is None else row[:cut]
            tokens += len(row) if cut is None else cut + 1
            decoded.append(self.tokenizer.decode(kept, skip_special_tokens=True))
        return RoundResult(seconds, tokens, decoded)


async def _debate(
    name: str,
    builder: PromptBuilder,
    questions: list[Question],
    rounds: int,
    max_tokens: int,
    play: "RoundRunner",
) -> tuple[ModeResult, list[list[ChatMessage]]]:
    openings = [builder.opening(q, side) for q in questions for side in (0, 1)]
    prompts = openings
    results: list[RoundResult] = []
    texts: list[str] = []
    for round_no in range(rounds):
        if round_no:
            # Rows come in (A, B) pairs per question: each debater sees the other's last argument.
            prompts = [builder.rebuttal(openings[i], texts[i], texts[i ^ 1]) for i in range(len(openings))]
        result = await play(prompts, max_tokens)
        texts = result.texts
        results.append(result)
        print(f"  {name} round {round_no + 1}: {result.completion_tokens} tokens in {result.seconds:.1f} s", flush=True)
    return ModeResult(name, results), prompts


class RoundRunner:
    async def __call__(self, prompts: Sequence[list[ChatMessage]], max_tokens: int) -> RoundResult:  # pragma: no cover
        raise NotImplementedError

    async def start(self) -> None:
        """Get ready for one run of every round (not timed)."""

    async def stop(self) -> None:
        """After a run: release what :meth:`start` set up."""


class _ApiRunner(RoundRunner):
    """(a) or (b): a fresh backend for each run, so no run reads another run's prefix cache."""

    def __init__(self, args: argparse.Namespace, *, concurrent: bool, warmup: list[ChatMessage]) -> None:
        self._args, self._concurrent, self._warmup = args, concurrent, warmup
        self._api: ModelAPI | None = None
        self._before: dict[str, int] = {}

    async def start(self) -> None:
        self._api = backend_class(self._args.backend)(_spec(self._args))
        await self._api.wait_ready()
        # Warm-up: first-call allocations and kernel selection are not throughput.
        await self._api.generate_batch(_requests([self._warmup, self._warmup], 4))
        self._before = _stats(self._api)

    async def stop(self) -> None:
        assert self._api is not None
        after = _stats(self._api)
        if after:
            prefill = after["prefill_tokens"] - self._before["prefill_tokens"]
            reused = after["reused_tokens"] - self._before["reused_tokens"]
            share = reused / prefill if prefill else 0.0
            steps = after["decode_steps"] - self._before["decode_steps"]
            decode_s = (after["decode_ms"] - self._before["decode_ms"]) / 1000
            prefill_s = (after["prefill_ms"] - self._before["prefill_ms"]) / 1000
            print(
                f"    prompt tokens {prefill}, {reused} ({share:.0%}) from the prefix cache; "
                f"prefill {prefill_s:.1f} s, {steps} decoding steps {decode_s:.1f} s",
                flush=True,
            )
        await self._api.aclose()
        self._api = None

    async def __call__(self, prompts: Sequence[list[ChatMessage]], max_tokens: int) -> RoundResult:
        assert self._api is not None
        requests = _requests(prompts, max_tokens)
        return await (_run_concurrent if self._concurrent else _run_sequential)(self._api, requests)


def _stats(api: ModelAPI) -> dict[str, int]:
    stats = getattr(api, "stats", None)
    return stats() if callable(stats) else {}


class _RawRunner(RoundRunner):
    def __init__(self, raw: RawGenerate) -> None:
        self._raw = raw

    async def __call__(self, prompts: Sequence[list[ChatMessage]], max_tokens: int) -> RoundResult:
        return self._raw.run(prompts, max_tokens)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/tournament_throughput.py",
        description=(
            "Tokens per second for a tournament-like load: (a) one request at a time, (b) all requests of a "
            "round concurrently through ModelAPI.generate, (c) transformers' model.generate on the same prompts "
            "as one left-padded greedy batch. Prints b/a and b/c."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--backend",
        choices=("transformers", "openai"),
        default="transformers",
        help="which backend serves (a) and (b); (c) needs transformers",
    )
    parser.add_argument(
        "--model", default="embedded", help="transformers: 'embedded' or a local HF folder; openai: the model name"
    )
    parser.add_argument("--base-url", default=None, help="openai backend: the API root, e.g. http://localhost:8000/v1")
    parser.add_argument("--device", default="auto", help="transformers: cpu, cuda or auto")
    parser.add_argument(
        "--dtype", default="auto", help="transformers: auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16"
    )
    parser.add_argument("--max-batch-size", type=int, default=32, help="transformers: largest running batch")
    parser.add_argument(
        "--prefix-cache-mb",
        type=float,
        default=1024,
        help="transformers: bytes of keys/values kept for reuse by later prompts (0: no prefix cache)",
    )
    parser.add_argument("--num-threads", type=int, default=None, help="torch.set_num_threads (unset: torch's choice)")
    parser.add_argument(
        "--questions", type=int, default=16, help="debates (one per question); two requests (one per answer) each"
    )
    parser.add_argument("--rounds", type=int, default=2, help="debate rounds")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens per request")
    parser.add_argument("--prompt-tokens", type=int, default=400, help="approximate tokens per round-1 prompt")
    parser.add_argument("--modes", default="a,b,c", help="comma-separated subset of a,b,c")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="QuALITY jsonl (unset: arena/data/quality-questions.jsonl, else /work/shared/data/...)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="run every mode this many times (interleaved) and report the best"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not set(args.modes) <= {"a", "b", "c"}:
        parser.error("--modes takes a, b and/or c")
    if args.backend == "openai":
        if not args.base_url:
            parser.error("--backend openai needs --base-url")
        if "c" in args.modes:
            print("note: mode (c) needs the transformers backend; skipped", file=sys.stderr)
            args.modes = [m for m in args.modes if m != "c"]
    return args


def _spec(args: argparse.Namespace) -> BackendSpec:
    if args.backend == "openai":
        return BackendSpec(backend="openai", model=args.model, options={"base_urls": [args.base_url]})
    options: dict[str, object] = {
        "device": args.device,
        "dtype": args.dtype,
        "max_batch_size": args.max_batch_size,
        "prefix_cache_mb": args.prefix_cache_mb,
    }
    if args.num_threads is not None:
        options["num_threads"] = args.num_threads
    return BackendSpec(backend="transformers", model=args.model, options=options)


async def _main(args: argparse.Namespace) -> dict[str, object]:
    # One question more than the benchmark plays: its prompt warms each backend up, so no
    # benchmark prompt is in a prefix cache before its mode runs.
    *questions, spare = load_questions(_data_path(args.data), args.questions + 1)
    counter_api = backend_class(args.backend)(_spec(args))
    builder = PromptBuilder(TokenCounter(counter_api), args.prompt_tokens)
    sample = builder.opening(questions[0], 0)
    warmup = builder.opening(spare, 0)
    print(
        f"{2 * len(questions)} requests x {args.rounds} rounds, max_tokens {args.max_tokens}, "
        f"round-1 prompt ~{counter_api.count_tokens(sample[0]['content'])} tokens (+ chat template), "
        f"{args.repeat} repeat(s); load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    runners: dict[str, RoundRunner] = {}
    if "a" in args.modes:
        runners["a"] = _ApiRunner(args, concurrent=False, warmup=warmup)
    if "b" in args.modes:
        runners["b"] = _ApiRunner(args, concurrent=True, warmup=warmup)
    if "c" in args.modes:
        raw = RawGenerate(args.model, args.device, args.dtype)
        raw.run([warmup, warmup], 4)
        runners["c"] = _RawRunner(raw)

    names = {"a": "(a) one at a time", "b": "(b) concurrent generate", "c": "(c) raw model.generate"}
    runs: dict[str, list[ModeResult]] = {key: [] for key in runners}
    # Modes are interleaved and repeated so that a burst of load from other processes hits one
    # run of each rather than all runs of one mode; the best run of each mode is reported.
    for repeat in range(args.repeat):
        for key, runner in runners.items():
            label = f"{names[key]} #{repeat + 1}"
            await runner.start()
            try:
                result, _ = await _debate(label, builder, questions, args.rounds, args.max_tokens, runner)
            finally:
                await runner.stop()
            runs[key].append(result)
    await counter_api.aclose()

    print()
    best = {key: max(results, key=lambda r: r.tokens_per_s) for key, results in runs.items()}
    for key, results in runs.items():
        all_rates = ", ".join(f"{r.tokens_per_s:.1f}" for r in results)
        b = best[key]
        print(
            f"{names[key]:<26} {b.tokens:>6} tokens  {b.seconds:>7.1f} s  {b.tokens_per_s:>7.1f} tokens/s"
            f"  (runs: {all_rates})"
        )
    figures: dict[str, object] = {
        key: {
            "tokens": r.tokens,
            "seconds": r.seconds,
            "tokens_per_s": r.tokens_per_s,
            "runs": [x.tokens_per_s for x in runs[key]],
        }
        for key, r in best.items()
    }
    if "a" in best and "b" in best:
        ratio = best["b"].tokens_per_s / best["a"].tokens_per_s
        figures["b_over_a"] = ratio
        print(f"b/a = {ratio:.2f}  (goal >= 5)")
    if "b" in best and "c" in best:
        ratio = best["b"].tokens_per_s / best["c"].tokens_per_s
        figures["b_over_c"] = ratio
        print(f"b/c = {ratio:.2f}  (goal >= 0.85)")
        same = sum(x == y for x, y in zip(best["b"].rounds[0].texts, best["c"].rounds[0].texts))
        print(f"round-1 texts identical between (b) and (c): {same}/{len(best['b'].rounds[0].texts)}")
    print(f"load average now {os.getloadavg()[0]:.2f} (other processes on this machine skew the figures)")
    return figures


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    figures = asyncio.run(_main(args))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
