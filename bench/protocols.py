"""What the protocols of issue 4 cost, measured side by side in one run.

1. The referee on one speech against a full story (pure Python): ms per speech.
2. Best-of-N on the embedded model: the N candidates sampled together (what the runner does, so
   the transformers backend batches them) against the same N one after the other; and the AI
   judge's scoring of the N candidates, together against one after the other.

    .venv/bin/python bench/protocols.py --n 4 --max-tokens 24 --repeats 2

Timings on a shared CPU are noisy: compare the ratios printed from one run, not absolute times
across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")


def _story() -> tuple[str, str, tuple[str, str]]:
    import json

    from arena.importing import SAMPLE_SET

    with SAMPLE_SET.open() as handle:
        row = json.loads(handle.readline())
    return row["source"]["text"], row["question"], (row["answers"][0], row["answers"][1])


def bench_referee(repeats: int) -> None:
    from debaters.quotes import SourceIndex
    from debaters.referee import RefereeRules, review_turn

    story, _, _ = _story()
    index = SourceIndex(story)
    start = story.find("There was a thump")
    speech = (
        f"The text is plain: <quote>{story[start : start + 120]}</quote>. And <quote>Maitland flew to Mars</quote>. "
        + " ".join(["Therefore my answer holds."] * 40)
    )
    rules = RefereeRules(word_limit=150, quote_budget_per_speech=60, quote_budget_per_debate=300)
    times = []
    for _ in range(max(20, repeats * 20)):
        t = time.perf_counter()
        review = review_turn(speech, index, rules, quote_words_before=100)
        times.append(time.perf_counter() - t)
    print(
        f"referee: {statistics.median(times) * 1000:.2f} ms per speech (median of {len(times)}) on a "
        f"{len(story):,}-character story; findings: {', '.join(v.rule for v in review.violations)}"
    )


async def bench_best_of_n(n: int, max_tokens: int, repeats: int) -> None:
    from tqdm import tqdm

    from debaters.backends import get_backend
    from debaters.backends.base import BackendSpec, GenerateRequest, SamplingParams
    from debaters.cai import best_of_n
    from judging.ai_judges import JudgeSpeech, JudgeView, judge_probabilities

    story, question, answers = _story()
    model = get_backend(BackendSpec("transformers", "embedded", {"device": "cpu"}))
    messages = (
        {"role": "system", "content": "You are a debater. Quote the text inside <quote></quote>."},
        {"role": "user", "content": f"Text:\n{story[:2500]}\n\nQuestion: {question}\nArgue for: {answers[0]}"},
    )
    request = GenerateRequest(messages, SamplingParams(max_tokens=max_tokens, temperature=0.8, seed=7))

    async def score(text: str) -> float:
        view = JudgeView(question=question, answers=answers, transcript=(JudgeSpeech(0, 1, text),))
        return (await judge_probabilities(model, view)).p[0]

    await model.complete(request)  # load and warm up
    together, apart, score_together, score_apart = [], [], [], []
    for _ in tqdm(range(repeats), desc="best-of-N", unit="round"):
        t = time.perf_counter()
        results = await best_of_n(model, request, n, score)
        together.append(time.perf_counter() - t)
        texts = [r.text for r in results]
        t = time.perf_counter()
        for i in range(n):
            one = GenerateRequest(messages, request.params.replace(seed=70 + i))
            final = await model.complete(one)
            await score(final.text)
        apart.append(time.perf_counter() - t)
        t = time.perf_counter()
        await asyncio.gather(*(score(x) for x in texts))
        score_together.append(time.perf_counter() - t)
        t = time.perf_counter()
        for x in texts:
            await score(x)
        score_apart.append(time.perf_counter() - t)
    med = statistics.median
    print(
        f"best-of-{n} ({max_tokens} tokens each, sample + score): together {med(together):.2f} s, "
        f"one after the other {med(apart):.2f} s: {med(apart) / med(together):.2f}x"
    )
    print(
        f"scoring {n} candidates (2 choice_probs each): together {med(score_together):.2f} s, "
        f"one after the other {med(score_apart):.2f} s: {med(score_apart) / med(score_together):.2f}x"
    )
    await model.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4, help="candidates per speech (default 4)")
    parser.add_argument("--max-tokens", type=int, default=24, help="tokens per candidate (default 24)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of each measurement (default 2)")
    parser.add_argument("--skip-model", action="store_true", help="only the referee (no model)")
    args = parser.parse_args()
    import django

    django.setup()
    bench_referee(args.repeats)
    if not args.skip_model:
        asyncio.run(bench_best_of_n(args.n, args.max_tokens, args.repeats))


if __name__ == "__main__":
    main()
