"""Ratings, accuracy, calibration and bias computed from stored verdicts, and nothing else.

:func:`load_rows` is the one selector: it reads the verdicts a :class:`VerdictFilter` selects (human
and AI alike, arena and imported alike) as flat :class:`VerdictRow` records. Everything else here is
a pure function of those rows, built on :mod:`judging.ratings`:

* debater ratings: Bradley–Terry on aggregated outcomes (a verdict is a win for the debater whose
  answer got the higher probability; an exact 50/50 is half a win each), percentile-bootstrap
  intervals (100 rounds by default), ranks that separate only non-overlapping intervals, Elo scale;
  the same with each debater split into arguing the right and arguing the wrong answer (Khan et
  al. 2024);
* judge accuracy per protocol, per judge and per NYU condition, with Wilson intervals and the same
  interval-aware ranks;
* judge accuracy against debater rating (the headline plot of the debate literature);
* calibration (Brier, expected calibration error, log score, reliability diagram);
* side bias (towards answer 1, whose debater speaks first) and position bias (towards the answer
  shown first), with intervals.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from judging import ratings as rt
from judging.models import Verdict

KINDS = ("any", "human", "ai")
ROLES = ("any", "live", "offline")


class FilterError(ValueError):
    """A filter value is not acceptable; the message says which and why."""


@dataclass(frozen=True)
class VerdictFilter:
    """Which verdicts an analysis reads. Empty fields select everything."""

    tournament: int | None = None
    kind: str = "any"
    origin: str = ""
    protocol: str = ""
    judge: str = ""
    role: str = "any"
    included_in_paper: bool | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> VerdictFilter:
        """From query parameters; raises :class:`FilterError` on a bad value."""
        tournament: int | None = None
        raw = (params.get("tournament") or "").strip()
        if raw:
            if not raw.isdigit():
                raise FilterError("tournament must be a tournament id")
            tournament = int(raw)
        kind = (params.get("kind") or "any").strip()
        if kind not in KINDS:
            raise FilterError(f"kind must be one of {', '.join(KINDS)}")
        role = (params.get("role") or "any").strip()
        if role not in ROLES:
            raise FilterError(f"role must be one of {', '.join(ROLES)}")
        paper_raw = (params.get("paper") or "").strip()
        if paper_raw not in ("", "yes", "no"):
            raise FilterError("paper must be yes, no or empty")
        return cls(
            tournament=tournament,
            kind=kind,
            origin=(params.get("origin") or "").strip()[:20],
            protocol=(params.get("protocol") or "").strip()[:40],
            judge=(params.get("judge") or "").strip()[:300],
            role=role,
            included_in_paper=None if paper_raw == "" else paper_raw == "yes",
        )

    def as_params(self) -> dict[str, str]:
        out = {
            "tournament": "" if self.tournament is None else str(self.tournament),
            "kind": self.kind,
            "origin": self.origin,
            "protocol": self.protocol,
            "judge": self.judge,
            "role": self.role,
            "paper": "" if self.included_in_paper is None else ("yes" if self.included_in_paper else "no"),
        }
        return {k: v for k, v in out.items() if v and v != "any"}


@dataclass(frozen=True)
class VerdictRow:
    verdict_id: int
    debate_id: int
    tournament_id: int | None
    protocol: str
    kind: str
    origin: str
    judge: str
    debater_a: str
    debater_b: str
    correct_index: int
    p_a: float
    p_b: float
    shown_first: int
    correct: bool
    position_bias: float | None
    by_order: tuple[tuple[float, float], tuple[float, float]] | None
    condition: str
    included_in_paper: bool | None
    role: str

    @property
    def p_correct(self) -> float:
        return self.p_a if self.correct_index == 0 else self.p_b

    @property
    def confidence(self) -> float:
        return max(self.p_a, self.p_b)

    @property
    def p_first(self) -> float:
        """Probability given to the answer this judge saw first."""
        return self.p_a if self.shown_first == 0 else self.p_b

    @property
    def self_play(self) -> bool:
        return self.debater_a == self.debater_b


def _by_order(meta: object) -> tuple[tuple[float, float], tuple[float, float]] | None:
    if not isinstance(meta, Mapping):
        return None
    value = meta.get("by_order")
    try:
        (a0, b0), (a1, b1) = value  # type: ignore[misc]
        return (float(a0), float(b0)), (float(a1), float(b1))
    except (TypeError, ValueError):
        return None


def _judge_name(kind: str, origin: str, label: str, judge_id: int | None) -> str:
    if label:
        return label
    if kind == Verdict.Kind.HUMAN and judge_id is not None:
        # Researchers compare judges; the analysis never needs to know who they are.
        return f"judge #{judge_id}"
    return f"{kind} judge"


def load_rows(flt: VerdictFilter | None = None) -> list[VerdictRow]:
    """The selected verdicts as rows, oldest first (a stable order keeps bootstraps reproducible)."""
    flt = flt or VerdictFilter()
    qs = Verdict.objects.all()
    if flt.tournament is not None:
        qs = qs.filter(debate__tournament_id=flt.tournament)
    if flt.kind != "any":
        qs = qs.filter(kind=flt.kind)
    if flt.origin:
        qs = qs.filter(origin=flt.origin)
    if flt.protocol:
        qs = qs.filter(debate__protocol=flt.protocol)
    if flt.judge:
        qs = qs.filter(judge_label=flt.judge)
    if flt.role != "any":
        qs = qs.filter(meta__role=flt.role)
    if flt.included_in_paper is not None:
        qs = qs.filter(debate__settings__nyu__included_in_paper=flt.included_in_paper)
    values = qs.order_by("pk").values_list(
        "pk",
        "debate_id",
        "debate__tournament_id",
        "debate__protocol",
        "kind",
        "origin",
        "judge_label",
        "judge_id",
        "debate__debater_a__name",
        "debate__debater_b__name",
        "debate__question__correct_index",
        "p_a",
        "p_b",
        "shown_first",
        "correct",
        "position_bias",
        "meta",
        "debate__settings",
    )
    rows: list[VerdictRow] = []
    for (pk, debate_id, tournament_id, protocol, kind, origin, label, judge_id, a, b, gold, p_a, p_b, shown, correct, bias, meta, settings) in values:
        nyu = settings.get("nyu") if isinstance(settings, Mapping) else None
        nyu = nyu if isinstance(nyu, Mapping) else {}
        rows.append(
            VerdictRow(
                verdict_id=pk,
                debate_id=debate_id,
                tournament_id=tournament_id,
                protocol=protocol,
                kind=kind,
                origin=origin,
                judge=_judge_name(kind, origin, label, judge_id),
                debater_a=a,
                debater_b=b,
                correct_index=gold,
                p_a=p_a,
                p_b=p_b,
                shown_first=shown,
                correct=correct,
                position_bias=bias,
                by_order=_by_order(meta),
                condition=str(nyu.get("condition") or ""),
                included_in_paper=nyu.get("included_in_paper") if isinstance(nyu.get("included_in_paper"), bool) else None,
                role=str((meta or {}).get("role") or ("ai" if kind == Verdict.Kind.AI else "live")),
            )
        )
    return rows


# ---------------------------------------------------------------------------------------
# Ratings
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rating:
    name: str
    strength: float
    lower: float
    upper: float
    elo: float
    elo_lower: float
    elo_upper: float
    rank: int
    games: float
    wins: float

    @property
    def win_rate(self) -> float:
        return self.wins / self.games if self.games else math.nan


@dataclass(frozen=True)
class RatingTable:
    ratings: list[Rating]
    records: int
    rounds: int
    ci: float
    excluded: int = 0  # verdicts of self-play or of protocols with fewer than two speakers

    def by_name(self) -> dict[str, Rating]:
        return {r.name: r for r in self.ratings}


def two_speakers(protocol: str) -> bool:
    """Whether two debaters argue against each other under this protocol (only those are rated)."""
    from arena.engine.protocol import PROTOCOLS

    cls = PROTOCOLS.get(protocol)
    return cls is None or int(getattr(cls, "speakers", 2)) >= 2


def _outcomes(rows: Iterable[VerdictRow], players: Callable[[VerdictRow], tuple[str, str] | None]) -> list[tuple[str, str, float]]:
    """(winner, loser, weight) records: one per decisive verdict, two half records for a 50/50."""
    records: list[tuple[str, str, float]] = []
    for row in rows:
        pair = players(row) if two_speakers(row.protocol) else None
        if pair is None:
            continue
        a, b = pair
        if row.p_a > row.p_b:
            records.append((a, b, 1.0))
        elif row.p_b > row.p_a:
            records.append((b, a, 1.0))
        else:
            records.append((a, b, 0.5))
            records.append((b, a, 0.5))
    return records


def fit_ratings(records: Sequence[tuple[str, str, float]], *, rounds: int = 100, seed: int = 0, ci: float = 0.95) -> RatingTable:
    """Bradley–Terry with bootstrap intervals over named (winner, loser, weight) records."""
    names = sorted({r[0] for r in records} | {r[1] for r in records})
    if not names:
        return RatingTable([], 0, rounds, ci)
    index = {n: i for i, n in enumerate(names)}
    winners = np.array([index[w] for w, _, _ in records], dtype=np.intp)
    losers = np.array([index[l] for _, l, _ in records], dtype=np.intp)
    weights = np.array([x for _, _, x in records], dtype=np.float64)
    use_weights = None if np.all(weights == 1.0) else weights
    result = rt.bootstrap_bradley_terry(winners, losers, len(names), rounds=rounds, seed=seed, weights=use_weights, ci=ci)
    elo = rt.elo_scale(result.strengths)
    elo_lo = rt.elo_scale(result.lower)
    elo_hi = rt.elo_scale(result.upper)
    ranks = rt.rank_by_intervals(result.lower, result.upper)
    games = np.zeros(len(names))
    wins = np.zeros(len(names))
    np.add.at(games, winners, weights)
    np.add.at(games, losers, weights)
    np.add.at(wins, winners, weights)
    table = [
        Rating(
            name=n,
            strength=float(result.strengths[i]),
            lower=float(result.lower[i]),
            upper=float(result.upper[i]),
            elo=float(elo[i]),
            elo_lower=float(elo_lo[i]),
            elo_upper=float(elo_hi[i]),
            rank=int(ranks[i]),
            games=float(games[i]),
            wins=float(wins[i]),
        )
        for i, n in enumerate(names)
    ]
    table.sort(key=lambda r: (-r.elo, r.name))
    return RatingTable(table, len(records), rounds, ci)


def debater_ratings(rows: Sequence[VerdictRow], *, rounds: int = 100, seed: int = 0, ci: float = 0.95) -> RatingTable:
    """Ratings of debaters from debates between two different debaters (self-play says nothing about
    who is stronger and is left out, as are protocols with fewer than two speakers)."""
    records = _outcomes(rows, lambda r: None if r.self_play else (r.debater_a, r.debater_b))
    table = fit_ratings(records, rounds=rounds, seed=seed, ci=ci)
    excluded = sum(1 for r in rows if r.self_play or not two_speakers(r.protocol))
    return RatingTable(table.ratings, table.records, table.rounds, table.ci, excluded)


def role_ratings(rows: Sequence[VerdictRow], *, rounds: int = 100, seed: int = 0, ci: float = 0.95) -> RatingTable:
    """Each debater as two players, arguing the right answer and arguing the wrong one (Khan et al. 2024)."""

    def players(row: VerdictRow) -> tuple[str, str] | None:
        # Self-play stays: there the same debater meets itself arguing the other answer.
        a_role = "right" if row.correct_index == 0 else "wrong"
        b_role = "right" if row.correct_index == 1 else "wrong"
        return f"{row.debater_a} ({a_role})", f"{row.debater_b} ({b_role})"

    return fit_ratings(_outcomes(rows, players), rounds=rounds, seed=seed, ci=ci)


# ---------------------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccuracyRow:
    key: str
    n: int
    correct: int
    accuracy: float
    lower: float
    upper: float
    rank: int
    brier: float
    mean_p_correct: float


def accuracy_by(rows: Sequence[VerdictRow], key: Callable[[VerdictRow], str | None], *, ci: float = 0.95) -> list[AccuracyRow]:
    """Accuracy per group with Wilson intervals; ranks separate only non-overlapping intervals."""
    groups: dict[str, list[VerdictRow]] = defaultdict(list)
    for row in rows:
        k = key(row)
        if k:
            groups[k].append(row)
    names = sorted(groups)
    stats = []
    for name in names:
        group = groups[name]
        acc, lo, hi, n = rt.accuracy_with_interval([r.correct for r in group], ci=ci)
        p = [r.p_correct for r in group]
        stats.append((name, n, sum(r.correct for r in group), acc, lo, hi, rt.brier_score(p), float(np.mean(p))))
    ranks = rt.rank_by_intervals([s[4] for s in stats], [s[5] for s in stats]) if stats else []
    out = [AccuracyRow(s[0], s[1], s[2], s[3], s[4], s[5], int(rank), s[6], s[7]) for s, rank in zip(stats, ranks)]
    out.sort(key=lambda r: (-r.accuracy, r.key))
    return out


def accuracy_by_protocol(rows: Sequence[VerdictRow]) -> list[AccuracyRow]:
    return accuracy_by(rows, lambda r: r.protocol)


def accuracy_by_judge(rows: Sequence[VerdictRow]) -> list[AccuracyRow]:
    return accuracy_by(rows, lambda r: f"{r.judge} ({r.kind})")


def accuracy_by_condition(rows: Sequence[VerdictRow]) -> list[AccuracyRow]:
    """NYU conditions (human/AI × debate/consultancy); rows without one are left out."""
    return accuracy_by(rows, lambda r: r.condition or None)


@dataclass(frozen=True)
class AccuracyVsRating:
    protocol: str
    debater: str
    elo: float
    elo_lower: float
    elo_upper: float
    accuracy: float
    lower: float
    upper: float
    n: int
    self_play: bool


def accuracy_vs_rating(rows: Sequence[VerdictRow], table: RatingTable) -> list[AccuracyVsRating]:
    """Judge accuracy on each rated debater's debates, against its rating, per protocol.

    Where a debater has self-play debates (or is the consultant of a one-speaker protocol) only those
    count, as in Khan et al. 2024: then the accuracy is the judge's on debates where both sides are
    argued equally well by that debater. Otherwise every debate it took part in counts.
    """
    rated = table.by_name()
    points: list[AccuracyVsRating] = []
    for protocol in sorted({r.protocol for r in rows}):
        mine = [r for r in rows if r.protocol == protocol]
        for name, rating in rated.items():
            own = [r for r in mine if r.debater_a == name and r.debater_b == name]
            used = own or [r for r in mine if name in (r.debater_a, r.debater_b)]
            if not used:
                continue
            acc, lo, hi, n = rt.accuracy_with_interval([r.correct for r in used])
            points.append(
                AccuracyVsRating(protocol, name, rating.elo, rating.elo_lower, rating.elo_upper, acc, lo, hi, n, bool(own))
            )
    return points


# ---------------------------------------------------------------------------------------
# Calibration and bias
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    n: int
    brier: float
    ece: float
    log_score: float
    bins: list[rt.ReliabilityBin] = field(default_factory=list)


def calibration(rows: Sequence[VerdictRow], n_bins: int = 10) -> Calibration:
    """Brier score and mean log2 score of the probability given to the gold answer; ECE and the
    reliability diagram of the confidence in the chosen answer (an exact 50/50 counts as choosing
    answer 1, which is then right or wrong with the gold answer)."""
    if not rows:
        return Calibration(0, math.nan, math.nan, math.nan, rt.reliability_diagram([], [], n_bins))
    p_correct = np.array([r.p_correct for r in rows])
    confidence = np.array([r.confidence for r in rows])
    chosen = np.array([0 if r.p_a >= r.p_b else 1 for r in rows])
    hit = chosen == np.array([r.correct_index for r in rows])
    logs = rt.log_score(p_correct)
    return Calibration(
        n=len(rows),
        brier=rt.brier_score(p_correct),
        ece=rt.expected_calibration_error(confidence, hit, n_bins),
        log_score=float(np.mean(np.maximum(logs, -30.0))),
        bins=rt.reliability_diagram(confidence, hit, n_bins),
    )


@dataclass(frozen=True)
class Biases:
    side: rt.PositionBias
    position: rt.PositionBias
    position_paired: rt.PositionBias | None
    accuracy_gold_first_answer: tuple[float, float, float, int]
    accuracy_gold_second_answer: tuple[float, float, float, int]


def biases(rows: Sequence[VerdictRow]) -> Biases:
    """Side bias: mean probability given to answer 1 minus 0.5 (answer 1's debater speaks first in
    sequential rounds), with the accuracy split by which answer is gold, since an unbalanced gold
    side moves the mean too. Position bias: mean probability given to the answer shown first minus
    0.5, over every verdict; and, for AI verdicts that judged both orders, the paired estimate."""
    side = rt.position_bias([r.p_a for r in rows])
    position = rt.position_bias([r.p_first for r in rows])
    paired_rows = [r.by_order for r in rows if r.by_order is not None]
    paired = None
    if paired_rows:
        # by_order[0] shows answers[0] first, by_order[1] shows answers[1] first.
        paired = rt.position_bias([b[0][0] for b in paired_rows], [b[1][1] for b in paired_rows])
    return Biases(
        side=side,
        position=position,
        position_paired=paired,
        accuracy_gold_first_answer=rt.accuracy_with_interval([r.correct for r in rows if r.correct_index == 0]),
        accuracy_gold_second_answer=rt.accuracy_with_interval([r.correct for r in rows if r.correct_index == 1]),
    )


# ---------------------------------------------------------------------------------------
# The whole report, as plain data (the JSON download and the page)
# ---------------------------------------------------------------------------------------


def _clean(value: object) -> object:
    """JSON-safe: NaN and infinities become None, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass(frozen=True)
class Report:
    filter: VerdictFilter
    verdicts: int
    debater_ratings: RatingTable
    role_ratings: RatingTable
    accuracy_by_protocol: list[AccuracyRow]
    accuracy_by_judge: list[AccuracyRow]
    accuracy_by_condition: list[AccuracyRow]
    accuracy_vs_rating: list[AccuracyVsRating]
    calibration: Calibration
    biases: Biases

    def as_dict(self) -> dict[str, object]:
        data = {
            "filter": asdict(self.filter),
            "verdicts": self.verdicts,
            "debater_ratings": asdict(self.debater_ratings),
            "role_ratings": asdict(self.role_ratings),
            "accuracy_by_protocol": [asdict(r) for r in self.accuracy_by_protocol],
            "accuracy_by_judge": [asdict(r) for r in self.accuracy_by_judge],
            "accuracy_by_condition": [asdict(r) for r in self.accuracy_by_condition],
            "accuracy_vs_rating": [asdict(p) for p in self.accuracy_vs_rating],
            "calibration": asdict(self.calibration),
            "biases": asdict(self.biases),
        }
        return _clean(data)  # type: ignore[return-value]


def build_report(flt: VerdictFilter | None = None, *, rounds: int = 100, seed: int = 0, rows: Sequence[VerdictRow] | None = None) -> Report:
    flt = flt or VerdictFilter()
    rows = load_rows(flt) if rows is None else rows
    table = debater_ratings(rows, rounds=rounds, seed=seed)
    return Report(
        filter=flt,
        verdicts=len(rows),
        debater_ratings=table,
        role_ratings=role_ratings(rows, rounds=rounds, seed=seed),
        accuracy_by_protocol=accuracy_by_protocol(rows),
        accuracy_by_judge=accuracy_by_judge(rows),
        accuracy_by_condition=accuracy_by_condition(rows),
        accuracy_vs_rating=accuracy_vs_rating(rows, table),
        calibration=calibration(rows),
        biases=biases(rows),
    )


# CSV tables: name -> (header, rows from a report)
def csv_tables(report: Report, rows: Sequence[VerdictRow]) -> dict[str, tuple[list[str], list[list[object]]]]:
    def ratings_rows(table: RatingTable) -> list[list[object]]:
        return [
            [r.rank, r.name, round(r.elo, 1), round(r.elo_lower, 1), round(r.elo_upper, 1), round(r.strength, 4), r.games, r.wins]
            for r in table.ratings
        ]

    def acc_rows(items: Sequence[AccuracyRow]) -> list[list[object]]:
        return [[a.rank, a.key, a.n, a.correct, a.accuracy, a.lower, a.upper, a.brier, a.mean_p_correct] for a in items]

    rating_header = ["rank", "name", "elo", "elo_lower", "elo_upper", "bt_strength", "games", "wins"]
    acc_header = ["rank", "group", "n", "correct", "accuracy", "lower", "upper", "brier", "mean_p_correct"]
    return {
        "ratings": (rating_header, ratings_rows(report.debater_ratings)),
        "role_ratings": (rating_header, ratings_rows(report.role_ratings)),
        "accuracy_protocol": (acc_header, acc_rows(report.accuracy_by_protocol)),
        "accuracy_judge": (acc_header, acc_rows(report.accuracy_by_judge)),
        "accuracy_condition": (acc_header, acc_rows(report.accuracy_by_condition)),
        "accuracy_vs_rating": (
            ["protocol", "debater", "elo", "elo_lower", "elo_upper", "accuracy", "lower", "upper", "n", "self_play"],
            [[p.protocol, p.debater, p.elo, p.elo_lower, p.elo_upper, p.accuracy, p.lower, p.upper, p.n, p.self_play] for p in report.accuracy_vs_rating],
        ),
        "reliability": (
            ["lower", "upper", "mean_confidence", "accuracy", "count"],
            [[b.lower, b.upper, b.mean_confidence, b.accuracy, b.count] for b in report.calibration.bins],
        ),
        "verdicts": (
            ["verdict_id", "debate_id", "tournament_id", "protocol", "kind", "origin", "judge", "role", "debater_a", "debater_b",
             "correct_index", "p_a", "p_b", "shown_first", "correct", "position_bias", "condition", "included_in_paper"],
            [
                [r.verdict_id, r.debate_id, r.tournament_id, r.protocol, r.kind, r.origin, r.judge, r.role, r.debater_a, r.debater_b,
                 r.correct_index, r.p_a, r.p_b, r.shown_first, r.correct, r.position_bias, r.condition, r.included_in_paper]
                for r in rows
            ],
        ),
    }
