"""The live runner: runs debates on the worker loop, streaming every turn as it is generated.

It asks the protocol what comes next, builds each speaker's view, streams the backend's deltas to
the debate's channel group, has the referee check every speech against the constitution (quotes
against the full source, quote budget, length, format, concession), and commits each turn as soon
as it ends. It resumes from the committed turns, so a redelivered task never repeats a speech.

Protocols (arena/engine/protocol.py, docs/protocols.md) add three pauses to that loop:

- open protocols: before anyone speaks, the protagonist chooses its answer (``choice_probs`` in
  both answer orders, or a one-letter generation where the backend cannot score choices); the
  choice is recorded in ``Debate.settings["open_choice"]``;
- consultancy: the consultant's answer, drawn from the seed, is recorded in the settings;
- interactive debate: before a round that follows a judge's question, the question must exist.
  A debate with human judges pauses (Outcome ``waiting-for-judge``; the judge's POST queues it
  again); one without asks an AI judge.

Debaters with best-of-N or critique-and-revision enabled (``debaters.cai``) do not stream token by
token: their final speech is streamed once it is chosen, and the drafts, critiques and candidates
are stored for researchers only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.utils import timezone

from arena import protocol_services, services
from arena.constitution import principles_text
from arena.engine.protocol import (
    ConsultancyProtocol,
    Limits,
    Protocol,
    ProtocolError,
    ProtocolSettings,
    Slot,
    draw_consultant_side,
    make_protocol,
)
from arena.models import Debate, JudgeQuestion, Turn
from arena.streaming import DebateStream
from debaters.backends import get_backend
from debaters.backends.base import BackendError, BackendSpec, Final, GenerateRequest, ModelAPI, SamplingParams
from debaters.backends.resilient import ResilientModel, StreamInterrupted
from debaters.cai import CAI_TEMPLATE, Principle, best_of_n, critique_and_revise, principles_from
from debaters.prompts import (
    CHOICE_LABELS,
    PROMPT_VERSION,
    DebaterView,
    JudgeQuestionRecord,
    SpeechRecord,
    choice_messages,
    judge_question_messages,
    prompt_hash,
)
from debaters.quotes import QuoteCheck, SourceIndex, segments
from debaters.referee import RefereeRules, check_concession, over_length, parse_rules, quote_words_of, review_turn
from debaters.retrieval import render_excerpts, select_passages
from debaters.speech import FREE, Speech, SpeechPlan, generate_speech, plan_speech
from judging import deadlines

log = logging.getLogger(__name__)

MAX_TURN_ATTEMPTS = 3
# An over-long speech under ``over_length: regenerate`` is sampled again this many times at most,
# then truncated like any other.
MAX_REGENERATIONS = 2
JUDGE_QUESTION_MAX_TOKENS = 64
JUDGE_QUESTION_MAX_CHARS = 500


@dataclass
class Outcome:
    status: str
    retry_after: float | None = None
    turns_written: int = 0


@dataclass
class _Judge:
    model: ModelAPI
    label: str


@dataclass
class _Context:
    debate: Debate
    protocol: Protocol
    limits: Limits
    models: dict[int, ModelAPI]
    model_names: dict[int, str]
    preamble: str
    principles: str
    source: SourceIndex
    turns: dict[int, Turn] = field(default_factory=dict)
    excerpts: dict[object, str] = field(default_factory=dict)
    settings: ProtocolSettings = field(default_factory=ProtocolSettings)
    referee: RefereeRules = field(default_factory=RefereeRules)
    principle_list: list[Principle] = field(default_factory=list)
    questions: dict[int, str] = field(default_factory=dict)
    human_judges: bool = False
    judge: _Judge | None = None
    model_factory: Callable[..., ModelAPI] | None = None

    def model(self, side: int) -> ModelAPI:
        """The model of the profile arguing ``side``, wrapped for retries; created on first use."""
        if side not in self.models:
            profile = self.debate.debater_for_side(side)
            self.models[side] = _resilient(profile.backend_spec(), self.model_factory)  # type: ignore[attr-defined]
            self.model_names[side] = profile.model_label  # type: ignore[attr-defined]
        return self.models[side]


def _resilient(spec: BackendSpec, factory: Callable[..., ModelAPI] | None) -> ModelAPI:
    return ResilientModel(factory(spec) if factory else get_backend(spec))


def turn_payload(turn: Turn) -> dict[str, object]:
    """What a judge may see of a committed turn: the speech, its quote checks and the referee's findings.

    No prompt (it contains the source), no drafts or candidates (researchers only).
    """
    checks = [QuoteCheck.from_dict(q) for q in turn.quotes]
    violations = [{"rule": str(v.get("rule", "")), "message": str(v.get("message", ""))} for v in turn.violations or []]
    return {
        "turn": turn.index,
        "round": turn.round,
        "side": turn.side,
        "text": turn.text,
        "segments": segments(turn.text, checks),
        "violations": violations,
        "truncated": turn.truncated,
        "cut": turn.cut,
        # Kept for clients of the first schema (docs/streaming.md).
        "meta": {"truncated": turn.truncated, "violations": violations},
    }


async def run_debate(
    debate_id: int, owner: str, *, stream: DebateStream | None = None, model_factory: Callable[..., ModelAPI] | None = None
) -> Outcome:
    """Run one debate to its end (or failure, or a pause for the judge), streaming every turn."""
    outcomes = await run_debates([debate_id], owner, model_factory=model_factory, streams={debate_id: stream} if stream else None)
    return outcomes[debate_id]


async def run_debates(
    debate_ids: Sequence[int],
    owner: str,
    *,
    model_factory: Callable[..., ModelAPI] | None = None,
    streams: dict[int, DebateStream] | None = None,
    on_turn: Callable[[int, int], None] | None = None,
) -> dict[int, Outcome]:
    """Step many debates in lockstep: each step, every unfinished debate contributes its next speeches.

    All requests of a step are in flight together, so the backend sees them as one batch (the
    transformers backend batches concurrent requests; a served model gets concurrent streams). A
    debate that fails is marked failed and leaves the batch; one that must wait for its judge's
    question leaves it with outcome ``waiting-for-judge``; the others go on. Each turn is still
    committed the moment it ends.
    """
    outcomes: dict[int, Outcome] = {}
    sessions: dict[int, _Session] = {}
    for debate_id in debate_ids:
        stream = (streams or {}).get(debate_id) or DebateStream(debate_id)
        session_or_outcome = await _start(debate_id, owner, stream, model_factory)
        if isinstance(session_or_outcome, Outcome):
            outcomes[debate_id] = session_or_outcome
        else:
            sessions[debate_id] = session_or_outcome
    renewer = asyncio.create_task(_keep_leases(list(sessions), owner))
    try:
        while sessions:
            active = [(s, s.steps.pop(0)) for s in sessions.values() if s.steps]
            results = await asyncio.gather(
                *(_run_step(session, step, owner, on_turn) for session, step in active), return_exceptions=True
            )
            for (session, _), result in zip(active, results):
                debate_id = session.ctx.debate.pk
                if isinstance(result, _WaitForJudge):
                    sessions.pop(debate_id)
                    await session.stream.status("waiting", f"waiting for the judge's question after round {result.after_round}")
                    outcomes[debate_id] = Outcome(status="waiting-for-judge", turns_written=session.written)
                elif isinstance(result, BaseException):
                    sessions.pop(debate_id)
                    outcomes[debate_id] = await _fail(session, owner, result)
            for debate_id in [d for d, s in sessions.items() if not s.steps]:
                session = sessions.pop(debate_id)
                if await sync_to_async(services.finish_debate)(debate_id, owner):
                    await session.stream.status("finished")
                outcomes[debate_id] = Outcome(status="finished", turns_written=session.written)
    finally:
        renewer.cancel()
    return outcomes


@dataclass
class _Session:
    ctx: _Context
    stream: DebateStream
    steps: list[list[Slot]]
    written: int = 0


async def _start(
    debate_id: int, owner: str, stream: DebateStream, model_factory: Callable[..., ModelAPI] | None
) -> _Session | Outcome:
    claimed = await sync_to_async(services.claim_debate)(debate_id, owner)
    if not claimed:
        remaining = await sync_to_async(services.lease_remaining_s)(debate_id)
        if remaining is None:
            return Outcome(status="not-claimable")
        return Outcome(status="held-elsewhere", retry_after=remaining + 1)
    try:
        ctx = await sync_to_async(_load)(debate_id, model_factory)
        ctx = await _settle_draws(ctx, owner)
        steps = ctx.protocol.pending_steps(ctx.turns)
    except _LeaseLost:
        return Outcome(status="lease-lost")
    except (ProtocolError, BackendError, ValueError) as exc:
        message = exc.message if isinstance(exc, BackendError) else str(exc)
        await sync_to_async(services.fail_debate)(debate_id, f"cannot start: {message}", owner)
        await stream.status("failed", message)
        return Outcome(status="failed")
    await stream.status("running")
    return _Session(ctx=ctx, stream=stream, steps=steps)


async def _run_step(session: _Session, step: list[Slot], owner: str, on_turn: Callable[[int, int], None] | None) -> None:
    await _ensure_judge_question(session, step, owner)
    results = await asyncio.gather(*(_speak(session.ctx, slot, owner, session.stream) for slot in step), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
        session.written += int(result)
        if on_turn is not None:
            on_turn(session.ctx.debate.pk, len(session.ctx.turns))


async def _fail(session: _Session, owner: str, exc: BaseException) -> Outcome:
    debate_id = session.ctx.debate.pk
    if isinstance(exc, _LeaseLost):
        return Outcome(status="lease-lost", turns_written=session.written)
    if isinstance(exc, BackendError):
        reason = f"model backend failed: {exc.message}"
    else:
        log.exception("debate %s crashed", debate_id, exc_info=exc)
        reason = f"internal error: {type(exc).__name__}: {exc}"
    log.warning("debate %s failed: %s", debate_id, reason)
    await sync_to_async(services.fail_debate)(debate_id, reason, owner)
    await session.stream.status("failed", reason)
    return Outcome(status="failed", turns_written=session.written)


class _LeaseLost(Exception):
    pass


class _WaitForJudge(Exception):
    def __init__(self, after_round: int) -> None:
        super().__init__(f"waiting for the judge's question after round {after_round}")
        self.after_round = after_round


async def _keep_leases(debate_ids: list[int], owner: str) -> None:
    from django.conf import settings

    interval = max(1.0, settings.ARENA_LEASE_SECONDS / 3)
    while True:
        await asyncio.sleep(interval)
        for debate_id in debate_ids:
            await sync_to_async(services.renew_lease)(debate_id, owner)


def _load(debate_id: int, model_factory: Callable[..., ModelAPI] | None) -> _Context:
    debate = Debate.objects.select_related("question", "constitution", "debater_a", "debater_b").get(pk=debate_id)
    protocol = make_protocol(debate.protocol, debate.settings, seed=debate.seed, first_side=debate.first_side)
    settings = ProtocolSettings.from_settings(debate.settings)
    referee = parse_rules(debate.constitution.rules).with_word_limit(settings.word_limit)
    turns = {t.index: t for t in Turn.objects.filter(debate_id=debate_id)}
    questions = dict(JudgeQuestion.objects.filter(debate_id=debate_id).values_list("after_round", "text"))
    # Models are created on first use: a naive or expert judge debate never loads one.
    return _Context(
        debate=debate,
        protocol=protocol,
        limits=protocol.limits,
        models={},
        model_names={},
        preamble=debate.constitution.preamble,
        principles=principles_text(debate.constitution),
        source=SourceIndex(debate.question.source_text),
        turns=turns,
        settings=settings,
        referee=referee,
        principle_list=principles_from(debate.constitution.principles),
        questions=questions,
        human_judges=deadlines.expects_human_questions(debate_id),
        model_factory=model_factory,
    )


async def _settle_draws(ctx: _Context, owner: str) -> _Context:
    """Record the consultant's drawn side, and have an open protocol's protagonist choose, once."""
    debate = ctx.debate
    if isinstance(ctx.protocol, ConsultancyProtocol) and not ctx.protocol.open_choice:
        if debate.settings.get("consultant_side") is None:
            side = draw_consultant_side(debate.seed)
            await sync_to_async(protocol_services.record_settings)(debate.pk, owner, {"consultant_side": side})
            return await sync_to_async(_load)(debate.pk, ctx.model_factory)
    if ctx.protocol.needs_choice():
        choice = await _choose(ctx)
        if not await sync_to_async(protocol_services.record_open_choice)(debate.pk, owner, choice):
            raise _LeaseLost()
        return await sync_to_async(_load)(debate.pk, ctx.model_factory)
    return ctx


async def _choose(ctx: _Context) -> dict[str, object]:
    """The protagonist (the profile created as debater A) picks the answer it will defend."""
    debate = ctx.debate
    question = debate.question
    protagonist = debate.debater_a
    model = _resilient(protagonist.backend_spec(), ctx.model_factory)
    excerpts = await sync_to_async(_excerpts_for, thread_sensitive=False)(
        ctx, "choice", f"{question.question} {question.answers[0]} {question.answers[1]}", model
    )
    answers = (question.answers[0], question.answers[1])
    by_order: list[tuple[float, float]] = []
    method = "choice_probs"
    prompts = [
        choice_messages(
            ctx.preamble, ctx.principles, question=question.question, answers=answers,
            excerpts=excerpts, source_title=question.source_title, first=first,
        )
        for first in (0, 1)
    ]
    try:
        for first, messages in enumerate(prompts):
            probs = await model.choice_probs(messages, CHOICE_LABELS)
            by_order.append((probs[0], probs[1]) if first == 0 else (probs[1], probs[0]))
        p0 = (by_order[0][0] + by_order[1][0]) / 2
    except BackendError as exc:
        if not exc.permanent:
            raise
        # This backend cannot score choices: ask for one letter instead.
        method = "generation"
        final = await model.complete(
            GenerateRequest(tuple(prompts[0]), SamplingParams(max_tokens=4, temperature=0.0, seed=debate.seed))
        )
        letter = next((c for c in final.text.upper() if c in CHOICE_LABELS), None)
        p0 = 0.5 if letter is None else (1.0 if letter == "A" else 0.0)
    if abs(p0 - 0.5) < 1e-9:
        import random

        # No preference: the seed breaks the tie, so the run is reproducible.
        side = random.Random(f"open-choice:{debate.seed}").randrange(2)
        method += "+seeded-tie-break"
    else:
        side = 0 if p0 > 0.5 else 1
    return {
        "side": side,
        "p": [round(p0, 6), round(1 - p0, 6)],
        "method": method,
        "protagonist": protagonist.name,
        "prompt_version": PROMPT_VERSION,
        # The exact prompts (answers in both orders), so the choice can be reproduced.
        "prompt_hashes": [prompt_hash(m) for m in prompts],
    }


async def _ensure_judge_question(session: _Session, step: list[Slot], owner: str) -> None:
    """Interactive debate: make sure the judge's question due before ``step`` exists, or pause."""
    ctx = session.ctx
    after = ctx.protocol.question_before(step)
    if after is None or after in ctx.questions:
        return
    existing = await sync_to_async(protocol_services.judge_question)(ctx.debate.pk, after)
    # The judge's deadline passed (judging/deadlines.py): an AI judge asks, or the round has no question.
    fallback = deadlines.fallback_for(ctx.debate.settings, after) if existing is None else None
    if fallback is not None and fallback.used == "none":
        ctx.questions[after] = ""
        return
    if existing is None and ctx.human_judges and fallback is None:
        if await sync_to_async(protocol_services.pause_for_judge)(ctx.debate.pk, owner, after):
            await sync_to_async(deadlines.schedule_deadline)(ctx.debate.pk, after)
            raise _WaitForJudge(after)
        existing = await sync_to_async(protocol_services.judge_question)(ctx.debate.pk, after)
        if existing is None:
            raise _LeaseLost()
    if existing is None:
        judge = await _judge(ctx, step[0].side, fallback.ai_judge if fallback else None)
        text = await _ai_question(ctx, judge, after)
        existing = await sync_to_async(protocol_services.store_ai_question)(ctx.debate.pk, owner, after, text, judge.label)
        if existing is None:
            raise _LeaseLost()
    ctx.questions[after] = existing.text
    await session.stream.send(
        {"type": "judge_question", "after_round": after, "before_turn": min(s.index for s in step), "text": existing.text}
    )


async def _judge(ctx: _Context, side: int, profile_name: str | None = None) -> _Judge:
    """The AI judge: ``profile_name`` (a study's questioner), else the configured judge profile,
    else the model of the debater arguing ``side``."""
    if ctx.judge is not None and profile_name is None:
        return ctx.judge
    name = profile_name or ctx.settings.judge_profile
    if name:
        from judging.models import JudgeProfile

        profile = await sync_to_async(JudgeProfile.objects.filter(name=name).first)()
        if profile is None:
            raise ProtocolError(f"judge profile {name!r} does not exist")
        spec = BackendSpec(backend=profile.backend, model=profile.model, options=dict(profile.options or {}))
        judge = _Judge(_resilient(spec, ctx.model_factory), profile.label)
        if profile_name is None:
            ctx.judge = judge
        return judge
    model = ctx.model(side)
    return _Judge(model, f"{ctx.model_names[side]} (the debater's own model)")


async def _ai_question(ctx: _Context, judge: _Judge, after_round: int) -> str:
    question = ctx.debate.question
    transcript = [SpeechRecord(t.side, t.round, t.text) for _, t in sorted(ctx.turns.items()) if t.round <= after_round]
    messages = judge_question_messages(
        ctx.principles, question=question.question, answers=(question.answers[0], question.answers[1]),
        transcript=transcript, after_round=after_round,
    )
    for attempt in range(2):
        params = SamplingParams(
            max_tokens=min(ctx.limits.max_tokens, JUDGE_QUESTION_MAX_TOKENS),
            temperature=0.7,
            seed=ctx.debate.seed * 100 + 90 + 2 * after_round + attempt,
        )
        final = await judge.model.complete(GenerateRequest(tuple(messages), params))
        text = " ".join(final.text.split())[:JUDGE_QUESTION_MAX_CHARS]
        if text:
            return text
    raise BackendError(f"the AI judge ({judge.label}) asked an empty question twice")


def _excerpts_for(ctx: _Context, key: object, query: str, model: ModelAPI) -> str:
    if key not in ctx.excerpts:
        question = ctx.debate.question
        budget = ctx.limits.context_tokens
        if budget is None:
            ctx.excerpts[key] = question.source_text
        else:
            passages = select_passages(question.source_text, query, budget, model.count_tokens)
            ctx.excerpts[key] = render_excerpts(passages)
    return ctx.excerpts[key]


def _excerpts(ctx: _Context, side: int) -> str:
    question = ctx.debate.question
    return _excerpts_for(ctx, side, f"{question.question} {question.answers[side]}", ctx.model(side))


def _quote_words_before(ctx: _Context, slot: Slot) -> int:
    return sum(quote_words_of(t.quotes) for i, t in ctx.turns.items() if t.side == slot.side and i < slot.index)


async def _speak(ctx: _Context, slot: Slot, owner: str, stream: DebateStream) -> bool:
    question = ctx.debate.question
    profile = ctx.debate.debater_for_side(slot.side)
    model = ctx.model(slot.side)
    excerpts = await sync_to_async(_excerpts, thread_sensitive=False)(ctx, slot.side)
    view = DebaterView(
        question=question.question,
        answers=(question.answers[0], question.answers[1]),
        side=slot.side,
        round=slot.round,
        rounds=ctx.limits.rounds,
        word_limit=ctx.referee.word_limit,
        excerpts=excerpts,
        transcript=tuple(
            SpeechRecord(ctx.turns[i].side, ctx.turns[i].round, ctx.turns[i].text) for i in slot.visible
        ),
        source_title=question.source_title,
        whole_source=ctx.limits.context_tokens is None,
        protocol=ctx.protocol.name,
        judge_questions=tuple(JudgeQuestionRecord(r, t) for r, t in sorted(ctx.questions.items()) if r < slot.round and t),
        quote_budget=ctx.referee.quote_budget_per_speech,
        chose_answer=ctx.protocol.open_choice and slot.side == _protagonist_side(ctx),
    )
    n = ctx.settings.best_of_n[slot.side]
    k = ctx.settings.critique_rounds[slot.side]
    # Best-of-N and critique-and-revision sample and rewrite whole speeches: they use the free style.
    style = profile.speech_style if n == 1 and k == 0 else FREE  # type: ignore[attr-defined]
    plan = plan_speech(style, ctx.preamble, ctx.principles, view, question.source_text)
    messages = list(plan.messages)
    profile_max = int((profile.sampling or {}).get("max_tokens", ctx.limits.max_tokens))  # type: ignore[attr-defined]
    params = profile.sampling_params().replace(  # type: ignore[attr-defined]
        max_tokens=min(ctx.limits.max_tokens, profile_max), seed=ctx.debate.seed * 100 + slot.index
    )
    request = GenerateRequest(messages=tuple(messages), params=params)
    meta: dict[str, object] = {"attempts": 1, "prompt_version": PROMPT_VERSION, "speech_style": plan.style}
    revisions: list[protocol_services.RevisionRecord] = []
    candidates: list[protocol_services.CandidateRecord] = []
    await stream.start_turn(slot.index, slot.round, slot.side)
    started = timezone.now()
    if n == 1 and k == 0:
        speech = await _stream_speech(model, plan, params, stream, slot)
        regenerations = 0
        while ctx.referee.over_length == "regenerate" and over_length(speech.text, ctx.referee) and regenerations < MAX_REGENERATIONS:
            regenerations += 1
            await stream.reset_turn(slot.index, "over the length limit: generating the speech again")
            speech = await _stream_speech(model, plan, params.replace(seed=(params.seed or 0) * 10 + regenerations), stream, slot)
        if regenerations:
            meta["regenerations"] = regenerations
        meta.update(speech.meta)
        final = speech.final
        text, completion_tokens, streamed = final.text, final.completion_tokens, True
    else:
        text, completion_tokens, final = await _crafted_speech(ctx, slot, model, request, messages, n, k, revisions, candidates, meta)
        streamed = False
    review = review_turn(text, ctx.source, ctx.referee, quote_words_before=_quote_words_before(ctx, slot))
    if streamed and review.truncated:
        # The judge saw the whole speech stream in: replace it with what is kept.
        await stream.reset_turn(slot.index, "over the length limit: truncated")
    if not streamed or review.truncated:
        await stream.push(slot.index, review.text)
    violations = review.violation_dicts()
    if ctx.referee.check_concession:
        judge = await _judge(ctx, slot.side)
        check = await check_concession(
            judge.model, question=question.question, answers=(question.answers[0], question.answers[1]),
            side=slot.side, speech=review.text, threshold=ctx.referee.concession_threshold,
        )
        meta["concession"] = {"p": check.p, "model": judge.label, **({"error": check.error} if check.error else {})}
        if check.violation is not None:
            violations.append(check.violation.to_dict())
    if review.truncated:
        meta["original_words"] = review.original_words
    record = services.TurnRecord(
        index=slot.index,
        round=slot.round,
        side=slot.side,
        text=review.text,
        quotes=[c.to_dict() for c in review.quotes],
        prompt=messages,
        prompt_hash=prompt_hash(messages),
        prompt_tokens=final.prompt_tokens,
        completion_tokens=completion_tokens,
        finish_reason=final.finish_reason,
        model_name=ctx.model_names[slot.side],
        started_at=started,
        finished_at=timezone.now(),
        meta=meta,
    )
    turn = await sync_to_async(protocol_services.commit_turn)(
        ctx.debate.pk, owner, record, violations=violations, truncated=review.truncated,
        revisions=revisions, candidates=candidates,
    )
    if turn is None:
        still_ours = await sync_to_async(services.renew_lease)(ctx.debate.pk, owner)
        if not still_ours:
            raise _LeaseLost()
        turn = await sync_to_async(Turn.objects.get)(debate_id=ctx.debate.pk, index=slot.index)
        ctx.turns[slot.index] = turn
        await stream.end_turn(slot.index, turn_payload(turn))
        return False
    ctx.turns[slot.index] = turn
    await stream.end_turn(slot.index, turn_payload(turn))
    return True


def _protagonist_side(ctx: _Context) -> int | None:
    choice = ctx.debate.settings.get("open_choice")
    side = choice.get("side") if isinstance(choice, dict) else None
    return side if side in (0, 1) else None


async def _stream_speech(model: ModelAPI, plan: SpeechPlan, params: SamplingParams, stream: DebateStream, slot: Slot) -> Speech:
    """Generate one speech from ``plan`` (``debaters.speech``), streaming it to the judges.

    A structured speech never takes back what it streamed; a free speech cut at the token limit is
    replaced by its text up to the last whole sentence (``turn_reset``, then the kept text).
    """

    async def push(text: str) -> None:
        await stream.push(slot.index, text)

    async def reset(text: str, reason: str) -> None:
        await stream.reset_turn(slot.index, reason)
        await stream.push(slot.index, text)

    for attempt in range(1, MAX_TURN_ATTEMPTS + 1):
        try:
            return await generate_speech(model, plan, params, on_delta=push, on_reset=reset)
        except StreamInterrupted as exc:
            # Text already went to the judges: retract it before generating the turn again.
            await stream.reset_turn(slot.index, f"stream interrupted ({exc.message}); regenerating")
            if attempt == MAX_TURN_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


async def _crafted_speech(
    ctx: _Context,
    slot: Slot,
    model: ModelAPI,
    request: GenerateRequest,
    messages: list[dict[str, str]],
    n: int,
    k: int,
    revisions: list[protocol_services.RevisionRecord],
    candidates: list[protocol_services.CandidateRecord],
    meta: dict[str, object],
) -> tuple[str, int, Final]:
    """Best-of-N, then K critique-and-revision rounds, on one speech; fills the records to store."""
    spent = 0
    if n > 1:
        from judging.ai_judges import JudgeSpeech, JudgeView, judge_probabilities

        judge = await _judge(ctx, slot.side)
        question = ctx.debate.question
        # What a judge would have read when this speech ends: the speeches the speaker saw, then it.
        shown = tuple(JudgeSpeech(ctx.turns[i].side, ctx.turns[i].round, ctx.turns[i].text) for i in slot.visible)

        async def score(text: str) -> float:
            view = JudgeView(
                question=question.question,
                answers=(question.answers[0], question.answers[1]),
                transcript=shown + (JudgeSpeech(slot.side, slot.round, text),),
                protocol=ctx.protocol.name,
                questions=tuple((r, q) for r, q in sorted(ctx.questions.items()) if r < slot.round),
            )
            judgement = await judge_probabilities(judge.model, view, ctx.principles)
            return float(judgement.p[slot.side])

        results = await best_of_n(model, request, n, score)
        chosen = next(r for r in results if r.chosen)
        candidates.extend(
            protocol_services.CandidateRecord(
                index=r.index, text=r.text, score=r.score, chosen=r.chosen, completion_tokens=r.final.completion_tokens
            )
            for r in results
        )
        spent += sum(r.final.completion_tokens for r in results)
        meta["best_of_n"] = {"n": n, "judge": judge.label, "chosen": chosen.index}
        text, final = chosen.text, chosen.final
    else:
        final = await model.complete(request)
        spent += final.completion_tokens
        text = final.text
    completion_tokens = final.completion_tokens
    if k > 0:
        text, steps = await critique_and_revise(
            model, messages, text, ctx.principle_list, k, request,
            seed=ctx.debate.seed, turn_index=slot.index, word_limit=ctx.referee.word_limit,
        )
        revisions.extend(
            protocol_services.RevisionRecord(
                step=s.step, draft=s.draft, principle_id=s.principle.id, principle=s.principle.text,
                critique=s.critique, revision=s.revision, prompt=messages,
            )
            for s in steps
        )
        spent += sum(s.completion_tokens for s in steps)
        meta["cai"] = {"rounds": k, "template": CAI_TEMPLATE}
        completion_tokens = model.count_tokens(text) if text else 0
    meta["tokens_spent"] = spent
    return text, completion_tokens, final
