"""A tournament's definition: parse, validate against the database, and expand into debates."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from arena.constitution import default_constitution
from arena.engine.protocol import PROTOCOLS, Limits, ProtocolError, make_protocol
from arena.models import Constitution, Question, QuestionSet
from debaters.models import DebaterProfile
from judging.models import JudgeProfile
from judging.studies import HumanVerdicts, parse_human_verdicts

KNOWN_KEYS = {
    "name", "description", "questions", "question_set", "debaters", "protocols", "judges", "limits",
    "constitution", "seed", "self_play", "chunk_size", "max_debates", "settings", "human",
}
# Debate settings the tournament itself decides for each debate.
QUESTION_KEYS = {"set", "ids", "match", "limit"}
LIMIT_KEYS = {"rounds", "max_tokens", "word_limit", "context_tokens"}
RESERVED_SETTINGS = {"shown_first", "consultant_side", "open_choice"} | LIMIT_KEYS
DEFAULT_CHUNK = 8
# Profiles of debaters known only from imported transcripts (judging.nyu): there is no model to run.
IMPORTED_BACKEND = "imported"
DEFAULT_MAX_DEBATES = 20000

EXAMPLE = """\
# A tournament: every pair of debaters meets on every question, each debater arguing the right and
# the wrong answer, each debate shown to the judges in both answer orders.
name: smollm-sampling
description: Does sampling temperature change who wins?
questions:            # a question set by name, optionally ids: [...], match: TEXT and/or limit: N
  set: quality-sample
  limit: 4
debaters: [smollm2-embedded, smollm2-hot]   # debater profiles; create smollm2-hot in the admin first
                                            # (the embedded model with temperature 1.2, say)
protocols: [debate]   # any of: debate, interactive, consultancy, open-debate, open-consultancy, naive, expert
judges: [smollm2-judge]                     # AI judge profile names: one verdict each per debate
# human: {fraction: 0.25, verdicts: 2, mode: offline}   # also human verdicts on a random 25% (docs/judging.md)
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
    # Human verdicts next to the AI panel (docs/judging.md): a study is made for them.
    human: HumanVerdicts | None = None

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
            **({"human": self.human.to_config()} if self.human else {}),
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
        problems.append("questions must be a set name or a mapping with set, ids, match and/or limit")
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
    match = raw.get("match")
    if match is not None:
        if not isinstance(match, str) or not match.strip():
            problems.append("questions.match must be text found in the questions wanted")
        else:
            # Case-insensitive, in the question's text or its external id.
            needle = match.strip().casefold()
            questions = [q for q in questions if needle in q.question.casefold() or needle in q.external_id.casefold()]
    limit = raw.get("limit")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            problems.append("questions.limit must be a positive integer")
        else:
            questions = questions[:limit]
    if not questions and not any(p.startswith("question set") for p in problems):
        problems.append(
            f"the question selection is empty (set {set_name!r} has {qs.count()} question(s)"
            + (f", none matching {match!r})" if isinstance(match, str) and match.strip() else ")")
        )
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
    human = parse_human_verdicts(data.get("human"), problems)
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
        human=human,
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
