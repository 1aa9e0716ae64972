"""Ratings, accuracy, calibration and bias computed from stored verdicts, and nothing else.

Two ways in, one set of formulas. :func:`load_rows` reads the verdicts a :class:`VerdictFilter`
selects (human and AI alike, arena and imported alike) as flat :class:`VerdictRow` records (the
verdicts.csv download, tests). :func:`load_cells` asks the database for the same verdicts already
summed into :class:`Cell` groups (verdicts alike in everything the report reads), so a million
verdicts arrive as a few hundred rows; :func:`cells_from_rows` sums rows into the very same cells.
Every figure is a pure function of cells (rows are summed first), built on :mod:`judging.ratings`:

* debater ratings: Bradley–Terry on aggregated outcomes (a verdict is a win for the debater whose
  answer got the higher probability; an exact 50/50 is half a win each), percentile-bootstrap
  intervals (100 rounds by default, widened to contain the estimate), ranks that separate only
  non-overlapping intervals, Elo scale. A player with fewer than :data:`MIN_GAMES` games gets no
  interval and no rank ("too few games"): a bootstrap of a handful of games is not an interval;
  the same with each debater split into arguing the right and arguing the wrong answer (Khan et
  al. 2024);
* judge accuracy per protocol, per judge and per NYU condition, with Wilson intervals and the same
  interval-aware ranks;
* judge accuracy against debater rating (the headline plot of the debate literature);
* calibration (Brier, expected calibration error, log score, reliability diagram);
* side bias (towards answer 1, whose debater speaks first) and position bias, with intervals.

Position bias has one definition everywhere (this page, verdicts.csv, ``Verdict.position_bias``):
the probability the judge gave to the answer shown first, minus 0.5; a verdict judged in both
orders (AI judges) contributes the mean over its two orders, (P₁(shown first) + P₂(shown first))/2
− 0.5 = (P(answer 1 | answer 1 first) − P(answer 1 | answer 2 first))/2. 0 is no bias, +0.5 always
the first answer.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
from django.db import connection, transaction
from django.db.models import (
    BooleanField,
    Case,
    Count,
    F,
    FloatField,
    IntegerField,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast, Greatest, Ln

from arena.engine.protocol import PROTOCOLS
from debaters.models import DebaterProfile
from judging import ratings as rt
from judging.models import Verdict

KINDS = ("any", "human", "ai")
ROLES = ("any", "live", "offline")
# Fewer games than this and a player's bootstrap interval means nothing: it gets "too few games".
MIN_GAMES = 20
N_BINS = 10
# log₂ scores are floored here, so a single p = 0 does not make the mean −∞.
LOG_FLOOR = -30.0


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

    def slug(self) -> str:
        """A file-name part naming the selection ("all" for everything), e.g. ``t12-ai-debate``: two
        downloads of different selections never share a name."""
        parts: list[str] = []
        for key, value in self.as_params().items():
            prefix = {"tournament": "t", "paper": "paper-"}.get(key, "")
            parts.append(prefix + value)
        text = "-".join(parts) or "all"
        safe = "".join(c if c.isalnum() or c in "-." else "-" for c in text.lower())
        return "-".join(p for p in safe.split("-") if p)[:120] or "all"


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
    correct: bool | None
    position_bias: float | None
    by_order: tuple[tuple[float, float], tuple[float, float]] | None
    condition: str
    included_in_paper: bool | None
    role: str
    first_side: int = 0  # the answer whose debater spoke first in each round (Debate.first_side)

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
    def p_shown_first(self) -> float:
        """Probability given to the answer shown first, the mean over both orders where the verdict
        has both (``by_order[0]`` shows answer 1 first, ``by_order[1]`` answer 2)."""
        if self.by_order is not None:
            return (self.by_order[0][0] + self.by_order[1][1]) / 2.0
        return self.p_first

    @property
    def first_answer_bias(self) -> float:
        """This verdict's position bias: :attr:`p_shown_first` − 0.5 (the module's one definition)."""
        return self.p_shown_first - 0.5

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


def _selected(flt: VerdictFilter) -> QuerySet[Verdict]:
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
    return qs


def load_rows(flt: VerdictFilter | None = None) -> list[VerdictRow]:
    """The selected verdicts as rows, oldest first."""
    values = _selected(flt or VerdictFilter()).order_by("pk").values_list(
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
        "debate__first_side",
    )
    rows: list[VerdictRow] = []
    for (pk, debate_id, tournament_id, protocol, kind, origin, label, judge_id, a, b, gold, p_a, p_b, shown, correct, bias, meta, settings, first_side) in values:
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
                role=str((meta if isinstance(meta, Mapping) else {}).get("role") or ("ai" if kind == Verdict.Kind.AI else "live")),
                first_side=first_side,
            )
        )
    return rows


# ---------------------------------------------------------------------------------------
# Cells: verdicts summed over everything the report reads
# ---------------------------------------------------------------------------------------


@dataclass
class Cell:
    """Verdicts alike in every dimension below, with the sums the report needs.

    ``outcome``: 1 when answer 1 got more probability, −1 answer 2, 0 an exact 50/50. ``hit``: the
    answer with more probability (answer 1 on a 50/50) is the gold one. ``bin``: the confidence
    bin (:func:`judging.ratings.confidence_bin`). Sums: ``p_correct`` Σ P(gold), ``sq_error``
    Σ (1 − P(gold))², ``log2`` Σ max(log₂ P(gold), −30), ``confidence`` Σ max(p_a, p_b), ``p_a``/
    ``p_a2``/``p_a_hard`` Σ p_a, Σ p_a² and how many p_a are exactly 0 or 1; ``first``/``first2``/
    ``first_hard`` the same of :attr:`VerdictRow.p_shown_first`.
    """

    protocol: str
    kind: str
    judge: str
    debater_a: str
    debater_b: str
    correct_index: int
    outcome: int
    correct: bool | None  # None: a 50/50 verdict, which is neither right nor wrong
    hit: bool
    bin: int
    condition: str
    included_in_paper: bool | None
    role: str
    n: int = 0
    p_correct: float = 0.0
    sq_error: float = 0.0
    log2: float = 0.0
    confidence: float = 0.0
    p_a: float = 0.0
    p_a2: float = 0.0
    p_a_hard: int = 0
    first: float = 0.0
    first2: float = 0.0
    first_hard: int = 0

    @property
    def self_play(self) -> bool:
        return self.debater_a == self.debater_b

    @property
    def n_correct(self) -> int:
        """Verdicts counted correct (a 50/50 is not: accuracy is correct / all verdicts)."""
        return self.n if self.correct else 0


DIMENSIONS = tuple(f.name for f in fields(Cell))[:13]
SUMS = tuple(f.name for f in fields(Cell))[13:]


def _log2(p: float) -> float:
    return LOG_FLOOR if p <= 2.0**LOG_FLOOR else math.log(p) / math.log(2.0)


def cells_from_rows(rows: Iterable[VerdictRow]) -> list[Cell]:
    """Sum rows into cells (the same cells :func:`load_cells` gets from the database)."""
    cells: dict[tuple[object, ...], Cell] = {}
    for r in rows:
        outcome = 1 if r.p_a > r.p_b else -1 if r.p_b > r.p_a else 0
        conf = r.confidence
        hit = (0 if r.p_a >= r.p_b else 1) == r.correct_index
        bin_ = int(rt.confidence_bin([conf], N_BINS)[0])
        key = (r.protocol, r.kind, r.judge, r.debater_a, r.debater_b, r.correct_index, outcome, r.correct, hit, bin_,
               r.condition, r.included_in_paper, r.role)
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = Cell(*key)  # type: ignore[arg-type]
        first = r.p_shown_first
        cell.n += 1
        cell.p_correct += r.p_correct
        cell.sq_error += (1.0 - r.p_correct) ** 2
        cell.log2 += _log2(r.p_correct)
        cell.confidence += conf
        cell.p_a += r.p_a
        cell.p_a2 += r.p_a * r.p_a
        cell.p_a_hard += r.p_a in (0.0, 1.0)
        cell.first += first
        cell.first2 += first * first
        cell.first_hard += first in (0.0, 1.0)
    return _canonical(cells.values())


def _canonical(cells: Iterable[Cell]) -> list[Cell]:
    return sorted(cells, key=lambda c: tuple(("" if v is None else str(v)) for v in (getattr(c, d) for d in DIMENSIONS)))


def load_cells(flt: VerdictFilter | None = None) -> list[Cell]:
    """The selected verdicts summed in the database into :class:`Cell` groups (one GROUP BY query)."""
    gold = F("debate__question__correct_index")
    edges = rt.bin_edges(N_BINS)
    first_order = Cast(KeyTextTransform("0", KeyTransform("0", KeyTransform("by_order", "meta"))), FloatField())
    second_order = Cast(KeyTextTransform("1", KeyTransform("1", KeyTransform("by_order", "meta"))), FloatField())
    nyu = KeyTransform("nyu", "debate__settings")
    qs = _selected(flt or VerdictFilter()).annotate(
        _pg=Case(When(debate__question__correct_index=0, then=F("p_a")), default=F("p_b"), output_field=FloatField()),
        _conf=Greatest("p_a", "p_b", output_field=FloatField()),
        _b00=first_order,
        _b11=second_order,
    )
    qs = qs.annotate(
        _first=Case(
            When(_b00__isnull=False, _b11__isnull=False, then=(F("_b00") + F("_b11")) / Value(2.0)),
            When(shown_first=0, then=F("p_a")),
            default=F("p_b"),
            output_field=FloatField(),
        ),
        c_protocol=F("debate__protocol"),
        c_kind=F("kind"),
        c_label=F("judge_label"),
        c_judge_id=F("judge_id"),
        c_a=F("debate__debater_a_id"),
        c_b=F("debate__debater_b_id"),
        c_gold=gold,
        c_outcome=Case(When(p_a__gt=F("p_b"), then=Value(1)), When(p_b__gt=F("p_a"), then=Value(-1)), default=Value(0), output_field=IntegerField()),
        c_correct=F("correct"),
        c_hit=Case(
            When(Q(p_a__gte=F("p_b"), debate__question__correct_index=0) | Q(p_a__lt=F("p_b"), debate__question__correct_index=1), then=Value(True)),
            default=Value(False),
            output_field=BooleanField(),
        ),
        c_bin=Case(
            *[When(_conf__gte=float(edges[k]), then=Value(k)) for k in range(N_BINS - 1, 0, -1)],
            default=Value(0),
            output_field=IntegerField(),
        ),
        c_condition=KeyTextTransform("condition", nyu),
        c_paper=KeyTextTransform("included_in_paper", nyu),
        c_role=KeyTextTransform("role", "meta"),
    )
    # Cheap keys (ids, raw columns) in SQL; names and defaults are applied below, merging groups
    # that end up alike. The sort or hash over a million rows is most of the query's time.
    dims = ("c_protocol", "c_kind", "c_label", "c_judge_id", "c_a", "c_b", "c_gold", "c_outcome", "c_correct", "c_hit",
            "c_bin", "c_condition", "c_paper", "c_role")
    grouped = qs.order_by().values(*dims).annotate(
        n=Count("pk"),
        s_pg=Sum("_pg"),
        s_sq=Sum((Value(1.0) - F("_pg")) * (Value(1.0) - F("_pg")), output_field=FloatField()),
        s_log=Sum(
            Case(When(_pg__lte=2.0**LOG_FLOOR, then=Value(LOG_FLOOR)), default=Ln("_pg") / Value(math.log(2.0)), output_field=FloatField())
        ),
        s_conf=Sum("_conf"),
        s_pa=Sum("p_a"),
        s_pa2=Sum(F("p_a") * F("p_a"), output_field=FloatField()),
        s_pa_hard=Sum(Case(When(Q(p_a=0.0) | Q(p_a=1.0), then=Value(1)), default=Value(0), output_field=IntegerField())),
        s_first=Sum("_first"),
        s_first2=Sum(F("_first") * F("_first"), output_field=FloatField()),
        s_first_hard=Sum(Case(When(Q(_first=0.0) | Q(_first=1.0), then=Value(1)), default=Value(0), output_field=IntegerField())),
    )
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Hash-aggregate in memory rather than sort every verdict (for this transaction only): the
            # planner cannot tell that the grouping expressions take only a few hundred values, and
            # sorting a million wide rows was half the query's time.
            cursor.execute("SET LOCAL work_mem = '64MB'")
            cursor.execute("SET LOCAL enable_sort = off")
        groups = list(grouped)
    names = dict(DebaterProfile.objects.filter(pk__in={g["c_a"] for g in groups} | {g["c_b"] for g in groups}).values_list("pk", "name"))
    cells: dict[tuple[object, ...], Cell] = {}
    for g in groups:
        paper = {"true": True, "false": False}.get(str(g["c_paper"]).lower()) if g["c_paper"] is not None else None
        role = g["c_role"] or ("ai" if g["c_kind"] == Verdict.Kind.AI else "live")
        key = (g["c_protocol"], g["c_kind"], _judge_name(g["c_kind"], "", g["c_label"], g["c_judge_id"]), names[g["c_a"]], names[g["c_b"]],
               int(g["c_gold"]), int(g["c_outcome"]), g["c_correct"], bool(g["c_hit"]), int(g["c_bin"]), g["c_condition"] or "", paper, role)
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = Cell(*key)  # type: ignore[arg-type]
        cell.n += int(g["n"])
        cell.p_correct += float(g["s_pg"])
        cell.sq_error += float(g["s_sq"])
        cell.log2 += float(g["s_log"])
        cell.confidence += float(g["s_conf"])
        cell.p_a += float(g["s_pa"])
        cell.p_a2 += float(g["s_pa2"])
        cell.p_a_hard += int(g["s_pa_hard"])
        cell.first += float(g["s_first"])
        cell.first2 += float(g["s_first2"])
        cell.first_hard += int(g["s_first_hard"])
    return _canonical(cells.values())


Data = Sequence[VerdictRow] | Sequence[Cell]


def as_cells(data: Data) -> list[Cell]:
    """Cells as they are; rows summed into cells."""
    if not data or isinstance(data[0], Cell):
        return list(data)  # type: ignore[arg-type]
    return cells_from_rows(data)  # type: ignore[arg-type]


def _total(cells: Iterable[Cell], name: str) -> float:
    return float(math.fsum(getattr(c, name) for c in cells))


# ---------------------------------------------------------------------------------------
# Ratings
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rating:
    """One player's rating. With fewer than :data:`MIN_GAMES` games ``too_few_games`` is set, the
    interval bounds are NaN (None in JSON, empty in CSV) and ``rank`` is 0 (unranked)."""

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
    too_few_games: bool = False

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
    min_games: int = MIN_GAMES

    def by_name(self) -> dict[str, Rating]:
        return {r.name: r for r in self.ratings}


def two_speakers(protocol: str) -> bool:
    """Whether two debaters argue against each other under this protocol (only those are rated)."""
    cls = PROTOCOLS.get(protocol)
    return cls is None or int(getattr(cls, "speakers", 2)) >= 2


# (winner, loser, weight) -> how many verdicts gave that outcome
Outcomes = Counter[tuple[str, str, float]]


def _outcomes(cells: Iterable[Cell], players: Callable[[Cell], tuple[str, str] | None]) -> Outcomes:
    """A decisive verdict is one record for its winner; a 50/50 two half records, one each way."""
    records: Outcomes = Counter()
    for cell in cells:
        pair = players(cell) if two_speakers(cell.protocol) else None
        if pair is None:
            continue
        a, b = pair
        if cell.outcome > 0:
            records[(a, b, 1.0)] += cell.n
        elif cell.outcome < 0:
            records[(b, a, 1.0)] += cell.n
        else:
            records[(a, b, 0.5)] += cell.n
            records[(b, a, 0.5)] += cell.n
    return records


def fit_ratings(
    records: Mapping[tuple[str, str, float], int] | Sequence[tuple[str, str, float]],
    *,
    rounds: int = 100,
    seed: int = 0,
    ci: float = 0.95,
    min_games: int = MIN_GAMES,
) -> RatingTable:
    """Bradley–Terry with bootstrap intervals over named (winner, loser, weight) records, given as a
    list or counted (record -> how many times). The result depends only on the multiset of records.

    Intervals: ``ci`` percentile bootstrap, widened where needed to contain the point estimate (a
    skewed bootstrap can leave it outside). Players with fewer than ``min_games`` games (weighted)
    get ``too_few_games``, no interval and rank 0; the others are ranked among themselves.
    """
    counted: Mapping[tuple[str, str, float], int] = records if isinstance(records, Mapping) else Counter(records)
    items = sorted((k, n) for k, n in counted.items() if n > 0)
    names = sorted({k[0] for k, _ in items} | {k[1] for k, _ in items})
    if not names:
        return RatingTable([], 0, rounds, ci, min_games=min_games)
    index = {n: i for i, n in enumerate(names)}
    winners = np.array([index[w] for (w, _, _), _ in items], dtype=np.intp)
    losers = np.array([index[l] for (_, l, _), _ in items], dtype=np.intp)
    weights = np.array([x for (_, _, x), _ in items], dtype=np.float64)
    counts = np.array([n for _, n in items], dtype=np.int64)
    use_weights = None if np.all(weights == 1.0) else weights
    result = rt.bootstrap_bradley_terry(winners, losers, len(names), rounds=rounds, seed=seed, weights=use_weights, ci=ci, counts=counts)
    lower = np.minimum(result.lower, result.strengths)
    upper = np.maximum(result.upper, result.strengths)
    games = np.zeros(len(names))
    wins = np.zeros(len(names))
    np.add.at(games, winners, weights * counts)
    np.add.at(games, losers, weights * counts)
    np.add.at(wins, winners, weights * counts)
    enough = games >= min_games
    lower[~enough] = np.nan
    upper[~enough] = np.nan
    ranks = np.zeros(len(names), dtype=np.intp)
    if enough.any():
        ranks[enough] = rt.rank_by_intervals(lower[enough], upper[enough])
    elo = rt.elo_scale(result.strengths)
    elo_lo = rt.elo_scale(lower)
    elo_hi = rt.elo_scale(upper)
    table = [
        Rating(
            name=n,
            strength=float(result.strengths[i]),
            lower=float(lower[i]),
            upper=float(upper[i]),
            elo=float(elo[i]),
            elo_lower=float(elo_lo[i]),
            elo_upper=float(elo_hi[i]),
            rank=int(ranks[i]),
            games=float(games[i]),
            wins=float(wins[i]),
            too_few_games=not bool(enough[i]),
        )
        for i, n in enumerate(names)
    ]
    table.sort(key=lambda r: (r.too_few_games, -r.elo, r.name))
    return RatingTable(table, int(counts.sum()), rounds, ci, min_games=min_games)


def debater_ratings(data: Data, *, rounds: int = 100, seed: int = 0, ci: float = 0.95) -> RatingTable:
    """Ratings of debaters from debates between two different debaters (self-play says nothing about
    who is stronger and is left out, as are protocols with fewer than two speakers)."""
    cells = as_cells(data)
    table = fit_ratings(_outcomes(cells, lambda c: None if c.self_play else (c.debater_a, c.debater_b)), rounds=rounds, seed=seed, ci=ci)
    excluded = sum(c.n for c in cells if c.self_play or not two_speakers(c.protocol))
    return replace(table, excluded=excluded)


def role_ratings(data: Data, *, rounds: int = 100, seed: int = 0, ci: float = 0.95) -> RatingTable:
    """Each debater as two players, arguing the right answer and arguing the wrong one (Khan et al. 2024)."""

    def players(cell: Cell) -> tuple[str, str] | None:
        # Self-play stays: there the same debater meets itself arguing the other answer.
        a_role = "right" if cell.correct_index == 0 else "wrong"
        b_role = "right" if cell.correct_index == 1 else "wrong"
        return f"{cell.debater_a} ({a_role})", f"{cell.debater_b} ({b_role})"

    return fit_ratings(_outcomes(as_cells(data), players), rounds=rounds, seed=seed, ci=ci)


# ---------------------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccuracyRow:
    """Accuracy of one group: correct / n, Wilson interval, Brier = Σ(1 − P(gold))²/n, mean P(gold)."""

    key: str
    n: int
    correct: int
    accuracy: float
    lower: float
    upper: float
    rank: int
    brier: float
    mean_p_correct: float


def accuracy_by(data: Data, key: Callable[[Cell], str | None], *, ci: float = 0.95) -> list[AccuracyRow]:
    """Accuracy per group with Wilson intervals; ranks separate only non-overlapping intervals.
    ``key`` reads the dimensions cells and rows share (protocol, judge, kind, condition, ...)."""
    groups: dict[str, list[Cell]] = defaultdict(list)
    for cell in as_cells(data):
        k = key(cell)
        if k:
            groups[k].append(cell)
    stats = []
    for name in sorted(groups):
        group = groups[name]
        n = sum(c.n for c in group)
        correct = sum(c.n_correct for c in group)
        lo, hi = rt.wilson_interval(correct, n, ci)
        stats.append((name, n, correct, correct / n, lo, hi, _total(group, "sq_error") / n, _total(group, "p_correct") / n))
    ranks = rt.rank_by_intervals([s[4] for s in stats], [s[5] for s in stats]) if stats else []
    out = [AccuracyRow(s[0], s[1], s[2], s[3], s[4], s[5], int(rank), s[6], s[7]) for s, rank in zip(stats, ranks)]
    out.sort(key=lambda r: (-r.accuracy, r.key))
    return out


def accuracy_by_protocol(data: Data) -> list[AccuracyRow]:
    return accuracy_by(data, lambda r: r.protocol)


def accuracy_by_judge(data: Data) -> list[AccuracyRow]:
    return accuracy_by(data, lambda r: f"{r.judge} ({r.kind})")


def accuracy_by_condition(data: Data) -> list[AccuracyRow]:
    """NYU conditions (human/AI × debate/consultancy); rows without one are left out."""
    return accuracy_by(data, lambda r: r.condition or None)


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
    too_few_games: bool = False


def accuracy_vs_rating(data: Data, table: RatingTable) -> list[AccuracyVsRating]:
    """Judge accuracy on each rated debater's debates, against its rating, per protocol.

    Where a debater has self-play debates (or is the consultant of a one-speaker protocol) only those
    count, as in Khan et al. 2024: then the accuracy is the judge's on debates where both sides are
    argued equally well by that debater. Otherwise every debate it took part in counts.
    """
    cells = as_cells(data)
    rated = table.by_name()
    points: list[AccuracyVsRating] = []
    for protocol in sorted({c.protocol for c in cells}):
        mine = [c for c in cells if c.protocol == protocol]
        for name, rating in rated.items():
            own = [c for c in mine if c.debater_a == name and c.debater_b == name]
            used = own or [c for c in mine if name in (c.debater_a, c.debater_b)]
            if not used:
                continue
            n = sum(c.n for c in used)
            correct = sum(c.n_correct for c in used)
            lo, hi = rt.wilson_interval(correct, n)
            points.append(
                AccuracyVsRating(protocol, name, rating.elo, rating.elo_lower, rating.elo_upper, correct / n, lo, hi, n, bool(own), rating.too_few_games)
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


def calibration(data: Data) -> Calibration:
    """Brier score (mean (1 − P(gold))²) and mean log₂ score (floored at −30) of the probability
    given to the gold answer; ECE and the reliability diagram of the confidence max(p_a, p_b) in the
    chosen answer (an exact 50/50 counts as choosing answer 1, which is then right or wrong with the
    gold answer)."""
    cells = as_cells(data)
    counts = np.zeros(N_BINS, dtype=np.int64)
    conf_sums = np.zeros(N_BINS)
    hit_sums = np.zeros(N_BINS)
    for c in cells:
        counts[c.bin] += c.n
        conf_sums[c.bin] += c.confidence
        hit_sums[c.bin] += c.n if c.hit else 0
    bins = rt.reliability_from_sums(counts, conf_sums, hit_sums)
    n = int(counts.sum())
    if not n:
        return Calibration(0, math.nan, math.nan, math.nan, bins)
    return Calibration(
        n=n,
        brier=_total(cells, "sq_error") / n,
        ece=rt.ece_from_sums(counts, conf_sums, hit_sums),
        log_score=_total(cells, "log2") / n,
        bins=bins,
    )


@dataclass(frozen=True)
class JudgeBias:
    judge: str
    kind: str
    bias: rt.PositionBias


@dataclass(frozen=True)
class Biases:
    side: rt.PositionBias
    position: rt.PositionBias
    position_by_judge: list[JudgeBias]
    accuracy_gold_first_answer: tuple[float, float, float, int]
    accuracy_gold_second_answer: tuple[float, float, float, int]


POSITION_BIAS_FORMULA = (
    "position bias = mean over verdicts of P(answer shown first) − 0.5; a verdict judged in both orders "
    "counts with its mean over the two orders, (P(answer 1 | answer 1 first) − P(answer 1 | answer 2 first)) / 2"
)


def _position(cells: Sequence[Cell]) -> rt.PositionBias:
    return rt.position_bias_from_sums(
        _total(cells, "first"), _total(cells, "first2"), sum(c.n for c in cells), sum(c.first_hard for c in cells)
    )


def _accuracy(cells: Sequence[Cell]) -> tuple[float, float, float, int]:
    n = sum(c.n for c in cells)
    correct = sum(c.n_correct for c in cells)
    lo, hi = rt.wilson_interval(correct, n)
    return (correct / n if n else math.nan), lo, hi, n


def biases(data: Data) -> Biases:
    """Side bias: mean P(answer 1) − 0.5 (answer 1's debater speaks first in sequential rounds), with
    the accuracy split by which answer is gold, since an unbalanced gold side moves the mean too.
    Position bias (:data:`POSITION_BIAS_FORMULA`) over every verdict and per judge."""
    cells = as_cells(data)
    side = rt.position_bias_from_sums(
        _total(cells, "p_a"), _total(cells, "p_a2"), sum(c.n for c in cells), sum(c.p_a_hard for c in cells)
    )
    per_judge: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    for c in cells:
        per_judge[(c.judge, c.kind)].append(c)
    return Biases(
        side=side,
        position=_position(cells),
        position_by_judge=[JudgeBias(j, k, _position(group)) for (j, k), group in sorted(per_judge.items())],
        accuracy_gold_first_answer=_accuracy([c for c in cells if c.correct_index == 0]),
        accuracy_gold_second_answer=_accuracy([c for c in cells if c.correct_index == 1]),
    )


@dataclass(frozen=True)
class JudgeLoad:
    """How many verdicts each judge gave, on how many protocols (the "who judged what" table)."""

    judge: str
    kind: str
    verdicts: int
    protocols: str


def judge_load(data: Data) -> list[JudgeLoad]:
    per: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for c in as_cells(data):
        per[(c.judge, c.kind)][c.protocol] += c.n
    out = [
        JudgeLoad(j, k, sum(p.values()), ", ".join(f"{name} {n}" for name, n in sorted(p.items())))
        for (j, k), p in per.items()
    ]
    out.sort(key=lambda x: (-x.verdicts, x.judge))
    return out


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
    judge_load: list[JudgeLoad] = field(default_factory=list)

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
            "position_bias_formula": POSITION_BIAS_FORMULA,
            "judge_load": [asdict(j) for j in self.judge_load],
            "min_games": MIN_GAMES,
        }
        return _clean(data)  # type: ignore[return-value]


def build_report(
    flt: VerdictFilter | None = None,
    *,
    rounds: int = 100,
    seed: int = 0,
    rows: Sequence[VerdictRow] | None = None,
    cells: Sequence[Cell] | None = None,
) -> Report:
    """The report of the selected verdicts: from ``cells`` or ``rows`` when given, otherwise from
    cells summed in the database (:func:`load_cells`). The same data gives the same figures either way."""
    flt = flt or VerdictFilter()
    if cells is None:
        cells = cells_from_rows(rows) if rows is not None else load_cells(flt)
    cells = list(cells)
    table = debater_ratings(cells, rounds=rounds, seed=seed)
    return Report(
        filter=flt,
        verdicts=sum(c.n for c in cells),
        debater_ratings=table,
        role_ratings=role_ratings(cells, rounds=rounds, seed=seed),
        accuracy_by_protocol=accuracy_by_protocol(cells),
        accuracy_by_judge=accuracy_by_judge(cells),
        accuracy_by_condition=accuracy_by_condition(cells),
        accuracy_vs_rating=accuracy_vs_rating(cells, table),
        calibration=calibration(cells),
        biases=biases(cells),
        judge_load=judge_load(cells),
    )


def _round(value: float, digits: int) -> float | str:
    return "" if not math.isfinite(value) else round(value, digits)


Table = tuple[list[str], list[list[object]]]


def report_tables(report: Report) -> dict[str, Table]:
    """The report's CSV tables: name -> (header, rows). Empty cells where there is no value."""

    def ratings_rows(table: RatingTable) -> list[list[object]]:
        return [
            ["" if r.too_few_games else r.rank, r.name, _round(r.elo, 1), _round(r.elo_lower, 1), _round(r.elo_upper, 1),
             _round(r.strength, 4), r.games, r.wins, r.too_few_games]
            for r in table.ratings
        ]

    def acc_rows(items: Sequence[AccuracyRow]) -> list[list[object]]:
        return [[a.rank, a.key, a.n, a.correct, a.accuracy, a.lower, a.upper, a.brier, a.mean_p_correct] for a in items]

    rating_header = ["rank", "name", "elo", "elo_lower", "elo_upper", "bt_strength", "games", "wins", "too_few_games"]
    acc_header = ["rank", "group", "n", "correct", "accuracy", "lower", "upper", "brier", "mean_p_correct"]
    b = report.biases
    return {
        "ratings": (rating_header, ratings_rows(report.debater_ratings)),
        "role_ratings": (rating_header, ratings_rows(report.role_ratings)),
        "accuracy_protocol": (acc_header, acc_rows(report.accuracy_by_protocol)),
        "accuracy_judge": (acc_header, acc_rows(report.accuracy_by_judge)),
        "accuracy_condition": (acc_header, acc_rows(report.accuracy_by_condition)),
        "accuracy_vs_rating": (
            ["protocol", "debater", "elo", "elo_lower", "elo_upper", "accuracy", "lower", "upper", "n", "self_play", "too_few_games"],
            [[p.protocol, p.debater, _round(p.elo, 1), _round(p.elo_lower, 1), _round(p.elo_upper, 1), p.accuracy, p.lower, p.upper, p.n,
              p.self_play, p.too_few_games] for p in report.accuracy_vs_rating],
        ),
        "reliability": (
            ["lower", "upper", "mean_confidence", "accuracy", "count"],
            [[b_.lower, b_.upper, _round(b_.mean_confidence, 6), _round(b_.accuracy, 6), b_.count] for b_ in report.calibration.bins],
        ),
        "position_bias": (
            ["judge", "kind", "n", "position_bias", "lower", "upper"],
            [["all judges", "any", b.position.n, _round(b.position.bias, 6), _round(b.position.lower, 6), _round(b.position.upper, 6)]]
            + [[j.judge, j.kind, j.bias.n, _round(j.bias.bias, 6), _round(j.bias.lower, 6), _round(j.bias.upper, 6)] for j in b.position_by_judge],
        ),
    }


VERDICT_HEADER = [
    "verdict_id", "debate_id", "tournament_id", "protocol", "kind", "origin", "judge", "role", "debater_a", "debater_b",
    "correct_index", "p_a", "p_b", "shown_first", "correct", "position_bias", "condition", "included_in_paper",
    "first_side",
]


def verdict_table(rows: Sequence[VerdictRow]) -> Table:
    """verdicts.csv: one line per verdict; ``position_bias`` is this verdict's share of the page's
    figure (:attr:`VerdictRow.first_answer_bias`), so the column's mean is the page's position bias."""
    return (
        VERDICT_HEADER,
        [
            [r.verdict_id, r.debate_id, r.tournament_id, r.protocol, r.kind, r.origin, r.judge, r.role, r.debater_a, r.debater_b,
             r.correct_index, r.p_a, r.p_b, r.shown_first, r.correct, round(r.first_answer_bias, 6), r.condition, r.included_in_paper,
             r.first_side]
            for r in rows
        ],
    )


def csv_tables(report: Report, rows: Sequence[VerdictRow]) -> dict[str, Table]:
    """Every CSV table: the report's and verdicts.csv."""
    return {**report_tables(report), "verdicts": verdict_table(rows)}


TABLES = ("ratings", "role_ratings", "accuracy_protocol", "accuracy_judge", "accuracy_condition", "accuracy_vs_rating",
          "reliability", "position_bias", "verdicts")
