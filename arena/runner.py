"""The live runner: runs one debate on the worker loop, streaming every turn as it is generated.

It asks the protocol what comes next, builds each speaker's view, streams the backend's deltas to
the debate's channel group, checks quotes against the full source, and commits each turn as soon as
it ends. It resumes from the committed turns, so a redelivered task never repeats a speech.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from asgiref.sync import sync_to_async
from django.utils import timezone

from arena import services
from arena.constitution import principles_text
from arena.engine.protocol import Limits, Protocol, ProtocolError, Slot, make_protocol
from arena.models import Debate, Turn
from arena.streaming import DebateStream
from debaters.backends import get_backend
from debaters.backends.base import BackendError, Delta, Final, GenerateRequest, ModelAPI
from debaters.backends.resilient import ResilientModel, StreamInterrupted
from debaters.prompts import DebaterView, SpeechRecord, debater_messages, prompt_hash
from debaters.quotes import SourceIndex, check_quotes, segments
from debaters.retrieval import render_excerpts, select_passages

log = logging.getLogger(__name__)

MAX_TURN_ATTEMPTS = 3


@dataclass
class Outcome:
    status: str
    retry_after: float | None = None
    turns_written: int = 0


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
    excerpts: dict[int, str] = field(default_factory=dict)


def turn_payload(turn: Turn) -> dict[str, object]:
    """What a judge may see of a committed turn (no prompt: it contains the source)."""
    from debaters.quotes import QuoteCheck

    checks = [QuoteCheck.from_dict(q) for q in turn.quotes]
    return {
        "turn": turn.index,
        "round": turn.round,
        "side": turn.side,
        "text": turn.text,
        "segments": segments(turn.text, checks),
        "meta": {k: v for k, v in (turn.meta or {}).items() if k in ("truncated", "violations")},
    }


async def run_debate(
    debate_id: int, owner: str, *, stream: DebateStream | None = None, model_factory: Callable[..., ModelAPI] | None = None
) -> Outcome:
    claimed = await sync_to_async(services.claim_debate)(debate_id, owner)
    if not claimed:
        remaining = await sync_to_async(services.lease_remaining_s)(debate_id)
        if remaining is None:
            return Outcome(status="not-claimable")
        return Outcome(status="held-elsewhere", retry_after=remaining + 1)
    stream = stream or DebateStream(debate_id)
    try:
        ctx = await sync_to_async(_load)(debate_id, model_factory)
    except (ProtocolError, BackendError, ValueError) as exc:
        await sync_to_async(services.fail_debate)(debate_id, f"cannot start: {exc}", owner)
        await stream.status("failed", str(exc))
        return Outcome(status="failed")
    await stream.status("running")
    renewer = asyncio.create_task(_keep_lease(debate_id, owner))
    written = 0
    try:
        for step in ctx.protocol.pending_steps(ctx.turns):
            results = await asyncio.gather(*(_speak(ctx, slot, owner, stream) for slot in step), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
                written += int(result)
        if await sync_to_async(services.finish_debate)(debate_id, owner):
            await stream.status("finished")
        return Outcome(status="finished", turns_written=written)
    except _LeaseLost:
        return Outcome(status="lease-lost", turns_written=written)
    except BackendError as exc:
        reason = f"model backend failed: {exc.message}"
        log.warning("debate %s failed: %s", debate_id, reason)
        await sync_to_async(services.fail_debate)(debate_id, reason, owner)
        await stream.status("failed", reason)
        return Outcome(status="failed", turns_written=written)
    finally:
        renewer.cancel()


class _LeaseLost(Exception):
    pass


async def _keep_lease(debate_id: int, owner: str) -> None:
    from django.conf import settings

    interval = max(1.0, settings.ARENA_LEASE_SECONDS / 3)
    while True:
        await asyncio.sleep(interval)
        await sync_to_async(services.renew_lease)(debate_id, owner)


def _load(debate_id: int, model_factory: Callable[..., ModelAPI] | None) -> _Context:
    debate = Debate.objects.select_related("question", "constitution", "debater_a", "debater_b").get(pk=debate_id)
    protocol = make_protocol(debate.protocol, debate.settings)
    models: dict[int, ModelAPI] = {}
    names: dict[int, str] = {}
    for side in (0, 1):
        profile = debate.debater_a if side == 0 else debate.debater_b
        spec = profile.backend_spec()
        api = model_factory(spec) if model_factory else get_backend(spec)
        models[side] = ResilientModel(api)
        names[side] = profile.model_label
    turns = {t.index: t for t in Turn.objects.filter(debate_id=debate_id)}
    return _Context(
        debate=debate,
        protocol=protocol,
        limits=protocol.limits,
        models=models,
        model_names=names,
        preamble=debate.constitution.preamble,
        principles=principles_text(debate.constitution),
        source=SourceIndex(debate.question.source_text),
        turns=turns,
    )


def _excerpts(ctx: _Context, side: int) -> str:
    if side not in ctx.excerpts:
        question = ctx.debate.question
        budget = ctx.limits.context_tokens
        if budget is None:
            ctx.excerpts[side] = question.source_text
        else:
            query = f"{question.question} {question.answers[side]}"
            passages = select_passages(question.source_text, query, budget, ctx.models[side].count_tokens)
            ctx.excerpts[side] = render_excerpts(passages)
    return ctx.excerpts[side]


async def _speak(ctx: _Context, slot: Slot, owner: str, stream: DebateStream) -> bool:
    question = ctx.debate.question
    profile = ctx.debate.debater_a if slot.side == 0 else ctx.debate.debater_b
    excerpts = await sync_to_async(_excerpts, thread_sensitive=False)(ctx, slot.side)
    view = DebaterView(
        question=question.question,
        answers=(question.answers[0], question.answers[1]),
        side=slot.side,
        round=slot.round,
        rounds=ctx.limits.rounds,
        word_limit=ctx.limits.word_limit,
        excerpts=excerpts,
        transcript=tuple(
            SpeechRecord(ctx.turns[i].side, ctx.turns[i].round, ctx.turns[i].text) for i in slot.visible
        ),
        source_title=question.source_title,
        whole_source=ctx.limits.context_tokens is None,
    )
    messages = debater_messages(ctx.preamble, ctx.principles, view)
    profile_max = int((profile.sampling or {}).get("max_tokens", ctx.limits.max_tokens))
    params = profile.sampling_params().replace(
        max_tokens=min(ctx.limits.max_tokens, profile_max), seed=ctx.debate.seed * 100 + slot.index
    )
    request = GenerateRequest(messages=tuple(messages), params=params)
    model = ctx.models[slot.side]
    await stream.start_turn(slot.index, slot.round, slot.side)
    started = timezone.now()
    final: Final | None = None
    for attempt in range(1, MAX_TURN_ATTEMPTS + 1):
        try:
            async for item in model.generate(request):
                if isinstance(item, Delta):
                    await stream.push(slot.index, item.text)
                else:
                    final = item
            break
        except StreamInterrupted as exc:
            # Text already went to the judges: retract it before generating the turn again.
            await stream.reset_turn(slot.index, f"stream interrupted ({exc.message}); regenerating")
            if attempt == MAX_TURN_ATTEMPTS:
                raise
    assert final is not None
    record = _record(ctx, slot, messages, final, started, timezone.now())
    turn = await sync_to_async(services.commit_turn)(ctx.debate.pk, owner, record)
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


def _record(ctx: _Context, slot: Slot, messages: list[dict[str, str]], final: Final, started: datetime, ended: datetime) -> services.TurnRecord:
    checks = check_quotes(final.text, ctx.source)
    return services.TurnRecord(
        index=slot.index,
        round=slot.round,
        side=slot.side,
        text=final.text,
        quotes=[c.to_dict() for c in checks],
        prompt=messages,
        prompt_hash=prompt_hash(messages),
        prompt_tokens=final.prompt_tokens,
        completion_tokens=final.completion_tokens,
        finish_reason=final.finish_reason,
        model_name=ctx.model_names[slot.side],
        started_at=started,
        finished_at=ended,
        meta={"attempts": 1},
    )
