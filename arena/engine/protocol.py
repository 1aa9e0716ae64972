"""Debate protocols as pure functions of the debate's state.

A protocol says which speeches exist (index, round, side), which earlier speeches each speaker may
see, which speeches may be generated together, and what the judge may see. Runners (live and batch)
ask it what to do next and feed back what happened; nothing here touches a database or a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
        limits = cls(
            rounds=_int("rounds", cls.rounds),
            max_tokens=_int("max_tokens", cls.max_tokens),
            word_limit=_int("word_limit", cls.word_limit),
            context_tokens=context,
        )
        limits.validate()
        return limits

    def to_settings(self) -> dict[str, int | None]:
        return {
            "rounds": self.rounds,
            "max_tokens": self.max_tokens,
            "word_limit": self.word_limit,
            "context_tokens": self.context_tokens,
        }


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
    limits: Limits

    def steps(self) -> list[list[Slot]]:
        raise NotImplementedError

    def slots(self) -> list[Slot]:
        return [slot for step in self.steps() for slot in step]

    def pending_steps(self, done: Iterable[int]) -> list[list[Slot]]:
        """Steps still to run given the indices of committed turns; each step keeps only its missing slots.

        Raises if a committed turn is out of order, which would mean some speaker saw a speech that
        did not exist when it spoke.
        """
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

    def judge_sees_source(self) -> bool:
        return False


@dataclass(frozen=True)
class DebateProtocol(Protocol):
    """Two debaters, opposite answers. Round 1 is simultaneous: neither sees the other's opening.

    Later rounds are sequential (side 0, then side 1) and each speaker sees every earlier speech.
    """

    name: ClassVar[str] = "debate"

    def steps(self) -> list[list[Slot]]:
        steps: list[list[Slot]] = [[Slot(0, 1, 0, ()), Slot(1, 1, 1, ())]]
        index = 2
        for rnd in range(2, self.limits.rounds + 1):
            for side in (0, 1):
                steps.append([Slot(index, rnd, side, tuple(range(index)))])
                index += 1
        return steps


PROTOCOLS: dict[str, type[Protocol]] = {"debate": DebateProtocol}


def make_protocol(name: str, settings: Mapping[str, object]) -> Protocol:
    try:
        cls = PROTOCOLS[name]
    except KeyError:
        raise ProtocolError(f"unknown protocol {name!r}; known: {', '.join(sorted(PROTOCOLS))}") from None
    return cls(limits=Limits.from_settings(settings))
