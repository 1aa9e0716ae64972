"""Are the embedded model's debates worth judging? Issue 13's figures, today's default beside the new one.

For N questions of a question set, runs a 2-round debate per question and per speech style
(``debaters.speech``) on the embedded model, through the same code the runner uses for a speech
(``plan_speech`` and ``generate_speech`` on the real backend, the referee's ``review_turn`` and
concession check), one debate at a time as a live debate runs: round 1's two openings together
(one batch), then one speech a step. Prints, per style:

- **states answer**: % of speeches whose text outside quotes contains the whole answer they defend
  (normalised as quotes are), i.e. the judge reads it in words;
- **verified quote**: % of speeches with at least one quote the referee verifies; **relevance**: for
  each such speech, the BM25 rank (1 = best) of the story passage holding its first verified quote,
  among all passages, for the question plus the speech's answer: the median rank, and the % of
  speeches whose quote sits in a top-5 passage (what ``select_passages`` ranks);
- **story paste**: % of speeches with more than 25 consecutive story words outside quote tags;
- **repeats**: % of speech pairs of a debate (all 6 pairs of a 2-round debate) sharing more than 30%
  of their word 8-grams (shared over the smaller speech's 8-grams); and the same over the words the
  model wrote (the structured prefill's answer statement and connectives left out);
- **clean end**: % of speeches ending at a sentence boundary or marked cut (a speech the referee
  truncated at the word limit is marked too), with the % marked cut;
- **first model text**: seconds from the debate's start until the judge is shown the first text the
  model wrote (median; a structured speech shows its answer statement at once, before that), the
  **debate** time (median), and the mean prompt tokens of a speech's first request.

    .venv/bin/python bench/debate_quality.py --questions 20 --styles free,structured,evidence

``--offset`` picks other questions (tune on some, report on others). Timings on a shared machine
are noisy: compare styles within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")

import django  # noqa: E402

django.setup()

from arena.constitution import DEFAULT_PREAMBLE, DEFAULT_PRINCIPLES, DEFAULT_RULES  # noqa: E402
from arena.engine.protocol import Limits, make_protocol  # noqa: E402
from arena.importing import SAMPLE_SET  # noqa: E402
from debaters.backends import get_backend  # noqa: E402
from debaters.backends.base import BackendSpec, ModelAPI, SamplingParams  # noqa: E402
from debaters.prompts import DebaterView, SpeechRecord  # noqa: E402
from debaters.quotes import SourceIndex, extract_quotes, normalize  # noqa: E402
from debaters.referee import check_concession, parse_rules, review_turn  # noqa: E402
from debaters.retrieval import render_excerpts, score_passages, select_passages, split_passages  # noqa: E402
from debaters.speech import FREE, SPEECH_STYLES, ends_sentence, generate_speech, plan_speech  # noqa: E402

PRINCIPLES = "\n".join(f"- [{p['id']}] {p['text']}" for p in DEFAULT_PRINCIPLES)
PASTE_WORDS = 25
NGRAM = 8
REPEAT_SHARE = 0.30
TOP_PASSAGES = 5


@dataclass
class Question:
    id: str
    question: str
    answers: tuple[str, str]
    title: str
    story: str


@dataclass
class SpeechResult:
    side: int
    text: str
    states_answer: bool
    verified: bool
    rank: int | None
    paste: bool
    clean_end: bool
    cut: bool
    prompt_tokens: int


@dataclass
class DebateResult:
    speeches: list[SpeechResult] = field(default_factory=list)
    first_token_s: float | None = None
    total_s: float = 0.0
    repeat_pairs: int = 0
    model_repeat_pairs: int = 0  # the same, over the words the model wrote (prefill words left out)
    pairs: int = 0


def load_questions(path: Path, n: int, offset: int) -> list[Question]:
    import json

    out: list[Question] = []
    with path.open() as handle:
        for k, line in enumerate(handle):
            if k < offset:
                continue
            row = json.loads(line)
            out.append(
                Question(
                    row["id"],
                    row["question"],
                    (row["answers"][0], row["answers"][1]),
                    row["source"]["title"],
                    row["source"]["text"],
                )
            )
            if len(out) == n:
                break
    return out


def outside_quotes(text: str) -> list[str]:
    """The pieces of ``text`` between quote elements (tags and quoted words removed)."""
    pieces, pos = [], 0
    for start, end, _ in extract_quotes(text):
        pieces.append(text[pos:start])
        pos = end
    pieces.append(text[pos:])
    return pieces


def ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def pastes_story(text: str, story_grams: set[tuple[str, ...]]) -> bool:
    return any(ngrams(normalize(piece).split(), PASTE_WORDS + 1) & story_grams for piece in outside_quotes(text))


def quote_rank(q: Question, side: int, span_start: int) -> int:
    passages = split_passages(q.story)
    scores = score_passages(passages, f"{q.question} {q.answers[side]}")
    ranked = sorted(range(len(passages)), key=lambda i: (-scores[i], i))
    holder = next((p.index for p in passages if p.start <= span_start < p.end), passages[-1].index)
    return ranked.index(holder) + 1


async def run_debate(
    model: ModelAPI, q: Question, style: str, limits: Limits, seed: int, *, constrain: bool = True
) -> DebateResult:
    rules = parse_rules(DEFAULT_RULES).with_word_limit(limits.word_limit)
    source = SourceIndex(q.story)
    protocol = make_protocol("debate", {"rounds": limits.rounds}, seed=seed)
    story_grams = ngrams(normalize(q.story).split(), PASTE_WORDS + 1)
    result = DebateResult()
    texts: dict[int, tuple[int, int, str]] = {}
    started = time.perf_counter()
    first: list[float] = []
    excerpts: dict[int, str] = {}

    async def speak(index: int, round_: int, side: int, visible: tuple[int, ...]) -> None:
        if side not in excerpts:
            passages = select_passages(
                q.story, f"{q.question} {q.answers[side]}", limits.context_tokens or 10**9, model.count_tokens
            )
            excerpts[side] = render_excerpts(passages)
        view = DebaterView(
            question=q.question,
            answers=q.answers,
            side=side,
            round=round_,
            rounds=limits.rounds,
            word_limit=rules.word_limit,
            excerpts=excerpts[side],
            transcript=tuple(SpeechRecord(texts[i][1], texts[i][0], texts[i][2]) for i in visible),
            source_title=q.title,
            quote_budget=rules.quote_budget_per_speech,
        )
        plan = plan_speech(style, DEFAULT_PREAMBLE, PRINCIPLES, view, q.story, constrain=constrain)
        if style == FREE:
            plan = replace(plan, sentence_cut=False)  # today's runner: no cut at a sentence boundary
        params = SamplingParams(max_tokens=limits.max_tokens, temperature=0.7, top_p=0.95, seed=seed * 100 + index)
        prefill_pending = [bool(plan.prefill)]  # the first delta of a prefilled plan is the prefill

        async def on_delta(piece: str) -> None:
            if prefill_pending[0]:
                prefill_pending[0] = False
            elif not first:
                first.append(time.perf_counter() - started)

        speech = await generate_speech(model, plan, params, on_delta=on_delta)
        review = review_turn(speech.text, source, rules)
        marked_cut = speech.cut and style != FREE
        await check_concession(
            model,
            question=q.question,
            answers=q.answers,
            side=side,
            speech=review.text,
            threshold=rules.concession_threshold,
        )
        texts[index] = (round_, side, review.text)
        said = normalize(" ".join(outside_quotes(review.text)))
        verified = [c for c in review.quotes if c.verified and c.source_span is not None]
        result.speeches.append(
            SpeechResult(
                side=side,
                text=review.text,
                states_answer=normalize(q.answers[side]) in said,
                verified=bool(verified),
                rank=quote_rank(q, side, verified[0].source_span[0]) if verified and verified[0].source_span else None,
                paste=pastes_story(review.text, story_grams),
                # Today's runner marked only the referee's word-limit truncation, not a token-limit cut.
                clean_end=ends_sentence(review.text) or marked_cut or review.truncated,
                cut=marked_cut or review.truncated,
                prompt_tokens=speech.final.prompt_tokens,
            )
        )

    for step in protocol.pending_steps({}):
        await asyncio.gather(*(speak(s.index, s.round, s.side, s.visible) for s in step))
    result.total_s = time.perf_counter() - started
    result.first_token_s = first[0] if first else None
    ordered = [texts[i][2] for i in sorted(texts)]
    result.repeat_pairs, result.pairs = repeat_pairs(ordered)
    result.model_repeat_pairs, _ = repeat_pairs([_PROJECT_WORDS.sub(" ", t) for t in ordered])
    return result


# What the structured styles write for the model (debaters.prompts.speech_prefill, QUOTE_LEAD,
# debaters.speech.ARGUMENT_OPENING): left out of the "model words" repeat figure.
_PROJECT_WORDS = re.compile(
    r'I argue that the answer is ".*?"\.|My answer is still ".*?", and my opponent is wrong\.|The text says:|This shows that',
    re.DOTALL,
)


def repeat_pairs(texts: list[str]) -> tuple[int, int]:
    """(pairs sharing more than REPEAT_SHARE of their 8-grams, pairs) over all pairs of ``texts``."""
    grams = [ngrams(normalize(t).split(), NGRAM) for t in texts]
    repeated = pairs = 0
    for a in range(len(grams)):
        for b in range(a + 1, len(grams)):
            smaller = min(len(grams[a]), len(grams[b]))
            pairs += 1
            if smaller and len(grams[a] & grams[b]) / smaller > REPEAT_SHARE:
                repeated += 1
    return repeated, pairs


def pct(values: list[bool]) -> str:
    return f"{100 * sum(values) / len(values):5.1f}%" if values else "   - "


def report(style: str, context: int | None, debates: list[DebateResult]) -> str:
    speeches = [s for d in debates for s in d.speeches]
    ranks = [s.rank for s in speeches if s.rank is not None]
    firsts = [d.first_token_s for d in debates if d.first_token_s is not None]
    pairs = sum(d.pairs for d in debates)
    repeats = sum(d.repeat_pairs for d in debates)
    model_repeats = sum(d.model_repeat_pairs for d in debates)
    return " | ".join(
        [
            f"{style:16s} ctx {context or 'all':>4}",
            f"answer {pct([s.states_answer for s in speeches])}",
            f"quote {pct([s.verified for s in speeches])}",
            f"rank med {statistics.median(ranks) if ranks else '-':>4} top{TOP_PASSAGES} {pct([r <= TOP_PASSAGES for r in ranks])}",
            f"paste {pct([s.paste for s in speeches])}",
            f"repeats {100 * repeats / pairs if pairs else 0:5.1f}% (model words {100 * model_repeats / pairs if pairs else 0:5.1f}%)",
            f"clean end {pct([s.clean_end for s in speeches])} (cut {pct([s.cut for s in speeches])})",
            f"first model text {statistics.median(firsts) if firsts else float('nan'):5.1f} s",
            f"debate {statistics.median([d.total_s for d in debates]):5.1f} s",
            f"prompt {statistics.mean([s.prompt_tokens for s in speeches]):6.0f} tok",
        ]
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=20, help="how many questions (default 20)")
    parser.add_argument("--offset", type=int, default=0, help="skip this many questions of the set first")
    parser.add_argument("--set", type=Path, default=SAMPLE_SET, help="question set JSONL (default: the bundled sample)")
    parser.add_argument(
        "--styles",
        default="free@1500,structured@700/plain,structured@700,evidence@700",
        help=(
            "comma-separated STYLE@CONTEXT_TOKENS[/plain] ('all' for the whole story; '/plain' without "
            "constrained decoding); 'free@1500' is the free speech of the first release"
        ),
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--word-limit", type=int, default=150)
    parser.add_argument("--show", action="store_true", help="print every speech")
    args = parser.parse_args()
    runs: list[tuple[str, int | None, bool]] = []
    for item in args.styles.split(","):
        item, plain, _ = item.partition("/plain")
        style, _, ctx = item.partition("@")
        if style not in SPEECH_STYLES:
            parser.error(f"unknown style {style!r}; known: {', '.join(SPEECH_STYLES)}")
        runs.append((style, None if ctx == "all" else int(ctx or 1500), not plain))
    questions = load_questions(args.set, args.questions, args.offset)
    model = get_backend(BackendSpec("transformers", "embedded", {"device": "cpu"}))
    await model.wait_ready()
    results: dict[tuple[str, int | None, bool], list[DebateResult]] = {run: [] for run in runs}
    for k, q in enumerate(questions):
        for style, ctx, constrain in runs:  # interleaved, so machine load hits every style alike
            limits = Limits(
                rounds=args.rounds, max_tokens=args.max_tokens, word_limit=args.word_limit, context_tokens=ctx
            )
            debate = await run_debate(model, q, style, limits, seed=1000 + k, constrain=constrain)
            results[(style, ctx, constrain)].append(debate)
            label = f"{style}@{ctx}{'' if constrain else '/plain'}"
            print(f"[{k + 1}/{len(questions)}] {q.id} {label}: {debate.total_s:.1f} s", file=sys.stderr, flush=True)
            if args.show:
                for s in debate.speeches:
                    print(f"--- {style} side {s.side}: {s.text}\n", file=sys.stderr, flush=True)
        if k + 1 < len(questions):
            # A running table, so a long run that has to stop early still reports what it measured.
            print(table(results, k + 1, args), file=sys.stderr, flush=True)
    print(table(results, len(questions), args), flush=True)
    await model.aclose()


def table(results: dict[tuple[str, int | None, bool], list[DebateResult]], done: int, args: argparse.Namespace) -> str:
    lines = [
        f"{done} questions from {args.set.name} (offset {args.offset}), {args.rounds}-round debates, "
        f"max_tokens {args.max_tokens}, word limit {args.word_limit}, {os.cpu_count()} CPUs"
    ]
    for (style, ctx, constrain), debates in results.items():
        name = f"{style}{' (first release)' if style == FREE else ''}{'' if constrain or style == FREE else ' plain'}"
        lines.append(report(name, ctx, debates))
    return "\n".join(lines)


if __name__ == "__main__":
    asyncio.run(main())
