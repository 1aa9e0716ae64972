"""A tournament's progress: counts, rates and an estimate of the time left, from the database (so
every worker's work is included)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from arena.engine.protocol import ProtocolError, make_protocol
from arena.models import Debate, Tournament, Turn
from arena.tournaments.running import recorded_judge_errors
from judging.models import Verdict


@dataclass(frozen=True)
class Progress:
    status: str
    total: int
    queued: int
    running: int
    finished: int
    failed: int
    cancelled: int
    turns_done: int
    turns_total: int
    verdicts: int
    verdicts_expected: int
    judge_errors: int
    completion_tokens: int
    active_s: float
    tokens_per_s: float | None
    eta_s: float | None

    @property
    def done(self) -> int:
        return self.finished + self.failed + self.cancelled

    @property
    def fraction(self) -> float:
        """Share of the work done: turns and verdicts, each weighted as one unit."""
        total = self.turns_total + self.verdicts_expected
        if total == 0:
            return 1.0 if self.status == Tournament.Status.FINISHED else 0.0
        return min(1.0, (self.turns_done + self.verdicts + self.judge_errors) / total)

    def as_dict(self) -> dict[str, object]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["done"] = self.done
        data["fraction"] = round(self.fraction, 4)
        return data


def _turns_per_debate(protocol: str, settings: Mapping[str, object]) -> int:
    try:
        return make_protocol(protocol, settings).total_turns()
    except ProtocolError:
        return 0


def progress(tournament: Tournament) -> Progress:
    """Counts and rates computed from the database (so every worker's work is included)."""
    counts = dict(
        Debate.objects.filter(tournament=tournament).values_list("status").annotate(n=Count("pk")).values_list("status", "n")
    )
    total = sum(counts.values())
    dead = (Debate.Status.FAILED, Debate.Status.CANCELLED)
    # Failed and cancelled debates will never get their missing turns: count only the ones they have.
    turns_total = 0
    alive = Debate.objects.filter(tournament=tournament).exclude(status__in=dead)
    for protocol, n in alive.values_list("protocol").annotate(n=Count("pk")).values_list("protocol", "n"):
        sample = alive.filter(protocol=protocol).values_list("settings", flat=True).first()
        turns_total += n * _turns_per_debate(protocol, sample or {})
    turn_stats = Turn.objects.filter(debate__tournament=tournament).aggregate(
        n=Count("pk"), tokens=Sum("completion_tokens"), dead=Count("pk", filter=Q(debate__status__in=dead)),
        last=Max("finished_at"),
    )
    turns_total += int(turn_stats["dead"] or 0)
    judges = len((tournament.config or {}).get("judges", []))
    verdict_stats = Verdict.objects.filter(debate__tournament=tournament, kind=Verdict.Kind.AI).aggregate(
        n=Count("pk"), last=Max("created_at")
    )
    verdicts = int(verdict_stats["n"] or 0)
    judge_errors = len(recorded_judge_errors(tournament))
    stats = tournament.stats or {}
    active_s = float(stats.get("active_s", 0.0) or 0.0)
    resumed = stats.get("resumed_at")
    now = timezone.now()
    # Running time since the last speech or verdict landed (0 when the run has not resumed since).
    idle_s = 0.0
    if tournament.status == Tournament.Status.RUNNING and isinstance(resumed, str):
        resumed_at = datetime.fromisoformat(resumed)
        active_s += max(0.0, (now - resumed_at).total_seconds())
        landed = [t for t in (turn_stats["last"], verdict_stats["last"]) if t is not None]
        idle_s = max(0.0, (now - max([resumed_at, *landed])).total_seconds())
    tokens = int(turn_stats["tokens"] or 0)
    turns_done = int(turn_stats["n"] or 0)
    tokens_per_s = tokens / active_s if active_s > 0 and tokens else None
    verdicts_expected = judges * counts.get(Debate.Status.FINISHED, 0) + judges * (
        counts.get(Debate.Status.QUEUED, 0) + counts.get(Debate.Status.RUNNING, 0)
    )
    work_done = turns_done + verdicts + judge_errors
    work_total = max(turns_total, turns_done) + verdicts_expected
    eta_s: float | None = None
    if tournament.status == Tournament.Status.RUNNING and work_done > 0 and active_s > idle_s:
        # The rate as of the last piece of work, counted down since: waiting for the next speech or
        # verdict (AI verdicts land a chunk at a time) shortens the estimate instead of stretching it.
        eta_s = max(0.0, (active_s - idle_s) * max(0, work_total - work_done) / work_done - idle_s)
    return Progress(
        status=tournament.status,
        total=total,
        queued=counts.get(Debate.Status.QUEUED, 0),
        running=counts.get(Debate.Status.RUNNING, 0),
        finished=counts.get(Debate.Status.FINISHED, 0),
        failed=counts.get(Debate.Status.FAILED, 0),
        cancelled=counts.get(Debate.Status.CANCELLED, 0),
        turns_done=turns_done,
        turns_total=max(turns_total, turns_done),
        verdicts=verdicts,
        verdicts_expected=verdicts_expected,
        judge_errors=judge_errors,
        completion_tokens=tokens,
        active_s=active_s,
        tokens_per_s=tokens_per_s,
        eta_s=eta_s if eta_s is None or math.isfinite(eta_s) else None,
    )
