"""Constitutional AI inside a debate: critique-and-revision and best-of-N. No Django here.

**Critique and revision** (Bai et al. 2022, SL-CAI): the debater's draft speech is critiqued by
the same model against one principle drawn from the constitution (seeded, so a debate is
reproducible), then revised in answer to the critique; up to K rounds, each revising the last
revision. Every step (draft, principle, critique, revision) is returned for storage; only the
final text is shown to the judge.

**Best-of-N** (Khan et al. 2024): the debater samples N candidate speeches; a scorer (an AI
judge's probability for the debater's answer after reading the transcript with that candidate)
rates each, and the best is used. Ties go to the lowest index, so the choice is deterministic.
All candidates and scores are returned for storage.

The runner wires these to the database and the stream (arena/runner.py).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from debaters.backends.base import ChatMessage, Final, GenerateRequest, ModelAPI
from debaters.prompts import critique_messages, revision_messages

CAI_TEMPLATE = "sl-cai-v1"


@dataclass(frozen=True)
class Principle:
    id: str
    text: str


def principles_from(constitution_principles: Sequence[Mapping[str, str]]) -> list[Principle]:
    return [Principle(id=str(p["id"]), text=str(p["text"])) for p in constitution_principles]


def pick_principle(principles: Sequence[Principle], *, seed: int, turn_index: int, step: int) -> Principle:
    """The principle for one critique step, drawn from the debate's seed (same seed, same draw)."""
    if not principles:
        raise ValueError("the constitution has no principles to critique against")
    return random.Random(f"cai:{seed}:{turn_index}:{step}").choice(list(principles))


@dataclass(frozen=True)
class RevisionStep:
    step: int
    draft: str
    principle: Principle
    critique: str
    revision: str
    completion_tokens: int


async def critique_and_revise(
    model: ModelAPI,
    speech_messages: Sequence[ChatMessage],
    draft: str,
    principles: Sequence[Principle],
    rounds: int,
    request: GenerateRequest,
    *,
    seed: int,
    turn_index: int,
    word_limit: int,
) -> tuple[str, list[RevisionStep]]:
    """Run ``rounds`` critique-and-revision steps on ``draft``; return the final text and the steps.

    ``request`` supplies the sampling parameters (its seed is varied per call). A revision that
    comes back empty leaves the previous text in force (the step is still recorded).
    """
    text = draft
    steps: list[RevisionStep] = []
    base_seed = request.params.seed if request.params.seed is not None else seed
    for step in range(rounds):
        principle = pick_principle(principles, seed=seed, turn_index=turn_index, step=step)
        critique_req = GenerateRequest(
            messages=tuple(critique_messages(speech_messages, text, principle.text)),
            params=request.params.replace(seed=base_seed * 10 + 2 * step + 1),
        )
        critique = await model.complete(critique_req)
        revision_req = GenerateRequest(
            messages=tuple(revision_messages(speech_messages, text, principle.text, critique.text.strip(), word_limit)),
            params=request.params.replace(seed=base_seed * 10 + 2 * step + 2),
        )
        revision = await model.complete(revision_req)
        revised = revision.text.strip()
        steps.append(
            RevisionStep(
                step=step,
                draft=text,
                principle=principle,
                critique=critique.text.strip(),
                revision=revised,
                completion_tokens=critique.completion_tokens + revision.completion_tokens,
            )
        )
        if revised:
            text = revised
    return text, steps


@dataclass(frozen=True)
class CandidateResult:
    index: int
    text: str
    score: float
    chosen: bool
    final: Final


Scorer = Callable[[str], Awaitable[float]]


async def best_of_n(model: ModelAPI, request: GenerateRequest, n: int, scorer: Scorer) -> list[CandidateResult]:
    """Sample ``n`` candidates (together, so the backend batches them), score each, mark the best.

    Candidate ``i`` is sampled with seed ``request.params.seed * 10 + i`` (n is at most 8).
    """
    if not 1 <= n <= 9:
        raise ValueError("best-of-N needs 1 <= N <= 9")
    base = request.params.seed or 0
    requests = [
        GenerateRequest(messages=request.messages, params=request.params.replace(seed=base * 10 + i)) for i in range(n)
    ]
    finals = await asyncio.gather(*(model.complete(r) for r in requests))
    scores = await asyncio.gather(*(scorer(f.text) for f in finals))
    best = max(range(n), key=lambda i: (scores[i], -i))
    return [
        CandidateResult(index=i, text=finals[i].text, score=float(scores[i]), chosen=i == best, final=finals[i])
        for i in range(n)
    ]
