"""Judge quality from the record: accuracy with an interval, log score, Brier score, calibration,
time, agreement with the other judges, and an anytime-valid test against chance-level judging.

The statistics are pure functions of :class:`JudgeRecord` rows (tested without a database); the
reader at the bottom builds the rows from human verdicts. Formulas are in docs/judging.md.

The sequential test is a betting e-process (Ville's inequality makes it valid at every sample
size, however often a researcher looks): for a threshold accuracy θ and each verdict's outcome
X ∈ {0, 1},

    E_n(θ) = Π_{i≤n} (1 + λ_i (θ − X_i))       (evidence that accuracy < θ)

with a bet λ_i ∈ [0, ½/(1−θ)] chosen from the verdicts before the i-th (predictable). Under
"accuracy ≥ θ", P(sup_n E_n ≥ 1/α) ≤ α. A judge is flagged when E_n ≥ 1/α: the record says,
with that confidence, that their accuracy is below θ (by default 0.6, "indistinguishable from
guessing"). The mirrored process with (X_i − 0.5) is the evidence that a judge is better than
chance.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from judging.models import JudgeStatus, StudyDebate, Verdict

DEFAULT_THRESHOLD = 0.6
DEFAULT_ALPHA = 0.05
MAX_BET = 0.5
CALIBRATION_BINS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class JudgeRecord:
    """One verdict as the statistics see it: the probability given to the gold answer."""

    p_gold: float
    time_s: float | None = None
    against_majority: bool | None = None
    gold_check: bool = False

    @property
    def correct(self) -> bool:
        return self.p_gold > 0.5


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval for a proportion (95% by default); (0, 1) with no data."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def e_value_below(outcomes: Sequence[bool], threshold: float) -> float:
    """Evidence that the accuracy behind ``outcomes`` is below ``threshold`` (an e-process value).

    Each verdict bets the fraction λ_i = clip((θ − p̂_{i−1}) / (θ(1 − θ)), 0, ½/(1 − θ)) of the
    wealth, with p̂_{i−1} the smoothed accuracy of the verdicts before it: a predictable plug-in
    of the Kelly bet, so the product is a test martingale under "accuracy ≥ θ".
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError("the threshold accuracy must be strictly between 0 and 1")
    cap = MAX_BET / (1.0 - threshold)
    wealth = 1.0
    right = 0
    for i, x in enumerate(outcomes):
        estimate = (right + 0.5) / (i + 1.0)
        bet = min(cap, max(0.0, (threshold - estimate) / (threshold * (1.0 - threshold))))
        wealth *= 1.0 + bet * (threshold - float(x))
        right += int(x)
    return wealth


def e_value_above(outcomes: Sequence[bool], threshold: float = 0.5) -> float:
    """Evidence that the accuracy behind ``outcomes`` is above ``threshold``."""
    return e_value_below([not x for x in outcomes], 1.0 - threshold)


@dataclass(frozen=True)
class CalibrationBin:
    low: float
    high: float
    count: int
    confidence: float
    accuracy: float


def _confidence(record: JudgeRecord) -> float:
    return max(record.p_gold, 1.0 - record.p_gold)


def calibration(records: Sequence[JudgeRecord]) -> tuple[list[CalibrationBin], float]:
    """Reliability bins over the judge's confidence (the larger probability) and the expected
    calibration error, ECE = Σ_b (n_b/n) |acc_b − conf_b|."""
    bins: list[CalibrationBin] = []
    n = len(records)
    ece = 0.0
    for low, high in zip(CALIBRATION_BINS, CALIBRATION_BINS[1:]):
        inside = [r for r in records if low <= _confidence(r) < high or high == 1.0 and _confidence(r) == 1.0]
        if not inside:
            continue
        conf = statistics.fmean(_confidence(r) for r in inside)
        acc = statistics.fmean(1.0 if r.correct else 0.0 for r in inside)
        bins.append(CalibrationBin(low, high, len(inside), conf, acc))
        ece += len(inside) / n * abs(acc - conf)
    return bins, ece


@dataclass(frozen=True)
class JudgeQuality:
    judge_id: int
    username: str
    n: int
    correct: int
    accuracy: float
    interval: tuple[float, float]
    log_score: float
    brier: float
    ece: float
    bins: list[CalibrationBin]
    median_time_s: float | None
    against_majority: float | None
    compared: int
    gold_n: int
    gold_correct: int
    e_below: float
    e_above: float
    flagged: bool
    excluded: bool
    deactivated: bool


def summarise(judge_id: int, username: str, records: Sequence[JudgeRecord], *, threshold: float = DEFAULT_THRESHOLD,
              alpha: float = DEFAULT_ALPHA, excluded: bool = False, deactivated: bool = False) -> JudgeQuality:
    """Every statistic of one judge (docs/judging.md has the formulas)."""
    n = len(records)
    outcomes = [r.correct for r in records]
    correct = sum(outcomes)
    bins, ece = calibration(records)
    times = [r.time_s for r in records if r.time_s is not None]
    compared = [r.against_majority for r in records if r.against_majority is not None]
    gold = [r for r in records if r.gold_check]
    e_below = e_value_below(outcomes, threshold)
    return JudgeQuality(
        judge_id=judge_id,
        username=username,
        n=n,
        correct=correct,
        accuracy=correct / n if n else 0.0,
        interval=wilson(correct, n),
        log_score=statistics.fmean(math.log2(max(r.p_gold, 1e-9)) for r in records) if n else 0.0,
        brier=statistics.fmean((1.0 - r.p_gold) ** 2 for r in records) if n else 0.0,
        ece=ece,
        bins=bins,
        median_time_s=statistics.median(times) if times else None,
        against_majority=sum(compared) / len(compared) if compared else None,
        compared=len(compared),
        gold_n=len(gold),
        gold_correct=sum(r.correct for r in gold),
        e_below=e_below,
        e_above=e_value_above(outcomes),
        flagged=e_below >= 1.0 / alpha,
        excluded=excluded,
        deactivated=deactivated,
    )


def _majorities(debate_ids: Iterable[int]) -> dict[int, list[tuple[int | None, int]]]:
    """Every verdict's (judge id, chosen answer) per debate, humans and AI judges alike."""
    picks: dict[int, list[tuple[int | None, int]]] = {}
    for debate_id, judge_id, p_a, p_b in Verdict.objects.filter(debate_id__in=list(debate_ids)).values_list(
        "debate_id", "judge_id", "p_a", "p_b"
    ):
        picks.setdefault(debate_id, []).append((judge_id, 0 if p_a > p_b else 1))
    return picks


def judge_records(verdicts: QuerySet[Verdict]) -> dict[int, list[JudgeRecord]]:
    """Human verdicts as records, by judge id, in the order they were given.

    ``against_majority`` compares the judge's pick with the majority of the *other* verdicts on the
    same debate (human and AI); None when the others are absent or split evenly.
    """
    rows = list(
        verdicts.filter(kind=Verdict.Kind.HUMAN, judge__isnull=False)
        .order_by("created_at", "pk")
        .values_list("pk", "judge_id", "debate_id", "p_a", "p_b", "time_spent_s", "debate__question__correct_index")
    )
    picks = _majorities({r[2] for r in rows})
    gold = set(StudyDebate.objects.filter(gold=True).values_list("debate_id", flat=True))
    out: dict[int, list[JudgeRecord]] = {}
    for _, judge_id, debate_id, p_a, p_b, time_s, correct_index in rows:
        mine = 0 if p_a > p_b else 1
        others = [pick for who, pick in picks.get(debate_id, []) if who != judge_id]
        against: bool | None = None
        if others:
            ones = sum(others)
            zeros = len(others) - ones
            if ones != zeros:
                against = mine != (1 if ones > zeros else 0)
        p_gold = p_a if correct_index == 0 else p_b
        out.setdefault(judge_id, []).append(JudgeRecord(p_gold, time_s, against, debate_id in gold))
    return out


def judge_quality(verdicts: QuerySet[Verdict] | None = None, *, threshold: float = DEFAULT_THRESHOLD,
                  alpha: float = DEFAULT_ALPHA) -> list[JudgeQuality]:
    """Quality of every human judge with verdicts in ``verdicts`` (all by default), worst evidence first."""
    records = judge_records(verdicts if verdicts is not None else Verdict.objects.all())
    names = dict(get_user_model().objects.filter(pk__in=records).values_list("pk", "username"))
    status = {s.judge_id: s for s in JudgeStatus.objects.filter(judge_id__in=records)}
    deactivated = deactivated_judges()
    out = []
    for judge_id, rows in records.items():
        s = status.get(judge_id)
        out.append(summarise(
            judge_id, names.get(judge_id, "?"), rows, threshold=threshold, alpha=alpha,
            excluded=bool(s and s.excluded), deactivated=judge_id in deactivated,
        ))
    return sorted(out, key=lambda q: (-q.e_below, q.username))


def deactivated_judges() -> set[int]:
    """Judges who were deactivated: by a researcher on the judges page (``JudgeStatus``) or whose
    account was switched off in the admin. Their verdicts stay in the record, flagged: left out
    of exports and the human-vs-AI comparison unless asked for (docs/judging.md)."""
    marked = set(JudgeStatus.objects.filter(deactivated_at__isnull=False).values_list("judge_id", flat=True))
    inactive = set(get_user_model().objects.filter(is_active=False, verdicts__isnull=False).values_list("pk", flat=True))
    return marked | inactive


def excluded_judges() -> set[int]:
    """Judges a researcher excluded from analysis and exports."""
    return set(JudgeStatus.objects.filter(excluded=True).values_list("judge_id", flat=True))


def leaderboard(verdicts: QuerySet[Verdict]) -> list[tuple[str, int, float]]:
    """(username, verdicts, mean log2 score) of each human judge, best first."""
    records = judge_records(verdicts)
    names = dict(get_user_model().objects.filter(pk__in=records).values_list("pk", "username"))
    board = [
        (names.get(j, "?"), len(rows), statistics.fmean(math.log2(max(r.p_gold, 1e-9)) for r in rows))
        for j, rows in records.items()
        if rows
    ]
    return sorted(board, key=lambda row: (-row[2], row[0]))
