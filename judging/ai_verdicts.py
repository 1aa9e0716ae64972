"""AI verdicts: load a finished debate, let a judge profile read it, store the verdict.

A verdict is stored as the same :class:`~judging.models.Verdict` record as a human one, with
``kind="ai"``, the judge profile and its label, the answer order the debate was set to show first,
the averaged probabilities, the position bias and, in ``meta``, the probabilities in each order and
any chain of thought. ``one_verdict_per_ai_judge`` makes this idempotent: a second worker that
judges the same debate finds the first verdict and stores nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError, transaction

from arena.constitution import principles_text
from arena.engine.protocol import ProtocolError, make_protocol
from arena.models import Debate, JudgeQuestion, Turn
from debaters.backends import get_backend
from debaters.backends.base import BackendSpec, ModelAPI
from debaters.backends.resilient import ResilientModel
from judging.ai_judges import PROMPT_VERSION, JudgeSpeech, JudgeView, judge_verdict, mark_quotes
from judging.models import JudgeProfile, Verdict, verdict_correct

DEFAULT_JUDGE = "smollm2-judge"

ModelFactory = Callable[[BackendSpec], ModelAPI]


def default_judge_profile() -> JudgeProfile:
    """The embedded model as an AI judge, created on first use (like the default debater)."""
    profile, _ = JudgeProfile.objects.get_or_create(
        name=DEFAULT_JUDGE,
        defaults={
            "description": "SmolLM2-135M-Instruct bundled with the app as an AI judge (letter probabilities, both orders).",
            "backend": settings.ARENA_DEFAULT_BACKEND,
            "model": settings.ARENA_DEFAULT_MODEL,
            "options": {"device": settings.ARENA_DEFAULT_DEVICE},
            "prompt_version": PROMPT_VERSION,
        },
    )
    return profile


def judge_spec(profile: JudgeProfile) -> BackendSpec:
    return BackendSpec(backend=profile.backend, model=profile.model, options=dict(profile.options or {}))


def judge_view(debate: Debate) -> JudgeView:
    """What the judge reads: question, answers, the transcript with quotes marked; the source only
    for a protocol whose judge sees it (expert)."""
    turns = Turn.objects.filter(debate=debate).order_by("index")
    transcript = tuple(JudgeSpeech(side=t.side, round=t.round, text=mark_quotes(t.text, t.quotes)) for t in turns)
    try:
        sees_source = make_protocol(debate.protocol, debate.settings).judge_sees_source()
    except ProtocolError:
        sees_source = False
    question = debate.question
    return JudgeView(
        question=question.question,
        answers=(question.answers[0], question.answers[1]),
        transcript=transcript,
        source=question.source_text if sees_source else None,
        protocol=debate.protocol,
        questions=tuple(JudgeQuestion.objects.filter(debate=debate).order_by("after_round").values_list("after_round", "text")),
    )


def shown_first_of(debate: Debate) -> int:
    value = (debate.settings or {}).get("shown_first", 0)
    return 1 if value == 1 else 0


def _load(debate_id: int, profile_id: int) -> tuple[Debate, JudgeProfile, JudgeView, str] | None:
    debate = Debate.objects.select_related("question", "constitution").get(pk=debate_id)
    if debate.status != Debate.Status.FINISHED:
        return None
    if Verdict.objects.filter(debate_id=debate_id, ai_judge_id=profile_id).exists():
        return None
    profile = JudgeProfile.objects.get(pk=profile_id)
    return debate, profile, judge_view(debate), principles_text(debate.constitution)


def _store(debate: Debate, profile: JudgeProfile, p: tuple[float, float], extra: dict[str, object]) -> Verdict:
    correct_index = debate.question.correct_index
    try:
        with transaction.atomic():
            return Verdict.objects.create(
                debate=debate,
                kind=Verdict.Kind.AI,
                ai_judge=profile,
                judge_label=profile.label,
                shown_first=shown_first_of(debate),
                p_a=p[0],
                p_b=p[1],
                position_bias=extra.pop("position_bias"),
                reason=str(extra.pop("reason")),
                time_spent_s=extra.pop("time_spent_s"),
                correct=verdict_correct(p, correct_index),
                meta=extra,
            )
    except IntegrityError:
        # Another worker judged this debate with this profile first: keep its verdict.
        return Verdict.objects.get(debate=debate, ai_judge=profile)


async def give_ai_verdict(debate_id: int, profile_id: int, *, model_factory: ModelFactory | None = None) -> Verdict | None:
    """Judge a finished debate with one profile and store the verdict; None when the debate is not
    finished or this profile already judged it. Backend failures raise :class:`BackendError`."""
    loaded = await sync_to_async(_load)(debate_id, profile_id)
    if loaded is None:
        return None
    debate, profile, view, principles = loaded
    spec = judge_spec(profile)
    model = ResilientModel(model_factory(spec) if model_factory else get_backend(spec))
    started = time.monotonic()
    judgement = await judge_verdict(
        model,
        view,
        principles,
        chain_of_thought=profile.chain_of_thought,
        clamp=profile.clamp,
        max_cot_tokens=profile.max_cot_tokens,
        seed=debate.seed,
    )
    shown_first = shown_first_of(debate)
    meta: dict[str, object] = {
        "by_order": [list(judgement.by_order[0]), list(judgement.by_order[1])],
        "cot": list(judgement.reasoning) if judgement.reasoning is not None else None,
        "unclamped": list(judgement.unclamped) if judgement.unclamped else None,
        "clamped": judgement.clamped,
        "prompt_version": profile.prompt_version,
        "judge_prompt": PROMPT_VERSION,
        "prompt_hashes": list(judgement.prompt_hashes or ()),
        "completion_tokens": judgement.completion_tokens,
        "protocol": debate.protocol,
        "position_bias": judgement.position_bias,
        "time_spent_s": time.monotonic() - started,
        # The reasoning shown is the one read in the order this debate shows its answers.
        "reason": (judgement.reasoning[shown_first] if judgement.reasoning else ""),
    }
    return await sync_to_async(_store)(debate, profile, judgement.p, meta)
