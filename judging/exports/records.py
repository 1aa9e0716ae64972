"""What an export needs about one source record, detached from the ORM; and the judge anonymizer.

Records are the bottom layer of an export: :mod:`judging.exports.sources` builds them from the
database and the row builders (:mod:`judging.exports.rows`) turn them into canonical rows.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from judging.models import EVEN_TOLERANCE

Message = dict[str, str]
Row = dict[str, object]


class ExportError(ValueError):
    """The export cannot be written; the message says why, for the person who asked."""


# Records are plain slotted dataclasses, not frozen ones: an export builds millions of them and a
# frozen dataclass costs three times as much to build. Treat them as immutable all the same.


@dataclass(slots=True)
class SpeechData:
    index: int
    round: int
    side: int
    text: str
    quotes: tuple[Mapping[str, object], ...] = ()
    violations: tuple[str, ...] = ()


@dataclass(slots=True)
class JudgeQuestionData:
    after_round: int
    text: str


@dataclass(slots=True)
class VerdictRecord:
    """Everything an export may need about one verdict, detached from the ORM."""

    verdict_id: int
    debate_id: int
    question_id: str
    question: str
    answers: tuple[str, str]
    correct_index: int
    protocol: str
    constitution: str
    debater_models: tuple[str, str]
    judge_kind: str
    judge_ref: str
    shown_first: int
    p: tuple[float, float]
    reason: str
    created_at: datetime | None = None  # not loaded by the exporter: no row uses it
    speeches: tuple[SpeechData, ...] = field(default=())
    judge_model: str = ""
    correct: bool | None = None
    tournament_id: int | None = None
    licence: str = ""
    time_spent_s: float | None = None
    judge_questions: tuple[JudgeQuestionData, ...] = ()
    question_set: str = ""
    story_id: str = ""  # arena.identity.story_id of the question's source: the split key
    origin: str = "arena"
    judge_principles: str = ""  # the constitution's principles, for AI judges (they are prompted with them)
    first_side: int = 0  # the answer whose debater spoke first in each round (Debate.first_side)

    @property
    def preferred(self) -> int | None:
        """The answer this judge gave the higher probability; None for no preference (50/50)."""
        if abs(self.p[0] - self.p[1]) <= EVEN_TOLERANCE:
            return None
        return 0 if self.p[0] > self.p[1] else 1

    @property
    def judged_correctly(self) -> bool | None:
        """Whether the judge favoured the gold answer; None for 50/50, which is neither right nor wrong."""
        if self.preferred is None:
            return None
        return self.preferred == self.correct_index


@dataclass(slots=True)
class DebateInfo:
    """The provenance of a debate, shared by the turn-level kinds."""

    debate_id: int
    question_id: str
    question: str
    answers: tuple[str, str]
    correct_index: int
    protocol: str
    constitution: str
    debater_models: tuple[str, str]
    tournament_id: int | None = None
    licence: str = ""
    question_set: str = ""
    story_id: str = ""
    first_side: int = 0


@dataclass(slots=True)
class CandidateData:
    index: int
    text: str
    score: float
    chosen: bool = False


@dataclass(slots=True)
class CandidateSet:
    """The N sampled speeches of one best-of-N turn, with the prompt the debater saw."""

    debate: DebateInfo
    turn_id: int
    turn_index: int
    round: int
    side: int
    model: str
    prompt: tuple[Message, ...]
    candidates: tuple[CandidateData, ...]
    judge_model: str = ""


@dataclass(slots=True)
class RevisionRecord:
    """One critique-and-revision step on a turn's draft."""

    debate: DebateInfo
    revision_id: int
    turn_id: int
    turn_index: int
    round: int
    side: int
    model: str
    step: int
    prompt: tuple[Message, ...]
    draft: str
    revision: str
    principle_id: str
    principle: str
    critique: str


class Anonymizer:
    """Keyed hash of judge identities: stable within one export, unlinkable across exports.

    Pass a fixed ``key`` (as ``--stable-judge-ids`` does, from ``ARENA_EXPORT_KEY``) to make the
    ids stable across exports too.
    """

    CACHE = 65536

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or secrets.token_bytes(32)
        self._cache: dict[str, str] = {}

    def __call__(self, ref: str) -> str:
        hashed = self._cache.get(ref)
        if hashed is None:
            hashed = "judge-" + hmac.new(self.key, ref.encode(), hashlib.sha256).hexdigest()[:16]
            if len(self._cache) >= self.CACHE:
                self._cache.clear()
            self._cache[ref] = hashed
        return hashed
