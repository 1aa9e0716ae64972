"""Tournaments: debaters × questions × protocols, judged by a panel of AI judges.

A tournament is defined by a small document (a YAML file or the browser form)::

    name: smollm-sampling
    questions: {set: quality-sample, limit: 16}      # or ids: [...]; or just the set's name
    debaters: [smollm2-embedded, smollm2-hot]         # DebaterProfile names
    protocols: [debate]                               # names in arena.engine.protocol.PROTOCOLS
    judges: [smollm2-judge]                           # JudgeProfile names: one AI verdict each
    limits: {rounds: 2, max_tokens: 160, word_limit: 120, context_tokens: 600}
    seed: 0
    chunk_size: 8                                     # debates per worker task (one lockstep batch)

:func:`validate` checks it against the database and reports every problem at once
(:class:`TournamentConfigError`). :func:`plan` expands it: for a two-debater protocol every
unordered pair of distinct debaters meets on every question with both side assignments (each
debater argues the right and the wrong answer) and both answer orders for the judge; a
one-speaker protocol (consultancy) gives each debater both sides and both orders; a protocol in
which nobody speaks (naive, expert judge) gives each question both orders. The order is stored in
the debate's settings as ``shown_first`` and copied into every AI verdict.

Each planned debate has a ``tournament_key``; the unique constraint on (tournament, key) makes
creation idempotent. Debate seeds derive from the tournament seed and the key, so a re-run of the
same definition gives the same transcripts on a deterministic backend.

Running: :func:`run_chunk` runs a list of debates with the lockstep batch runner, watches the
tournament's status while they run (pause and cancel stop them within ``poll_s``; the turn in
flight is discarded, committed turns are kept), then lets every judge of the panel give its
verdict on each finished debate. Celery tasks (:mod:`arena.tournament_tasks`) and the inline
command both call it.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from arena.constitution import default_constitution
from arena.engine.protocol import PROTOCOLS, Limits, ProtocolError, make_protocol
from arena.models import Constitution, Debate, Question, QuestionSet, Tournament, Turn
from debaters.backends.base import BackendError, BackendSpec, ModelAPI
from debaters.models import DebaterProfile
from judging.models import JudgeProfile, Verdict

KNOWN_KEYS = {
    "name", "description", "questions", "question_set", "debaters", "protocols", "judges", "limits",
    "constitution", "seed", "self_play", "chunk_size", "max_debates", "settings",
}
# Debate settings the tournament itself decides for each debate.
QUESTION_KEYS = {"set", "ids", "limit"}
LIMIT_KEYS = {"rounds", "max_tokens", "word_limit", "context_tokens"}
RESERVED_SETTINGS = {"shown_first", "consultant_side", "open_choice"} | LIMIT_KEYS
DEFAULT_CHUNK = 8
# Profiles of debaters known only from imported transcripts (judging.nyu): there is no model to run.
IMPORTED_BACKEND = "imported"
DEFAULT_MAX_DEBATES = 20000
ACTIVE = (Debate.Status.QUEUED, Debate.Status.RUNNING)

ModelFactory = Callable[[BackendSpec], ModelAPI]

EXAMPLE = """\
# A tournament: every pair of debaters meets on every question, each debater arguing the right and
# the wrong answer, each debate shown to the judges in both answer orders.
name: smollm-sampling
description: Does sampling temperature change who wins?
questions:            # a question set by name, optionally ids: [...] and/or limit: N
  set: quality-sample
  limit: 4
debaters: [smollm2-embedded, smollm2-hot]   # debater profiles; create smollm2-hot in the admin first
                                            # (the embedded model with temperature 1.2, say)
protocols: [debate]   # any of: debate, interactive, consultancy, open-debate, open-consultancy, naive, expert
judges: [smollm2-judge]                     # AI judge profile names: one verdict each per debate
limits: {rounds: 2, max_tokens: 120, word_limit: 100, context_tokens: 600}
settings: {}          # other protocol settings for every debate (scoring, best_of_n, critique_rounds, ...)
seed: 0               # debate seeds derive from it: a re-run gives the same transcripts
chunk_size: 8         # debates per worker task, stepped together as one batch
self_play: false      # also let each debater argue against itself
"""


class TournamentConfigError(ValueError):
    """The definition is invalid; ``problems`` lists every reason, each one a person can act on."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid tournament definition:\n" + "\n".join(f"  - {p}" for p in problems))


class TournamentStateError(ValueError):
    """The tournament cannot do that in its current state (e.g. resume a finished one)."""


@dataclass(frozen=True)
class TournamentSpec:
    """A validated definition, resolved against the database."""

    name: str
    description: str
    question_set: QuestionSet
    questions: tuple[Question, ...]
    debaters: tuple[DebaterProfile, ...]
    protocols: tuple[str, ...]
    judges: tuple[JudgeProfile, ...]
    limits: Limits
    extra_settings: dict[str, object]
    constitution: Constitution
    seed: int
    self_play: bool
    chunk_size: int
    max_debates: int

    def to_config(self) -> dict[str, object]:
        """The definition as stored on the tournament (names, plus the resolved question ids)."""
        return {
            "name": self.name,
            "description": self.description,
            "questions": {"set": self.question_set.name, "ids": [q.external_id for q in self.questions]},
            "debaters": [d.name for d in self.debaters],
            "protocols": list(self.protocols),
            "judges": [j.name for j in self.judges],
            "limits": self.limits.to_settings(),
            "settings": dict(self.extra_settings),
            "constitution": self.constitution.label,
            "seed": self.seed,
            "self_play": self.self_play,
            "chunk_size": self.chunk_size,
            "max_debates": self.max_debates,
        }


@dataclass(frozen=True)
class PlannedDebate:
    key: str
    question: Question
    protocol: str
    debater_a: DebaterProfile
    debater_b: DebaterProfile
    shown_first: int
    settings: dict[str, object]
    seed: int


# ---------------------------------------------------------------------------------------
# Definition: parse, validate, expand
# ---------------------------------------------------------------------------------------


def parse_yaml(text: str) -> dict[str, object]:
    """The YAML document as a mapping; a syntax error names the line."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TournamentConfigError([f"not valid YAML{where}: {problem}"]) from None
    if not isinstance(data, dict):
        raise TournamentConfigError(["the definition must be a mapping (name: ..., debaters: [...], ...)"])
    return data


def _names(value: object, what: str, problems: list[str]) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        problems.append(f"{what} must be a list of names")
        return []
    names = [v.strip() for v in value]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"{what} lists {', '.join(duplicates)} more than once")
    return list(dict.fromkeys(names))


def _int(data: Mapping[str, object], key: str, default: int, low: int, high: int, problems: list[str]) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{key} must be an integer")
        return default
    if not low <= value <= high:
        problems.append(f"{key} must be between {low} and {high} (got {value})")
    return value


def _questions(data: Mapping[str, object], problems: list[str]) -> tuple[QuestionSet | None, list[Question]]:
    raw = data.get("questions", data.get("question_set"))
    if raw is None:
        problems.append("questions: name a question set (questions: {set: NAME, limit: N} or questions: NAME)")
        return None, []
    if isinstance(raw, str):
        raw = {"set": raw}
    if not isinstance(raw, dict):
        problems.append("questions must be a set name or a mapping with set, ids and/or limit")
        return None, []
    unknown = sorted(set(raw) - QUESTION_KEYS)
    if unknown:
        problems.append(f"questions: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(QUESTION_KEYS))}")
    set_name = raw.get("set")
    if not isinstance(set_name, str) or not set_name.strip():
        problems.append("questions.set must name a question set")
        return None, []
    qset = QuestionSet.objects.filter(name=set_name).first()
    if qset is None:
        known = ", ".join(QuestionSet.objects.order_by("name").values_list("name", flat=True)[:20]) or "none"
        problems.append(f"unknown question set {set_name!r} (known: {known})")
        return None, []
    qs = Question.objects.filter(question_set=qset).order_by("id")
    ids = raw.get("ids")
    if ids is not None:
        wanted = _names(ids, "questions.ids", problems)
        found = {q.external_id: q for q in qs.filter(external_id__in=wanted)}
        missing = [i for i in wanted if i not in found]
        if missing:
            problems.append(f"question set {set_name!r} has no question(s) {', '.join(missing[:10])}")
        questions = [found[i] for i in wanted if i in found]
    else:
        questions = list(qs)
    limit = raw.get("limit")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            problems.append("questions.limit must be a positive integer")
        else:
            questions = questions[:limit]
    if not questions and not any(p.startswith("question set") for p in problems):
        problems.append(f"the question selection is empty (set {set_name!r} has {qs.count()} question(s))")
    return qset, questions


def _constitution(value: object, problems: list[str]) -> Constitution | None:
    if value is None:
        return default_constitution()
    if not isinstance(value, str) or not value.strip():
        problems.append("constitution must be NAME or NAME@VERSION")
        return None
    name, _, version = value.partition("@")
    qs = Constitution.objects.filter(name=name.strip())
    if version:
        if not version.isdigit():
            problems.append(f"constitution version must be a number, not {version!r}")
            return None
        qs = qs.filter(version=int(version))
    found = qs.order_by("-version").first()
    if found is None:
        problems.append(f"unknown constitution {value!r}")
    return found


def speakers(protocol: str) -> int:
    """How many debaters speak under this protocol (2, 1 or 0), as its class declares."""
    return int(getattr(PROTOCOLS[protocol], "speakers", 2))


def chooses_side(protocol: str) -> bool:
    """Open protocols: the debater chooses its answer, so the tournament cannot assign sides."""
    return bool(getattr(PROTOCOLS[protocol], "open_choice", False))


def validate(data: Mapping[str, object]) -> TournamentSpec:
    """Check a definition against the database; raises :class:`TournamentConfigError` listing
    every problem (unknown keys, debaters, judges, protocols, an empty question selection,
    impossible limits, a tournament too large)."""
    problems: list[str] = []
    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_KEYS))}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append("name must be a non-empty string")
        name = ""
    elif len(name) > 200:
        problems.append("name must be at most 200 characters")
    description = data.get("description", "")
    if not isinstance(description, str):
        problems.append("description must be a string")
        description = ""

    qset, questions = _questions(data, problems)

    debater_names = _names(data.get("debaters", []), "debaters", problems)
    debaters = {d.name: d for d in DebaterProfile.objects.filter(name__in=debater_names)}
    for profile in debaters.values():
        if profile.backend == IMPORTED_BACKEND:
            problems.append(f"debater profile {profile.name!r} was imported with a dataset's transcripts and cannot be run")
    for missing in [n for n in debater_names if n not in debaters]:
        known = ", ".join(DebaterProfile.objects.order_by("name").values_list("name", flat=True)[:20]) or "none"
        problems.append(f"unknown debater profile {missing!r} (known: {known})")
    if not debater_names:
        problems.append("debaters: list at least one debater profile")

    judge_names = _names(data.get("judges", []), "judges", problems)
    judges = {j.name: j for j in JudgeProfile.objects.filter(name__in=judge_names)}
    for missing in [n for n in judge_names if n not in judges]:
        known = ", ".join(JudgeProfile.objects.order_by("name").values_list("name", flat=True)[:20]) or "none"
        problems.append(f"unknown judge profile {missing!r} (known: {known})")
    for judge in judges.values():
        if judge.chain_of_thought and judge.max_cot_tokens < 1:
            problems.append(f"judge profile {judge.name!r} asks for chain of thought with max_cot_tokens 0")

    protocols = _names(data.get("protocols", ["debate"]), "protocols", problems)
    for protocol in protocols:
        if protocol not in PROTOCOLS:
            problems.append(f"unknown protocol {protocol!r}; known: {', '.join(sorted(PROTOCOLS))}")
    if not protocols:
        problems.append("protocols: list at least one protocol")

    raw_limits = data.get("limits", {})
    limits = Limits()
    if not isinstance(raw_limits, dict):
        problems.append("limits must be a mapping (rounds, max_tokens, word_limit, context_tokens)")
    else:
        bad = sorted(set(raw_limits) - LIMIT_KEYS)
        if bad:
            problems.append(f"limits: unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(LIMIT_KEYS))}")
        try:
            limits = Limits.from_settings({k: v for k, v in raw_limits.items() if k in LIMIT_KEYS})
        except ProtocolError as exc:
            problems.append(f"limits: {exc}")
        for profile in debaters.values():
            profile_max = (profile.sampling or {}).get("max_tokens")
            if isinstance(profile_max, int) and profile_max < 8:
                problems.append(f"debater {profile.name!r} allows only {profile_max} tokens per speech (at least 8 needed)")

    extra = data.get("settings", {})
    if not isinstance(extra, dict):
        problems.append("settings must be a mapping of protocol settings (scoring, best_of_n, ...)")
        extra = {}
    reserved = sorted(set(extra) & RESERVED_SETTINGS)
    if reserved:
        problems.append(f"settings: {', '.join(reserved)} are set by the tournament (limits go under limits:)")
        extra = {k: v for k, v in extra.items() if k not in RESERVED_SETTINGS}
    for protocol in [p for p in protocols if p in PROTOCOLS]:
        try:
            make_protocol(protocol, {**limits.to_settings(), **extra})
        except ProtocolError as exc:
            problems.append(f"settings for {protocol}: {exc}")

    constitution = _constitution(data.get("constitution"), problems)
    seed = _int(data, "seed", 0, 0, 2**31 - 1, problems)
    chunk_size = _int(data, "chunk_size", DEFAULT_CHUNK, 1, 256, problems)
    max_debates = _int(data, "max_debates", DEFAULT_MAX_DEBATES, 1, 1_000_000, problems)
    self_play = data.get("self_play", False)
    if not isinstance(self_play, bool):
        problems.append("self_play must be true or false")
        self_play = False

    if not problems:
        # Only now are all names known to resolve: count what the expansion would create.
        total = 0
        for protocol in protocols:
            n_speakers = speakers(protocol)
            if n_speakers == 2 and len(debater_names) < 2 and not self_play:
                problems.append(
                    f"protocol {protocol!r} pairs two debaters: list at least two debaters (or set self_play: true)"
                )
            total += _pairings_per_question(len(debater_names), n_speakers, chooses_side(protocol), self_play) * len(questions)
        if total > max_debates:
            problems.append(
                f"the tournament would create {total} debates, more than max_debates ({max_debates}); "
                "select fewer questions or debaters, or raise max_debates"
            )
    if problems:
        raise TournamentConfigError(problems)
    assert qset is not None and constitution is not None and isinstance(name, str)
    return TournamentSpec(
        name=name.strip(),
        description=description,
        question_set=qset,
        questions=tuple(questions),
        debaters=tuple(debaters[n] for n in debater_names),
        protocols=tuple(protocols),
        judges=tuple(judges[n] for n in judge_names),
        limits=limits,
        extra_settings=dict(extra),
        constitution=constitution,
        seed=seed,
        self_play=self_play,
        chunk_size=chunk_size,
        max_debates=max_debates,
    )


def _pairings_per_question(n_debaters: int, n_speakers: int, open_choice: bool, self_play: bool) -> int:
    """Debates per question and protocol (both answer orders included)."""
    if n_speakers >= 2:
        return 2 * (n_debaters * (n_debaters - 1) + (n_debaters if self_play else 0))
    if n_speakers == 1:
        return 2 * n_debaters * (1 if open_choice else 2)
    return 2


def debate_seed(tournament_seed: int, key: str) -> int:
    digest = hashlib.sha256(f"{tournament_seed}|{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def plan(spec: TournamentSpec) -> list[PlannedDebate]:
    """Every debate of the tournament, in a stable order (question, protocol, pairing, order)."""
    planned: list[PlannedDebate] = []
    base = {**spec.limits.to_settings(), **spec.extra_settings}

    def add(question: Question, protocol: str, a: DebaterProfile, b: DebaterProfile, key: str, extra: dict[str, object]) -> None:
        for shown_first in (0, 1):
            full_key = f"{key}|o{shown_first}"
            planned.append(
                PlannedDebate(
                    key=full_key,
                    question=question,
                    protocol=protocol,
                    debater_a=a,
                    debater_b=b,
                    shown_first=shown_first,
                    settings={**base, **extra, "shown_first": shown_first},
                    seed=debate_seed(spec.seed, full_key),
                )
            )

    for question in spec.questions:
        for protocol in spec.protocols:
            n_speakers = speakers(protocol)
            prefix = f"{protocol}|q{question.pk}"
            if n_speakers >= 2:
                for i, x in enumerate(spec.debaters):
                    for y in spec.debaters[i + 1 :]:
                        add(question, protocol, x, y, f"{prefix}|{x.name}|{y.name}", {})
                        add(question, protocol, y, x, f"{prefix}|{y.name}|{x.name}", {})
                    if spec.self_play:
                        add(question, protocol, x, x, f"{prefix}|{x.name}|{x.name}", {})
            elif n_speakers == 1:
                for x in spec.debaters:
                    if chooses_side(protocol):
                        add(question, protocol, x, x, f"{prefix}|{x.name}", {})
                        continue
                    for side in (0, 1):
                        # The consultant is the same profile on both FKs; the protocol reads the side.
                        add(question, protocol, x, x, f"{prefix}|{x.name}|s{side}", {"consultant_side": side})
            else:
                first = spec.debaters[0]
                add(question, protocol, first, first, prefix, {})
    return planned


# ---------------------------------------------------------------------------------------
# Creation and control
# ---------------------------------------------------------------------------------------


def create_tournament(spec: TournamentSpec, created_by: AbstractBaseUser | None = None) -> Tournament:
    """Store the tournament (pending) and create its debates."""
    with transaction.atomic():
        tournament = Tournament.objects.create(
            name=spec.name, config=spec.to_config(), created_by=created_by, stats={"active_s": 0.0}
        )
        ensure_debates(tournament, spec)
    return tournament


def spec_from_config(tournament: Tournament) -> TournamentSpec:
    """Re-resolve the stored definition (question ids frozen at creation)."""
    return validate(tournament.config)


def ensure_debates(tournament: Tournament, spec: TournamentSpec | None = None) -> int:
    """Create the tournament's missing debates; returns how many were created. Idempotent: the
    unique (tournament, tournament_key) constraint skips every pairing that exists."""
    spec = spec or spec_from_config(tournament)
    planned = plan(spec)
    existing = set(Debate.objects.filter(tournament=tournament).values_list("tournament_key", flat=True))
    rows = [
        Debate(
            question=p.question,
            tournament=tournament,
            tournament_key=p.key,
            protocol=p.protocol,
            settings=p.settings,
            constitution=spec.constitution,
            debater_a=p.debater_a,
            debater_b=p.debater_b,
            seed=p.seed,
            created_by=tournament.created_by,
        )
        for p in planned
        if p.key not in existing
    ]
    # A concurrent expansion may insert the same keys: the constraint turns those into no-ops.
    Debate.objects.bulk_create(rows, batch_size=500, ignore_conflicts=True)
    return len(rows)


def _tally_active(stats: dict[str, object], now: datetime) -> dict[str, object]:
    """Add the time since the last (re)start to ``active_s``; running time excludes pauses."""
    stats = dict(stats or {})
    resumed = stats.pop("resumed_at", None)
    if isinstance(resumed, str):
        stats["active_s"] = float(stats.get("active_s", 0.0) or 0.0) + max(
            0.0, (now - datetime.fromisoformat(resumed)).total_seconds()
        )
    return stats


def _set_status(tournament_id: int, allowed: Iterable[str], status: str, *, running: bool) -> Tournament:
    now = timezone.now()
    with transaction.atomic():
        tournament = Tournament.objects.select_for_update().get(pk=tournament_id)
        if tournament.status not in allowed:
            raise TournamentStateError(f"tournament {tournament.pk} is {tournament.status}; cannot make it {status}")
        stats = _tally_active(tournament.stats, now)
        if running:
            stats["resumed_at"] = now.isoformat()
        tournament.stats = stats
        tournament.status = status
        fields = ["status", "stats"]
        if running and tournament.started_at is None:
            tournament.started_at = now
            fields.append("started_at")
        if status in (Tournament.Status.CANCELLED, Tournament.Status.FINISHED, Tournament.Status.FAILED):
            tournament.finished_at = now
            fields.append("finished_at")
        tournament.save(update_fields=fields)
    return tournament


def start(tournament_id: int, *, enqueue: bool = True) -> Tournament:
    """Set a pending tournament running and queue its work on Celery (after commit)."""
    tournament = _set_status(tournament_id, [Tournament.Status.PENDING], Tournament.Status.RUNNING, running=True)
    if enqueue:
        transaction.on_commit(lambda: _enqueue_dispatch(tournament_id))
    return tournament


def pause(tournament_id: int) -> Tournament:
    """Stop handing out work. Debates in flight are stopped by their worker within a few seconds
    (their committed turns are kept) and go back to the queue, ready for :func:`resume`."""
    with transaction.atomic():
        tournament = _set_status(tournament_id, [Tournament.Status.RUNNING], Tournament.Status.PAUSED, running=False)
        # Taking the lease away makes a worker that is still mid-turn unable to commit it.
        Debate.objects.filter(tournament_id=tournament_id, status=Debate.Status.RUNNING).update(
            status=Debate.Status.QUEUED, lease_owner="", lease_expires=None
        )
    return tournament


def resume(tournament_id: int, *, enqueue: bool = True) -> Tournament:
    tournament = _set_status(tournament_id, [Tournament.Status.PAUSED], Tournament.Status.RUNNING, running=True)
    if enqueue:
        transaction.on_commit(lambda: _enqueue_dispatch(tournament_id))
    return tournament


def cancel(tournament_id: int) -> Tournament:
    """Cancel for good: every debate not yet over is cancelled (finished ones and verdicts are kept)."""
    active = [Tournament.Status.PENDING, Tournament.Status.RUNNING, Tournament.Status.PAUSED]
    with transaction.atomic():
        tournament = _set_status(tournament_id, active, Tournament.Status.CANCELLED, running=False)
        Debate.objects.filter(tournament_id=tournament_id, status__in=ACTIVE).update(
            status=Debate.Status.CANCELLED, lease_expires=None, finished_at=timezone.now(), error="tournament cancelled"
        )
    return tournament


def _enqueue_dispatch(tournament_id: int) -> None:
    from arena.tournament_tasks import dispatch_tournament_task

    dispatch_tournament_task.delay(tournament_id)


# ---------------------------------------------------------------------------------------
# Work: what is left, chunks, judging, finishing
# ---------------------------------------------------------------------------------------


def panel(tournament: Tournament) -> list[JudgeProfile]:
    names = list((tournament.config or {}).get("judges", []))
    found = {j.name: j for j in JudgeProfile.objects.filter(name__in=names)}
    return [found[n] for n in names if n in found]


def _judge_errors(tournament: Tournament) -> dict[str, str]:
    errors = (tournament.stats or {}).get("judge_errors", {})
    return dict(errors) if isinstance(errors, dict) else {}


def unjudged_debate_ids(tournament: Tournament, judges: Sequence[JudgeProfile] | None = None) -> list[int]:
    """Finished debates still missing a verdict from some judge of the panel (failed judgings,
    recorded in the tournament's stats, do not count as missing)."""
    judges = panel(tournament) if judges is None else judges
    if not judges:
        return []
    failed = _judge_errors(tournament)
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
    from judging.ai_verdicts import give_ai_verdict

    def _pending() -> list[tuple[int, int]]:
        tournament = Tournament.objects.get(pk=tournament_id)
        judges = panel(tournament)
        if not judges:
            return []
        failed = _judge_errors(tournament)
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
    from arena.runner import run_debates

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
        finished = _set_status(tournament_id, [Tournament.Status.RUNNING], status, running=False)
    except TournamentStateError:
        return False
    if failed:
        Tournament.objects.filter(pk=finished.pk).update(error=f"{failed} of {total} debates failed")
    return True


# ---------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------


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
        n=Count("pk"), tokens=Sum("completion_tokens"), dead=Count("pk", filter=Q(debate__status__in=dead))
    )
    turns_total += int(turn_stats["dead"] or 0)
    judges = len((tournament.config or {}).get("judges", []))
    verdicts = Verdict.objects.filter(debate__tournament=tournament, kind=Verdict.Kind.AI).count()
    judge_errors = len(_judge_errors(tournament))
    stats = tournament.stats or {}
    active_s = float(stats.get("active_s", 0.0) or 0.0)
    resumed = stats.get("resumed_at")
    if tournament.status == Tournament.Status.RUNNING and isinstance(resumed, str):
        active_s += max(0.0, (timezone.now() - datetime.fromisoformat(resumed)).total_seconds())
    tokens = int(turn_stats["tokens"] or 0)
    turns_done = int(turn_stats["n"] or 0)
    tokens_per_s = tokens / active_s if active_s > 0 and tokens else None
    verdicts_expected = judges * counts.get(Debate.Status.FINISHED, 0) + judges * (
        counts.get(Debate.Status.QUEUED, 0) + counts.get(Debate.Status.RUNNING, 0)
    )
    work_done = turns_done + verdicts + judge_errors
    work_total = max(turns_total, turns_done) + verdicts_expected
    eta_s: float | None = None
    if tournament.status == Tournament.Status.RUNNING and work_done > 0 and active_s > 0:
        eta_s = active_s * max(0, work_total - work_done) / work_done
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


# ---------------------------------------------------------------------------------------
# Inline: the whole tournament in this process (the command's --inline, the benchmark)
# ---------------------------------------------------------------------------------------


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
