"""The work of a running tournament: what is left, chunks of debates run in lockstep, the panel's
verdicts, finishing; and the whole tournament inline in one process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from arena.models import Debate, Tournament
from arena.runner import run_debates
from arena.tournaments.control import ACTIVE, TournamentStateError, resume, set_status, start
from arena.tournaments.definition import DEFAULT_CHUNK
from debaters.backends.base import BackendError, BackendSpec, ModelAPI
from judging.ai_verdicts import give_ai_verdict
from judging.models import JudgeProfile, Verdict

ModelFactory = Callable[[BackendSpec], ModelAPI]


def panel(tournament: Tournament) -> list[JudgeProfile]:
    names = list((tournament.config or {}).get("judges", []))
    found = {j.name: j for j in JudgeProfile.objects.filter(name__in=names)}
    return [found[n] for n in names if n in found]


def recorded_judge_errors(tournament: Tournament) -> dict[str, str]:
    errors = (tournament.stats or {}).get("judge_errors", {})
    return dict(errors) if isinstance(errors, dict) else {}


def unjudged_debate_ids(tournament: Tournament, judges: Sequence[JudgeProfile] | None = None) -> list[int]:
    """Finished debates still missing a verdict from some judge of the panel (failed judgings,
    recorded in the tournament's stats, do not count as missing)."""
    judges = panel(tournament) if judges is None else judges
    if not judges:
        return []
    failed = recorded_judge_errors(tournament)
    finished = list(
        Debate.objects.filter(tournament=tournament, status=Debate.Status.FINISHED).values_list("pk", flat=True)
    )
    have = set(
        Verdict.objects.filter(debate__tournament=tournament, ai_judge__in=judges).values_list("debate_id", "ai_judge_id")
    )
    return [d for d in finished if any((d, j.pk) not in have and f"{d}:{j.pk}" not in failed for j in judges)]


def remaining_debate_ids(tournament: Tournament) -> list[int]:
    """Debates with work left: not over yet, or finished and not yet judged by the whole panel."""
    active = list(
        Debate.objects.filter(tournament=tournament, status__in=ACTIVE).order_by("pk").values_list("pk", flat=True)
    )
    return sorted(set(active) | set(unjudged_debate_ids(tournament)))


def chunks(ids: Sequence[int], size: int) -> list[list[int]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


@dataclass
class ChunkResult:
    """What one chunk did. ``stopped`` is the tournament status that stopped it early (paused or
    cancelled), ``retry`` the debates another worker still holds, with the seconds to wait."""

    outcomes: dict[int, str] = field(default_factory=dict)
    verdicts: int = 0
    judge_errors: int = 0
    stopped: str | None = None
    retry: list[int] = field(default_factory=list)
    retry_after: float = 0.0


def tournament_status(tournament_id: int) -> str:
    return Tournament.objects.values_list("status", flat=True).get(pk=tournament_id)


def _release(debate_ids: Sequence[int], owner: str, status: str) -> None:
    """Give up debates this owner still holds after its run was stopped."""
    if status == Tournament.Status.CANCELLED:
        Debate.objects.filter(pk__in=debate_ids, status__in=ACTIVE).update(
            status=Debate.Status.CANCELLED, lease_expires=None, finished_at=timezone.now(), error="tournament cancelled"
        )
    else:
        Debate.objects.filter(pk__in=debate_ids, lease_owner=owner, status=Debate.Status.RUNNING).update(
            status=Debate.Status.QUEUED, lease_owner="", lease_expires=None
        )


def _record_judge_error(tournament_id: int, debate_id: int, judge_id: int, message: str) -> None:
    with transaction.atomic():
        tournament = Tournament.objects.select_for_update().get(pk=tournament_id)
        stats = dict(tournament.stats or {})
        errors = dict(stats.get("judge_errors", {}) or {})
        errors[f"{debate_id}:{judge_id}"] = message[:500]
        stats["judge_errors"] = errors
        tournament.stats = stats
        tournament.save(update_fields=["stats"])


async def judge_debates(
    tournament_id: int, debate_ids: Sequence[int], *, model_factory: ModelFactory | None = None
) -> tuple[int, int]:
    """Every panel judge gives its verdict on each finished debate of ``debate_ids`` that lacks one.

    All (debate, judge) pairs are scored concurrently so the backend batches them. A permanent
    backend failure is recorded in the tournament's stats (and that pair is not retried); a
    transient one is raised so the task is retried. Returns (verdicts stored, permanent failures).
    """

    def _pending() -> list[tuple[int, int]]:
        tournament = Tournament.objects.get(pk=tournament_id)
        judges = panel(tournament)
        if not judges:
            return []
        failed = recorded_judge_errors(tournament)
        finished = set(
            Debate.objects.filter(pk__in=debate_ids, status=Debate.Status.FINISHED).values_list("pk", flat=True)
        )
        have = set(Verdict.objects.filter(debate_id__in=finished, ai_judge__in=judges).values_list("debate_id", "ai_judge_id"))
        return [
            (d, j.pk)
            for d in sorted(finished)
            for j in judges
            if (d, j.pk) not in have and f"{d}:{j.pk}" not in failed
        ]

    pairs = await sync_to_async(_pending)()
    results = await asyncio.gather(
        *(give_ai_verdict(d, j, model_factory=model_factory) for d, j in pairs), return_exceptions=True
    )
    stored = failures = 0
    transient: BaseException | None = None
    for (debate_id, judge_id), result in zip(pairs, results):
        if isinstance(result, BackendError) and result.permanent:
            failures += 1
            await sync_to_async(_record_judge_error)(tournament_id, debate_id, judge_id, result.message)
        elif isinstance(result, BaseException):
            transient = transient or result
        elif result is not None:
            stored += 1
    if transient is not None:
        raise transient
    return stored, failures


async def run_chunk(
    tournament_id: int,
    debate_ids: Sequence[int],
    owner: str,
    *,
    model_factory: ModelFactory | None = None,
    on_turn: Callable[[int, int], None] | None = None,
    poll_s: float = 1.0,
) -> ChunkResult:
    """Run these debates in lockstep, then judge the finished ones.

    Safe to call again with the same ids (after a crash, a redelivery, a duplicate dispatch):
    finished debates are not claimable, so they are not run again; debates another worker holds
    come back in ``retry``; verdicts that exist are not given again.
    """
    status = await sync_to_async(tournament_status)(tournament_id)
    if status != Tournament.Status.RUNNING:
        return ChunkResult(stopped=status)
    runner = asyncio.ensure_future(run_debates(list(debate_ids), owner, model_factory=model_factory, on_turn=on_turn))
    while True:
        done, _ = await asyncio.wait({runner}, timeout=poll_s)
        if done:
            break
        status = await sync_to_async(tournament_status)(tournament_id)
        if status != Tournament.Status.RUNNING:
            runner.cancel()
            try:
                await runner
            except asyncio.CancelledError:
                pass
            await sync_to_async(_release)(debate_ids, owner, status)
            return ChunkResult(stopped=status)
    outcomes = runner.result()
    result = ChunkResult(outcomes={d: o.status for d, o in outcomes.items()})
    for debate_id, outcome in outcomes.items():
        if outcome.status == "held-elsewhere":
            result.retry.append(debate_id)
            result.retry_after = max(result.retry_after, outcome.retry_after or 1.0)
    if await sync_to_async(tournament_status)(tournament_id) != Tournament.Status.RUNNING:
        result.stopped = await sync_to_async(tournament_status)(tournament_id)
        return result
    result.verdicts, result.judge_errors = await judge_debates(tournament_id, debate_ids, model_factory=model_factory)
    return result


def maybe_finish(tournament_id: int) -> bool:
    """Mark the tournament finished once no debate is left to run or judge. True if this call did."""
    tournament = Tournament.objects.get(pk=tournament_id)
    if tournament.status != Tournament.Status.RUNNING or remaining_debate_ids(tournament):
        return False
    counts = dict(
        Debate.objects.filter(tournament=tournament).values_list("status").annotate(n=Count("pk")).values_list("status", "n")
    )
    total = sum(counts.values())
    failed = counts.get(Debate.Status.FAILED, 0)
    status = Tournament.Status.FAILED if total and failed == total else Tournament.Status.FINISHED
    try:
        finished = set_status(tournament_id, [Tournament.Status.RUNNING], status, running=False)
    except TournamentStateError:
        return False
    if failed:
        Tournament.objects.filter(pk=finished.pk).update(error=f"{failed} of {total} debates failed")
    return True


async def run_inline(
    tournament_id: int,
    owner: str,
    *,
    concurrency: int = 2,
    model_factory: ModelFactory | None = None,
    on_turn: Callable[[int, int], None] | None = None,
    on_chunk: Callable[[ChunkResult], None] | None = None,
) -> str:
    """Run every remaining chunk here, ``concurrency`` chunks at a time (their requests meet in the
    backend's batches). Returns the tournament's final status (or paused/cancelled)."""
    tournament = await sync_to_async(Tournament.objects.get)(pk=tournament_id)
    if tournament.status == Tournament.Status.PENDING:
        await sync_to_async(start)(tournament_id, enqueue=False)
    elif tournament.status == Tournament.Status.PAUSED:
        await sync_to_async(resume)(tournament_id, enqueue=False)
    chunk_size = int((tournament.config or {}).get("chunk_size", DEFAULT_CHUNK))
    while True:
        tournament = await sync_to_async(Tournament.objects.get)(pk=tournament_id)
        if tournament.status != Tournament.Status.RUNNING:
            return tournament.status
        remaining = await sync_to_async(remaining_debate_ids)(tournament)
        if not remaining:
            await sync_to_async(maybe_finish)(tournament_id)
            return await sync_to_async(tournament_status)(tournament_id)
        queue = chunks(remaining, chunk_size)
        semaphore = asyncio.Semaphore(max(1, concurrency))

        async def _one(ids: list[int]) -> ChunkResult:
            async with semaphore:
                result = await run_chunk(tournament_id, ids, owner, model_factory=model_factory, on_turn=on_turn)
            if on_chunk is not None:
                on_chunk(result)
            return result

        results = await asyncio.gather(*(_one(ids) for ids in queue))
        waits = [r.retry_after for r in results if r.retry]
        if any(r.stopped for r in results):
            return await sync_to_async(tournament_status)(tournament_id)
        if waits:
            # Another process holds some debates (or held them before it died): wait out its lease.
            await asyncio.sleep(min(max(waits), float(django_settings.ARENA_LEASE_SECONDS) + 1))
