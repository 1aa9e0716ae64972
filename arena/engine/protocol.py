"""Debate protocols as pure functions of the debate's state.

A protocol says which speeches exist (index, round, side), which earlier speeches each speaker may
see, which speeches may be generated together, what the judge may see, and how the judge is held
to account (the judging rules: how many speeches before a verdict, whether 50/50 is allowed, and
the scoring rule). Runners (live and batch) ask it what to do next and feed back what happened;
nothing here touches a database or a model.

The protocols are the ones the debate literature compares (docs/protocols.md):

========================  ==============================================  ==============================
protocol                  who speaks                                      the judge sees
========================  ==============================================  ==============================
``debate``                two debaters, opposite answers; round 1         question, answers, transcript
                          simultaneous, later rounds sequential
``interactive``           as debate; after each round but the last the    as debate, and the questions
                          judge asks a question both debaters answer
``consultancy``           one consultant, assigned the right or the       question, answers, transcript
                          wrong answer at random (drawn from the seed)
``open-debate``           as debate, but the first debater chooses the    as debate
                          answer it defends (Kenton et al. 2024)
``open-consultancy``      as consultancy, but the consultant chooses      as consultancy
``naive``                 nobody                                          question and answers only
``expert``                nobody                                          question, answers, the source
========================  ==============================================  ==============================

Speaking order: in the two-debater protocols (``debate``, ``interactive``, ``open-debate``) the
debater for answer ``first_side`` speaks first in every round (round 1's simultaneous openings are
indexed in that order too). ``first_side`` is drawn per debate when it is created
(:func:`draw_first_side`, stored as ``Debate.first_side``), so a judge who knows the protocol cannot
tell from the order of speeches which answer is stored first. Consultancies have one speaker and
the blind protocols none, so order does not arise there.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar


class ProtocolError(ValueError):
    """A protocol was asked for something its rules do not allow."""


@dataclass(frozen=True)
class Limits:
    rounds: int = 2
    max_tokens: int = 160
    word_limit: int = 150
    context_tokens: int | None = 1500

    def validate(self) -> None:
        if not 1 <= self.rounds <= 10:
            raise ProtocolError("rounds must be between 1 and 10")
        if not 8 <= self.max_tokens <= 8192:
            raise ProtocolError("max_tokens must be between 8 and 8192")
        if not 5 <= self.word_limit <= 5000:
            raise ProtocolError("word_limit must be between 5 and 5000")
        if self.context_tokens is not None and self.context_tokens < 50:
            raise ProtocolError("context_tokens must be at least 50 (or empty for the whole story)")

    @classmethod
    def from_settings(cls, data: Mapping[str, object]) -> Limits:
        def _int(name: str, default: int) -> int:
            value = data.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ProtocolError(f"{name} must be an integer")
            return value

        context = data.get("context_tokens", cls.context_tokens)
        if context is not None and (isinstance(context, bool) or not isinstance(context, int)):
            raise ProtocolError("context_tokens must be an integer or null")
        limits = Limits(
            rounds=_int("rounds", cls.rounds),
            max_tokens=_int("max_tokens", cls.max_tokens),
            word_limit=_int("word_limit", cls.word_limit),
            context_tokens=context,
        )
        limits.validate()
        return limits

    def to_settings(self) -> dict[str, object]:
        return {
            "rounds": self.rounds,
            "max_tokens": self.max_tokens,
            "word_limit": self.word_limit,
            "context_tokens": self.context_tokens,
        }

    def core(self) -> Limits:
        """Just the four limits, whatever subclass this is."""
        return Limits(self.rounds, self.max_tokens, self.word_limit, self.context_tokens)


# --- Judging rules and scoring ------------------------------------------------------------------

SCORING_RULES: tuple[str, ...] = ("log", "quadratic", "spherical")
# Michael et al. 2023 paid judges log2(p) - 0.05 per extra round (checked against every judged
# debate of their release: judgeReward == log2(p_correct) - 0.05 * numContinues).
NYU_TURN_PENALTY = 0.05
# A judge who gives the correct answer probability 0 would score -inf under the log rule.
_LOG_FLOOR = 1e-9


def raw_score(rule: str, p_gold: float, p_other: float) -> float:
    """The proper scoring rule ``rule`` for a verdict giving ``p_gold`` to the correct answer.

    - ``log``: log2(p_gold); 0 is perfect, -1 a coin flip.
    - ``quadratic`` (Brier): 1 - (1 - p_gold)^2 - p_other^2 = 2 p_gold - (p_gold^2 + p_other^2);
      1 is perfect, 0.5 a coin flip, -1 the worst.
    - ``spherical``: p_gold / sqrt(p_gold^2 + p_other^2); 1 is perfect, 0.707 a coin flip, 0 the worst.
    """
    if rule == "log":
        return math.log2(max(p_gold, _LOG_FLOOR))
    if rule == "quadratic":
        return 1.0 - (1.0 - p_gold) ** 2 - p_other**2
    if rule == "spherical":
        norm = math.sqrt(p_gold**2 + p_other**2)
        return p_gold / norm if norm > 0 else 0.0
    raise ProtocolError(f"unknown scoring rule {rule!r}; known: {', '.join(SCORING_RULES)}")


_RULE_TEXT = {
    "log": "Log score: log\u2082(p), where p is the probability you give the correct answer (0 is perfect, \u22121 is a coin flip, a confident mistake costs a lot)",
    "quadratic": "Quadratic (Brier) score: 1 \u2212 (1 \u2212 p)\u00b2 \u2212 q\u00b2, where p is the probability you give the correct answer and q the one you give the other (1 is perfect, 0.5 a coin flip, \u22121 the worst)",
    "spherical": "Spherical score: p / \u221a(p\u00b2 + q\u00b2), where p is the probability you give the correct answer and q the one you give the other (1 is perfect, 0.71 a coin flip, 0 the worst)",
}


@dataclass(frozen=True)
class JudgingRules:
    """How a verdict is accepted and scored.

    ``min_turns``: committed speeches needed before a verdict is accepted (None: all of them, so
    the verdict comes after the debate). ``allow_even``: whether 50/50 is a verdict.
    ``scoring``: one of :data:`SCORING_RULES`. ``turn_penalty``: subtracted from the score for
    every round the judge waited for after the first (the NYU study's per-turn penalty).
    """

    min_turns: int | None = None
    allow_even: bool = False
    scoring: str = "log"
    turn_penalty: float = NYU_TURN_PENALTY

    def validate(self) -> None:
        if self.scoring not in SCORING_RULES:
            raise ProtocolError(f"scoring must be one of {', '.join(SCORING_RULES)}")
        if self.min_turns is not None and not 0 <= self.min_turns <= 40:
            raise ProtocolError("min_turns must be between 0 and 40 (or empty for every speech)")
        if not (math.isfinite(self.turn_penalty) and 0.0 <= self.turn_penalty <= 1.0):
            raise ProtocolError("turn_penalty must be between 0 and 1")

    @classmethod
    def from_settings(cls, data: Mapping[str, object]) -> JudgingRules:
        min_turns = data.get("min_turns")
        if min_turns is not None and (isinstance(min_turns, bool) or not isinstance(min_turns, int)):
            raise ProtocolError("min_turns must be an integer or null")
        allow_even = data.get("allow_even", False)
        if not isinstance(allow_even, bool):
            raise ProtocolError("allow_even must be true or false")
        scoring = data.get("scoring", "log")
        if not isinstance(scoring, str):
            raise ProtocolError("scoring must be a string")
        penalty = data.get("turn_penalty", NYU_TURN_PENALTY)
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)):
            raise ProtocolError("turn_penalty must be a number")
        rules = cls(min_turns=min_turns, allow_even=allow_even, scoring=scoring, turn_penalty=float(penalty))
        rules.validate()
        return rules

    def to_settings(self) -> dict[str, object]:
        return {
            "min_turns": self.min_turns,
            "allow_even": self.allow_even,
            "scoring": self.scoring,
            "turn_penalty": self.turn_penalty,
        }

    def required_turns(self, total_turns: int) -> int:
        return total_turns if self.min_turns is None else min(self.min_turns, total_turns)

    def score(self, p_gold: float, p_other: float, rounds_seen: int) -> float:
        """The judge's score: the scoring rule minus the penalty for each round after the first."""
        return raw_score(self.scoring, p_gold, p_other) - self.turn_penalty * continues(rounds_seen)

    def describe(self) -> str:
        """The rule in words, for the judge's page."""
        text = _RULE_TEXT[self.scoring]
        if self.turn_penalty:
            text += f", minus {self.turn_penalty:g} for every round after the first that you waited for"
        return text + "."


def continues(rounds_seen: int) -> int:
    """Rounds the judge waited for beyond the first (the NYU release's ``numContinues``)."""
    return max(0, rounds_seen - 1)


# --- Per-debate settings ------------------------------------------------------------------------

MAX_CRITIQUE_ROUNDS = 4
MAX_BEST_OF_N = 8


def _per_side(data: Mapping[str, object], name: str, default: int, low: int, high: int) -> tuple[int, int]:
    value = data.get(name, default)
    if isinstance(value, bool):
        raise ProtocolError(f"{name} must be an integer or a pair of integers")
    if isinstance(value, int):
        pair = (value, value)
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ProtocolError(f"{name} must be an integer or a pair of integers")
    if not all(low <= v <= high for v in pair):
        raise ProtocolError(f"{name} must be between {low} and {high}")
    return pair


@dataclass(frozen=True)
class ProtocolSettings(Limits):
    """Limits plus the judging rules and the per-debater options: everything in ``Debate.settings``.

    It is a :class:`Limits`, so it goes wherever limits go (``services.create_debate(limits=...)``
    stores ``to_settings()``). ``critique_rounds`` and ``best_of_n`` are per side (answer 0, answer
    1): K critique-and-revision rounds (0 = off) and N candidates (1 = off). ``consultant_side``
    fixes the consultant's answer; left empty, it is drawn from the debate's seed.
    ``judge_profile`` names the AI judge profile that scores best-of-N candidates, asks questions
    in interactive debates with no human judge and checks for concessions (empty: the speaker's
    own model).
    """

    rules: JudgingRules = field(default_factory=JudgingRules)
    consultant_side: int | None = None
    critique_rounds: tuple[int, int] = (0, 0)
    best_of_n: tuple[int, int] = (1, 1)
    judge_profile: str = ""

    def validate(self) -> None:
        super().validate()
        self.rules.validate()
        if self.consultant_side not in (None, 0, 1):
            raise ProtocolError("consultant_side must be 0, 1 or empty")
        if not all(0 <= k <= MAX_CRITIQUE_ROUNDS for k in self.critique_rounds):
            raise ProtocolError(f"critique_rounds must be between 0 and {MAX_CRITIQUE_ROUNDS}")
        if not all(1 <= n <= MAX_BEST_OF_N for n in self.best_of_n):
            raise ProtocolError(f"best_of_n must be between 1 and {MAX_BEST_OF_N}")

    @classmethod
    def from_settings(cls, data: Mapping[str, object]) -> ProtocolSettings:
        limits = Limits.from_settings(data)
        side = data.get("consultant_side")
        if side is not None and (isinstance(side, bool) or side not in (0, 1)):
            raise ProtocolError("consultant_side must be 0, 1 or empty")
        judge = data.get("judge_profile", "")
        if not isinstance(judge, str):
            raise ProtocolError("judge_profile must be a profile name")
        settings = cls(
            rounds=limits.rounds,
            max_tokens=limits.max_tokens,
            word_limit=limits.word_limit,
            context_tokens=limits.context_tokens,
            rules=JudgingRules.from_settings(data),
            consultant_side=side if isinstance(side, int) else None,
            critique_rounds=_per_side(data, "critique_rounds", 0, 0, MAX_CRITIQUE_ROUNDS),
            best_of_n=_per_side(data, "best_of_n", 1, 1, MAX_BEST_OF_N),
            judge_profile=judge,
        )
        settings.validate()
        return settings

    def to_settings(self) -> dict[str, object]:
        out = super().to_settings()
        out.update(self.rules.to_settings())
        out["consultant_side"] = self.consultant_side
        out["critique_rounds"] = list(self.critique_rounds)
        out["best_of_n"] = list(self.best_of_n)
        out["judge_profile"] = self.judge_profile
        return out


def draw_consultant_side(seed: int) -> int:
    """The consultant's answer, drawn from the debate's seed (a string seed is hashed with SHA-512,
    so the draw is the same in every process and Python version)."""
    return random.Random(f"consultant-side:{seed}").randrange(2)


def draw_first_side(seed: int) -> int:
    """The answer whose debater speaks first in every round, drawn from the debate's seed when the
    debate is created (stored as ``Debate.first_side``); the same in every process, and independent
    of :func:`draw_consultant_side`."""
    return random.Random(f"first-side:{seed}").randrange(2)


# --- Protocols ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One speech to be given: its place in the transcript and what its speaker may see."""

    index: int
    round: int
    side: int
    visible: tuple[int, ...] = field(default=())


@dataclass(frozen=True)
class Protocol:
    """Base: a protocol is a fixed schedule of slots grouped into steps.

    A *step* is a set of slots none of which may see another; a runner may generate a step's slots
    together (one batch). Steps run in order.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    speakers: ClassVar[int] = 2
    interactive: ClassVar[bool] = False
    open_choice: ClassVar[bool] = False
    limits: Limits
    rules: JudgingRules = field(default_factory=JudgingRules)
    # The answer whose debater speaks first in every round (``Debate.first_side``, drawn at creation
    # by :func:`draw_first_side`); protocols with one speaker or none ignore it.
    first_side: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.first_side, bool) or self.first_side not in (0, 1):
            raise ProtocolError("first_side must be 0 or 1")

    def steps(self) -> list[list[Slot]]:
        raise NotImplementedError

    def speaking_order(self) -> tuple[int, int]:
        """The two answers in the order their debaters speak within a round."""
        return (self.first_side, 1 - self.first_side)

    def slots(self) -> list[Slot]:
        return [slot for step in self.steps() for slot in step]

    def pending_steps(self, done: Iterable[int]) -> list[list[Slot]]:
        """Steps still to run given the indices of committed turns; each step keeps only its missing slots.

        Raises if a committed turn is out of order, which would mean some speaker saw a speech that
        did not exist when it spoke, or if an open protocol's choice has not been made.
        """
        if self.needs_choice():
            raise ProtocolError(f"{self.name}: the debater has not chosen its answer yet")
        done_set = set(done)
        result: list[list[Slot]] = []
        for step in self.steps():
            missing = [slot for slot in step if slot.index not in done_set]
            if missing:
                result.append(missing)
            elif result:
                raise ProtocolError("a later turn was committed before an earlier step finished")
        for step in result[1:]:
            if any(slot.index in done_set for slot in step):
                raise ProtocolError("a later turn was committed before an earlier step finished")
        return result

    def total_turns(self) -> int:
        return len(self.slots())

    def required_turns(self) -> int:
        """Committed speeches a verdict needs (the judging rules, capped at the total)."""
        return self.rules.required_turns(self.total_turns())

    def scoring_rules(self) -> JudgingRules:
        """The rules a verdict is scored by. The per-round penalty prices the judge's choice to wait
        for another round, so it applies only where a verdict was possible before the end
        (``min_turns`` below the number of speeches); otherwise the penalty is 0."""
        if self.rules.turn_penalty and self.required_turns() >= self.total_turns():
            return replace(self.rules, turn_penalty=0.0)
        return self.rules

    def judge_sees_source(self) -> bool:
        return False

    def judge_sees_transcript(self) -> bool:
        return self.speakers > 0

    def speaking_sides(self) -> tuple[int, ...]:
        """The answers someone argues for, in this debate."""
        return (0, 1)

    def needs_choice(self) -> bool:
        """Open protocols: the debater must choose its answer before anyone speaks."""
        return False

    def question_rounds(self) -> tuple[int, ...]:
        """Rounds after which the judge asks a question (interactive debate only)."""
        return ()

    def question_before(self, step: Sequence[Slot]) -> int | None:
        """The round whose judge question must exist before ``step`` may run, if any."""
        if not step:
            return None
        after = min(slot.round for slot in step) - 1
        return after if after in self.question_rounds() else None


@dataclass(frozen=True)
class DebateProtocol(Protocol):
    """Two debaters, opposite answers. Round 1 is simultaneous: neither sees the other's opening.

    Later rounds are sequential and each speaker sees every earlier speech. In every round the
    debater for answer ``first_side`` speaks first (holds the lower index), so the order of speeches
    says nothing about which answer is stored first.
    """

    name: ClassVar[str] = "debate"
    title: ClassVar[str] = "Debate"

    def steps(self) -> list[list[Slot]]:
        first, second = self.speaking_order()
        steps: list[list[Slot]] = [[Slot(0, 1, first, ()), Slot(1, 1, second, ())]]
        index = 2
        for rnd in range(2, self.limits.rounds + 1):
            for side in (first, second):
                steps.append([Slot(index, rnd, side, tuple(range(index)))])
                index += 1
        return steps


@dataclass(frozen=True)
class InteractiveDebateProtocol(DebateProtocol):
    """A debate in which the judge asks a question after every round but the last.

    Both debaters answer it in their next speech; the runner waits for a human judge's question
    (or has an AI judge ask one when the debate has no human judge) before that round starts.
    """

    name: ClassVar[str] = "interactive"
    title: ClassVar[str] = "Interactive debate"
    interactive: ClassVar[bool] = True

    def question_rounds(self) -> tuple[int, ...]:
        return tuple(range(1, self.limits.rounds))


@dataclass(frozen=True)
class ConsultancyProtocol(Protocol):
    """One consultant argues one answer, right or wrong, every round; it sees its own earlier speeches.

    ``side`` is the consultant's answer: drawn from the debate's seed and recorded in the settings
    (``make_protocol`` does the drawing). The judge is not told whether it is the right one.
    """

    name: ClassVar[str] = "consultancy"
    title: ClassVar[str] = "Consultancy"
    speakers: ClassVar[int] = 1
    side: int | None = None

    def steps(self) -> list[list[Slot]]:
        if self.side is None:
            raise ProtocolError(f"{self.name}: the consultant's answer has not been assigned")
        return [[Slot(r - 1, r, self.side, tuple(range(r - 1)))] for r in range(1, self.limits.rounds + 1)]

    def total_turns(self) -> int:
        # Known before the side is: the consumer counts speeches of a debate that has not started.
        return self.limits.rounds

    def speaking_sides(self) -> tuple[int, ...]:
        return () if self.side is None else (self.side,)


@dataclass(frozen=True)
class OpenDebateProtocol(DebateProtocol):
    """A debate in which the first debater (the protagonist) chooses which answer to defend.

    The opponent defends the other. ``chosen_side`` is None until the choice is made and recorded.
    """

    name: ClassVar[str] = "open-debate"
    title: ClassVar[str] = "Open debate"
    open_choice: ClassVar[bool] = True
    chosen_side: int | None = None

    def needs_choice(self) -> bool:
        return self.chosen_side is None

    def total_turns(self) -> int:
        return 2 * self.limits.rounds


@dataclass(frozen=True)
class OpenConsultancyProtocol(ConsultancyProtocol):
    """A consultancy in which the consultant chooses which answer to defend (Kenton et al. 2024)."""

    name: ClassVar[str] = "open-consultancy"
    title: ClassVar[str] = "Open consultancy"
    open_choice: ClassVar[bool] = True

    def needs_choice(self) -> bool:
        return self.side is None


@dataclass(frozen=True)
class NaiveJudgeProtocol(Protocol):
    """Nobody speaks: the judge answers from the question and the two answers alone (a baseline)."""

    name: ClassVar[str] = "naive"
    title: ClassVar[str] = "Naive judge (blind)"
    speakers: ClassVar[int] = 0

    def steps(self) -> list[list[Slot]]:
        return []

    def speaking_sides(self) -> tuple[int, ...]:
        return ()


@dataclass(frozen=True)
class ExpertJudgeProtocol(NaiveJudgeProtocol):
    """Nobody speaks: the judge reads the full source (the ceiling)."""

    name: ClassVar[str] = "expert"
    title: ClassVar[str] = "Expert judge (reads the source)"

    def judge_sees_source(self) -> bool:
        return True


PROTOCOLS: dict[str, type[Protocol]] = {
    cls.name: cls
    for cls in (
        DebateProtocol,
        InteractiveDebateProtocol,
        ConsultancyProtocol,
        OpenDebateProtocol,
        OpenConsultancyProtocol,
        NaiveJudgeProtocol,
        ExpertJudgeProtocol,
    )
}


def recorded_choice(settings: Mapping[str, object]) -> int | None:
    """The answer an open protocol's debater chose, as the runner recorded it, or None."""
    choice = settings.get("open_choice")
    if not isinstance(choice, Mapping):
        return None
    side = choice.get("side")
    if isinstance(side, int) and not isinstance(side, bool) and side in (0, 1):
        return side
    raise ProtocolError("open_choice.side must be 0 or 1")


def make_protocol(
    name: str, settings: Mapping[str, object], *, seed: int | None = None, first_side: int = 0
) -> Protocol:
    """The protocol ``name`` for a debate with these settings (and this seed, if it has one).

    A consultancy's answer comes from ``settings["consultant_side"]`` or, when that is empty and
    the seed is given, from :func:`draw_consultant_side`; an open protocol's from the recorded
    choice. Without either the protocol can still count its speeches but not schedule them.
    ``first_side`` is the debate's ``first_side``: the answer whose debater speaks first in each
    round of a two-debater protocol (pass it wherever slots are scheduled or checked; counting
    speeches does not need it).
    """
    try:
        cls = PROTOCOLS[name]
    except KeyError:
        raise ProtocolError(f"unknown protocol {name!r}; known: {', '.join(sorted(PROTOCOLS))}") from None
    parsed = ProtocolSettings.from_settings(settings)
    limits = parsed.core()
    if issubclass(cls, OpenConsultancyProtocol):
        return cls(limits=limits, rules=parsed.rules, first_side=first_side, side=recorded_choice(settings))
    if issubclass(cls, ConsultancyProtocol):
        side = parsed.consultant_side
        if side is None and seed is not None:
            side = draw_consultant_side(seed)
        return cls(limits=limits, rules=parsed.rules, first_side=first_side, side=side)
    if issubclass(cls, OpenDebateProtocol):
        return cls(limits=limits, rules=parsed.rules, first_side=first_side, chosen_side=recorded_choice(settings))
    return cls(limits=limits, rules=parsed.rules, first_side=first_side)


def protocol_choices() -> list[tuple[str, str]]:
    """(name, title) of every protocol, for forms."""
    return [(name, cls.title) for name, cls in PROTOCOLS.items()]
