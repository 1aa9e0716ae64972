"""Preference datasets derived from stored debates, candidates, revisions and verdicts.

Layers, from the bottom:

* **Records** (:class:`VerdictRecord`, :class:`CandidateSet`, :class:`RevisionRecord`) hold what an
  export needs about one source record, detached from the ORM.
* **Row builders** (:func:`arguments_row`, :func:`arguments_group_rows`, :func:`turns_rows`,
  :func:`revisions_row`, :func:`judgments_row`) are pure: records in, *canonical* rows out. A
  canonical pair row is TRL's conversational preference format (``prompt``/``chosen``/``rejected``
  as message lists); a canonical unpaired row is TRL's conversational unpaired format
  (``prompt``/``completion``/``label``). Both carry provenance columns.
* **Formats** (:func:`to_format`) turn one canonical row into the rows of an output format.
* **Sources** stream records from the database in chunks (one server-side cursor plus one query
  per chunk for the texts), so memory stays bounded whatever the size.
* **Writers** write JSONL or Parquet (one row group per chunk) and, with ``hf_dir``, a Hugging Face
  ``datasets`` folder whose train/test splits never share a question.
* :func:`run_export` ties them together and writes the dataset card; :func:`start_export` and
  :func:`run_export_job` are the actions behind the researcher page and its Celery task.

docs/datasets.md says exactly what each kind of pair and each column means.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import hmac
import json
import logging
import math
import queue
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from arena.constitution import principles_text
from arena.models import Candidate, Constitution, Debate, JudgeQuestion, Question, QuestionSet, Revision, Turn
from debaters.models import DebaterProfile
from judging.models import Export, JudgeProfile, Verdict

if TYPE_CHECKING:
    import pyarrow as pa
    from django.contrib.auth.models import AbstractBaseUser

log = logging.getLogger(__name__)

CHUNK = 2000
ROW_GROUP = 10_000

KINDS = ("arguments", "turns", "revisions", "judgments")
FORMATS = ("conversational", "standard", "unpaired", "unpaired-standard", "reward", "hh-rlhf")
FILE_FORMATS = ("jsonl", "parquet")
JUDGES = ("human", "ai", "any")
DATA_STEM = "preferences"
CARD = "README.md"
LETTERS = ("A", "B")

KIND_HELP = {
    "arguments": "one verdict (or one debate's verdicts) → the two sides' full arguments, by judge probability",
    "turns": "a best-of-N turn → two candidate speeches for the same prompt, by the AI judge's score",
    "revisions": "a critique-and-revision step (SL-CAI) → the revision over the draft",
    "judgments": "a verdict → the judge's answer to what it saw, labelled by whether it was right (unpaired)",
}
FORMAT_HELP = {
    "conversational": "TRL preference, conversational, explicit prompt: prompt/chosen/rejected as message lists",
    "standard": "TRL preference, standard, explicit prompt: prompt/chosen/rejected as strings",
    "unpaired": "TRL unpaired preference (KTO), conversational: prompt/completion as message lists, label",
    "unpaired-standard": "TRL unpaired preference (KTO), standard: prompt/completion as strings, label",
    "reward": "TRL reward data: chosen/rejected as whole conversations (implicit prompt) and margin",
    "hh-rlhf": "Anthropic hh-rlhf: chosen/rejected as '\\n\\nHuman: … \\n\\nAssistant: …' transcripts",
}
UNIT = {"arguments": "verdict", "judgments": "verdict", "turns": "candidate", "revisions": "revision"}

Message = dict[str, str]
Row = dict[str, object]
T = TypeVar("T")


class ExportError(ValueError):
    """The export cannot be written; the message says why, for the person who asked."""


# --- Records --------------------------------------------------------------------------------------


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
    origin: str = "arena"
    judge_principles: str = ""  # the constitution's principles, for AI judges (they are prompted with them)

    @property
    def preferred(self) -> int | None:
        """The answer this judge gave the higher probability; None for no preference."""
        if self.p[0] == self.p[1]:
            return None
        return 0 if self.p[0] > self.p[1] else 1

    @property
    def judged_correctly(self) -> bool:
        if self.correct is not None:
            return self.correct
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


# --- Row builders (pure) --------------------------------------------------------------------------


def neutral_prompt(question: str, answers: Sequence[str]) -> str:
    return (
        f"Question: {question}\nAnswer 1: {answers[0]}\nAnswer 2: {answers[1]}\n"
        "Argue for the answer that is correct according to the text."
    )


def side_argument(speeches: Sequence[SpeechData], side: int) -> str:
    """One side's full argument: all its speeches in order, separated by blank lines."""
    return "\n\n".join(s.text.strip() for s in sorted(speeches, key=lambda s: s.index) if s.side == side)


def _debate_columns_from_verdict(record: VerdictRecord) -> Row:
    return {
        "debate_id": record.debate_id,
        "question_id": record.question_id,
        "protocol": record.protocol,
        "constitution": record.constitution,
        "tournament_id": record.tournament_id,
        "debater_a_model": record.debater_models[0],
        "debater_b_model": record.debater_models[1],
        "question_set": record.question_set,
        "source_licence": record.licence,
    }


def _debate_columns(info: DebateInfo) -> Row:
    return {
        "debate_id": info.debate_id,
        "question_id": info.question_id,
        "protocol": info.protocol,
        "constitution": info.constitution,
        "tournament_id": info.tournament_id,
        "debater_a_model": info.debater_models[0],
        "debater_b_model": info.debater_models[1],
        "question_set": info.question_set,
        "source_licence": info.licence,
    }


def _pair_row(record: VerdictRecord, winner: int, margin: float, p_chosen: float) -> Row | None:
    chosen_text = side_argument(record.speeches, winner)
    rejected_text = side_argument(record.speeches, 1 - winner)
    if not chosen_text or not rejected_text:
        return None
    return {
        "prompt": [{"role": "user", "content": neutral_prompt(record.question, record.answers)}],
        "chosen": [{"role": "assistant", "content": chosen_text}],
        "rejected": [{"role": "assistant", "content": rejected_text}],
        "margin": round(margin, 6),
        "p_chosen": round(p_chosen, 6),
        "chosen_side": winner,
        "chosen_answer": record.answers[winner],
        "rejected_answer": record.answers[1 - winner],
        "chosen_model": record.debater_models[winner],
        "rejected_model": record.debater_models[1 - winner],
        "chosen_is_gold": winner == record.correct_index,
        **_debate_columns_from_verdict(record),
    }


def arguments_row(record: VerdictRecord, anonymize: Anonymizer) -> Row | None:
    """One verdict → one canonical (TRL conversational) preference pair; None when it makes none.

    ``chosen`` is the argument of the side the judge gave the higher probability. No pair comes
    from a verdict without a preference (equal probabilities) or a debate missing a side. The
    debate-level columns (``n_judges``, ``agreement``) describe this verdict alone; use
    :func:`arguments_group_rows` to fill them from all of the debate's verdicts.
    """
    winner = record.preferred
    if winner is None:
        return None
    row = _pair_row(record, winner, abs(record.p[0] - record.p[1]), record.p[winner])
    if row is None:
        return None
    row.update(
        verdict_id=record.verdict_id,
        verdict_ids=[record.verdict_id],
        n_judges=1,
        agreement=1.0,
        judge_kind=record.judge_kind,
        judge_id=anonymize(record.judge_ref),
        judge_model=record.judge_model,
        verdict_origin=record.origin,
        shown_first=record.shown_first,
        judge_correct=winner == record.correct_index,
    )
    return row


@dataclass(frozen=True)
class GroupStats:
    """Several judges on one debate: mean probabilities and how many preferred the leading answer."""

    n: int
    mean_p: tuple[float, float]
    leader: int | None  # the answer with the higher mean probability; None on a tie
    agreement: float  # share of verdicts preferring the leader (or the larger camp on a tie)


def group_stats(records: Sequence[VerdictRecord]) -> GroupStats:
    if not records:
        raise ValueError("group_stats needs at least one verdict")
    n = len(records)
    if n == 1:
        p = records[0].p
        leader = None if math.isclose(p[0], p[1], abs_tol=1e-12) else (0 if p[0] > p[1] else 1)
        return GroupStats(n=1, mean_p=p, leader=leader, agreement=0.0 if leader is None else 1.0)
    mean0 = sum(r.p[0] for r in records) / n
    mean1 = sum(r.p[1] for r in records) / n
    votes = Counter(r.preferred for r in records)
    leader = None if math.isclose(mean0, mean1, abs_tol=1e-12) else (0 if mean0 > mean1 else 1)
    agreeing = votes[leader] if leader is not None else max(votes[0], votes[1])
    return GroupStats(n=n, mean_p=(mean0, mean1), leader=leader, agreement=round(agreeing / n, 6))


def arguments_group_rows(
    records: Sequence[VerdictRecord], anonymize: Anonymizer, *, per_verdict: bool = False
) -> list[Row]:
    """One debate's verdicts → its pairs: one aggregated pair, or one pair per verdict.

    Aggregated: the probabilities are averaged over the judges and ``chosen`` is the side with the
    higher mean; ``margin`` is the difference of the means; the per-judge columns list every
    judge (``verdict_ids``), join their ids with commas (``judge_id``, ``judge_model``), say
    ``mixed`` when humans and AIs judged (``judge_kind``), and ``shown_first`` is null when the
    judges saw different orders. ``verdict_id`` is the debate's first verdict (a stable key).
    Per verdict: :func:`arguments_row` for each, with the debate's ``n_judges`` and ``agreement``.
    """
    if not records:
        return []
    if len(records) == 1:
        row = arguments_row(records[0], anonymize)
        return [row] if row is not None else []
    stats = group_stats(records)
    if per_verdict:
        rows = []
        for record in records:
            row = arguments_row(record, anonymize)
            if row is not None:
                row.update(n_judges=stats.n, agreement=stats.agreement)
                rows.append(row)
        return rows
    if stats.leader is None:
        return []
    records = sorted(records, key=lambda r: r.verdict_id)
    first = records[0]
    winner = stats.leader
    row = _pair_row(first, winner, abs(stats.mean_p[0] - stats.mean_p[1]), stats.mean_p[winner])
    if row is None:
        return []
    kinds = sorted({r.judge_kind for r in records})
    shown = {r.shown_first for r in records}
    row.update(
        verdict_id=first.verdict_id,
        verdict_ids=[r.verdict_id for r in records],
        n_judges=stats.n,
        agreement=stats.agreement,
        judge_kind=kinds[0] if len(kinds) == 1 else "mixed",
        judge_id=",".join(dict.fromkeys(anonymize(r.judge_ref) for r in records)),
        judge_model=",".join(dict.fromkeys(r.judge_model for r in records if r.judge_model)),
        verdict_origin=",".join(dict.fromkeys(r.origin for r in records)),
        shown_first=shown.pop() if len(shown) == 1 else None,
        judge_correct=winner == first.correct_index,
    )
    return [row]


ANSWER_INSTRUCTION = (
    "Which answer is correct? Reply with its letter, your probability that it is correct, and your reason."
)


def judgment_prompt(record: VerdictRecord) -> list[Message]:
    """What the judge saw, as chat messages, and never the source text.

    The AI judges' own prompt (:func:`judging.ai_judges.judge_messages`): the question, the answers
    labelled A and B in this judge's order (A = ``answers[shown_first]``), the transcript with every
    quote marked verified or unverified (:func:`judging.ai_judges.mark_quotes`) and the judge's own
    questions between rounds; the constitution's principles for AI judges, who are given them. The
    referee's findings follow the speech they concern. The closing instruction asks for the letter,
    the probability and the reason, which is what the completion holds.
    """
    from judging.ai_judges import JudgeSpeech, JudgeView, judge_messages, mark_quotes

    transcript = []
    for speech in sorted(record.speeches, key=lambda s: s.index):
        text = mark_quotes(speech.text, speech.quotes).strip()
        if speech.violations:
            text += "\n" + "\n".join(f"[referee] {v}" for v in speech.violations)
        transcript.append(JudgeSpeech(side=speech.side, round=speech.round, text=text))
    view = JudgeView(
        question=record.question,
        answers=record.answers,
        transcript=tuple(transcript),
        source=None,
        protocol=record.protocol,
        questions=tuple(sorted((q.after_round, q.text) for q in record.judge_questions)),
    )
    messages = [dict(m) for m in judge_messages(view, record.shown_first, record.judge_principles)]
    body, _, _ = messages[-1]["content"].rpartition("\n\n")
    messages[-1]["content"] = f"{body}\n\n{ANSWER_INSTRUCTION}"
    return messages  # type: ignore[return-value]


def judgment_completion(record: VerdictRecord) -> str | None:
    """The judge's answer: the letter it favoured (in its own order), that probability, its reason."""
    winner = record.preferred
    if winner is None:
        return None
    letter = LETTERS[0] if winner == record.shown_first else LETTERS[1]
    text = f"Answer: {letter} (probability {record.p[winner]:.2f})"
    if record.reason.strip():
        text += f"\nReason: {record.reason.strip()}"
    return text


def judgments_row(record: VerdictRecord, anonymize: Anonymizer, stats: GroupStats | None = None) -> Row | None:
    """One verdict → one canonical unpaired row: what the judge saw, its answer, whether it was right."""
    completion = judgment_completion(record)
    if completion is None:
        return None
    return {
        "prompt": judgment_prompt(record),
        "completion": [{"role": "assistant", "content": completion}],
        "label": record.judged_correctly,
        "margin": round(abs(record.p[0] - record.p[1]), 6),
        "verdict_id": record.verdict_id,
        "judge_kind": record.judge_kind,
        "judge_id": anonymize(record.judge_ref),
        "judge_model": record.judge_model,
        "verdict_origin": record.origin,
        "shown_first": record.shown_first,
        "p_a": record.p[0],
        "p_b": record.p[1],
        "n_judges": stats.n if stats else 1,
        "agreement": stats.agreement if stats else 1.0,
        "judge_correct": record.judged_correctly,
        "time_spent_s": record.time_spent_s,
        **_debate_columns_from_verdict(record),
    }


def _speaker_columns(info: DebateInfo, turn_id: int, turn_index: int, rnd: int, side: int, model: str) -> Row:
    return {
        "turn_id": turn_id,
        "turn_index": turn_index,
        "round": rnd,
        "side": side,
        "speaker_answer": info.answers[side],
        "speaker_is_gold": side == info.correct_index,
        "model": model,
        **_debate_columns(info),
    }


def clean_messages(messages: Iterable[object]) -> list[Message]:
    """Stored chat messages as ``{"role", "content"}`` string pairs; anything else is dropped."""
    out = []
    for m in messages:
        if isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str):
            out.append({"role": m["role"], "content": m["content"]})
    return out


def turns_rows(cs: CandidateSet, anonymize: Anonymizer, *, all_pairs: bool = False) -> list[Row]:
    """A best-of-N turn → pairs of candidates for the same prompt, ordered by the AI judge's score.

    By default one pair, best against worst; with ``all_pairs`` every pair with different scores.
    Candidates with equal scores make no pair, and neither does a turn without a stored prompt.
    """
    if not cs.prompt:
        return []
    ranked = sorted((c for c in cs.candidates if c.text.strip()), key=lambda c: (-c.score, c.index))
    if len(ranked) < 2:
        return []
    if all_pairs:
        pairs = [(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1 :] if a.score > b.score]
    else:
        pairs = [(ranked[0], ranked[-1])] if ranked[0].score > ranked[-1].score else []
    judge_id = anonymize(f"ai:{cs.judge_model}") if cs.judge_model else ""
    rows = []
    for best, worst in pairs:
        rows.append(
            {
                "prompt": [dict(m) for m in cs.prompt],
                "chosen": [{"role": "assistant", "content": best.text}],
                "rejected": [{"role": "assistant", "content": worst.text}],
                "margin": round(best.score - worst.score, 6),
                "n_candidates": len(cs.candidates),
                "chosen_candidate": best.index,
                "rejected_candidate": worst.index,
                "chosen_score": best.score,
                "rejected_score": worst.score,
                "chosen_was_kept": best.chosen,
                "judge_kind": "ai",
                "judge_id": judge_id,
                "judge_model": cs.judge_model,
                **_speaker_columns(cs.debate, cs.turn_id, cs.turn_index, cs.round, cs.side, cs.model),
            }
        )
    return rows


def revisions_row(r: RevisionRecord, anonymize: Anonymizer) -> Row | None:
    """An SL-CAI step → chosen = the revision, rejected = the draft, for the prompt of the draft.

    No pair when the prompt is unknown or the revision leaves the draft unchanged.
    """
    if not r.prompt or not r.revision.strip() or r.revision.strip() == r.draft.strip():
        return None
    return {
        "prompt": [dict(m) for m in r.prompt],
        "chosen": [{"role": "assistant", "content": r.revision}],
        "rejected": [{"role": "assistant", "content": r.draft}],
        "revision_id": r.revision_id,
        "step": r.step,
        "principle_id": r.principle_id,
        "principle": r.principle,
        "critique": r.critique,
        **_speaker_columns(r.debate, r.turn_id, r.turn_index, r.round, r.side, r.model),
    }


# --- Formats --------------------------------------------------------------------------------------


def render_prompt(messages: Sequence[Message]) -> str:
    """A message list as one string (TRL's standard format): the contents, blank-line separated."""
    return "\n\n".join(m["content"] for m in messages)


_HH_SPEAKER = re.compile(r"\n\n(?=(?:Human|Assistant):)")


def _hh_safe(text: str) -> str:
    # A speech that contains "\n\nHuman:" would split the transcript in the wrong place.
    return _HH_SPEAKER.sub("\n", text.strip())


def hh_transcript(prompt: Sequence[Message], reply: str) -> str:
    """``\\n\\nHuman: … \\n\\nAssistant: …`` with ``reply`` as the last Assistant turn.

    System messages have no place in hh-rlhf; they open the Human turn that follows them.
    """
    out: list[str] = []
    pending: list[str] = []
    for m in prompt:
        if m["role"] == "system":
            pending.append(m["content"])
        elif m["role"] == "assistant":
            if pending:
                out.append("\n\nHuman: " + _hh_safe("\n\n".join(pending)))
                pending = []
            out.append("\n\nAssistant: " + _hh_safe(m["content"]))
        else:
            out.append("\n\nHuman: " + _hh_safe("\n\n".join([*pending, m["content"]])))
            pending = []
    if pending:
        out.append("\n\nHuman: " + _hh_safe("\n\n".join(pending)))
    return "".join(out) + "\n\nAssistant: " + _hh_safe(reply)


def _text(messages: object) -> str:
    assert isinstance(messages, list)
    return "\n\n".join(m["content"] for m in messages)


def to_format(row: Row, fmt: str) -> list[Row]:
    """One canonical row → the rows of ``fmt`` (two rows for unpaired data from a pair).

    Provenance columns pass through unchanged; the writer keeps the columns of the schema.
    """
    if "completion" in row:  # canonical unpaired
        if fmt == "unpaired":
            return [row]
        if fmt == "unpaired-standard":
            return [{**row, "prompt": render_prompt(row["prompt"]), "completion": _text(row["completion"])}]  # type: ignore[arg-type]
        raise ExportError(f"unpaired data cannot be written as {fmt!r}: use unpaired or unpaired-standard")
    prompt = row["prompt"]
    assert isinstance(prompt, list)
    if fmt == "conversational":
        return [row]
    if fmt == "standard":
        return [
            {**row, "prompt": render_prompt(prompt), "chosen": _text(row["chosen"]), "rejected": _text(row["rejected"])}
        ]
    if fmt in ("unpaired", "unpaired-standard"):
        out = []
        for which, label in (("chosen", True), ("rejected", False)):
            completion: object = row[which]
            p: object = prompt
            if fmt == "unpaired-standard":
                completion, p = _text(completion), render_prompt(prompt)
            out.append({**row, "prompt": p, "completion": completion, "label": label, "completion_is": which})
        return out
    if fmt == "reward":
        return [{**row, "chosen": prompt + row["chosen"], "rejected": prompt + row["rejected"]}]  # type: ignore[operator]
    if fmt == "hh-rlhf":
        return [
            {
                **row,
                "chosen": hh_transcript(prompt, _text(row["chosen"])),
                "rejected": hh_transcript(prompt, _text(row["rejected"])),
            }
        ]
    raise ExportError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


# --- Columns and schemas --------------------------------------------------------------------------

# (name, type, meaning). Types: str, int, float, bool, messages, ints (list of int).
Column = tuple[str, str, str]

FORMAT_COLUMNS: dict[str, list[Column]] = {
    "conversational": [
        ("prompt", "messages", "what the model is asked, as chat messages"),
        ("chosen", "messages", "the preferred reply (one assistant message)"),
        ("rejected", "messages", "the other reply (one assistant message)"),
    ],
    "standard": [
        ("prompt", "str", "the prompt messages' contents joined by blank lines"),
        ("chosen", "str", "the preferred reply"),
        ("rejected", "str", "the other reply"),
    ],
    "unpaired": [
        ("prompt", "messages", "what the model is asked, as chat messages"),
        ("completion", "messages", "one reply (one assistant message)"),
        ("label", "bool", "true: a desirable reply; false: an undesirable one"),
    ],
    "unpaired-standard": [
        ("prompt", "str", "the prompt messages' contents joined by blank lines"),
        ("completion", "str", "one reply"),
        ("label", "bool", "true: a desirable reply; false: an undesirable one"),
    ],
    "reward": [
        ("chosen", "messages", "the whole preferred conversation: prompt messages, then the preferred reply"),
        ("rejected", "messages", "the whole other conversation: the same prompt messages, then the other reply"),
    ],
    "hh-rlhf": [
        ("chosen", "str", "'\\n\\nHuman: … \\n\\nAssistant: …' transcript ending in the preferred reply"),
        ("rejected", "str", "the same transcript ending in the other reply"),
    ],
}

DEBATE_COLUMNS: list[Column] = [
    ("debate_id", "int", "the debate (Debate Arena id)"),
    ("question_id", "str", "the question's external id (the split key)"),
    ("protocol", "str", "the debate protocol (debate, consultancy, …)"),
    ("constitution", "str", "the constitution and its version, name@version"),
    ("tournament_id", "int", "the tournament the debate belongs to; null for none"),
    ("debater_a_model", "str", "backend/model of the debater of answer 1"),
    ("debater_b_model", "str", "backend/model of the debater of answer 2"),
    ("question_set", "str", "the question set (its origin and licence are in the card)"),
    ("source_licence", "str", "licence of the source text the debate is about"),
]

_SPEAKER_COLUMNS: list[Column] = [
    ("turn_id", "int", "the turn (Debate Arena id)"),
    ("turn_index", "int", "the turn's position in its debate, from 0"),
    ("round", "int", "the round of the turn, from 1"),
    ("side", "int", "the answer the speaker argued: 0 for answer 1, 1 for answer 2"),
    ("speaker_answer", "str", "the answer the speaker argued"),
    ("speaker_is_gold", "bool", "the speaker argued the gold answer"),
    ("model", "str", "the model that spoke"),
]

_JUDGE_COLUMNS: list[Column] = [
    ("judge_kind", "str", "human or ai (mixed: an aggregate of both)"),
    ("judge_id", "str", "keyed hash of the judge, stable within this export only (comma-joined for an aggregate)"),
    ("judge_model", "str", "AI judge: name:backend/model@prompt-version; empty for humans"),
]

KIND_COLUMNS: dict[str, list[Column]] = {
    "arguments": [
        (
            "margin",
            "float",
            "|P(chosen answer) − P(rejected answer)| given by the judge (mean over judges if aggregated)",
        ),
        ("p_chosen", "float", "the probability the judge(s) gave the chosen side's answer"),
        ("chosen_side", "int", "the side of the chosen argument: 0 for answer 1, 1 for answer 2"),
        ("chosen_answer", "str", "the answer the chosen argument defends"),
        ("rejected_answer", "str", "the answer the rejected argument defends"),
        ("chosen_model", "str", "backend/model of the chosen side's debater"),
        ("rejected_model", "str", "backend/model of the rejected side's debater"),
        ("chosen_is_gold", "bool", "the chosen argument defends the gold answer"),
        ("verdict_id", "int", "the verdict (the first of the debate's verdicts if aggregated)"),
        ("verdict_ids", "ints", "every verdict behind this row"),
        ("n_judges", "int", "how many verdicts the debate has in this selection"),
        ("agreement", "float", "share of the debate's verdicts preferring the answer with the higher mean probability"),
        *_JUDGE_COLUMNS,
        (
            "verdict_origin",
            "str",
            "arena, or where an imported verdict came from (e.g. nyu-2023); comma-joined if aggregated",
        ),
        ("shown_first", "int", "the answer shown first to the judge (0 or 1); null if aggregated judges differed"),
        ("judge_correct", "bool", "the judge(s) preferred the gold answer"),
    ],
    "turns": [
        ("margin", "float", "chosen_score − rejected_score"),
        ("n_candidates", "int", "how many candidates the turn sampled"),
        ("chosen_candidate", "int", "index of the chosen candidate"),
        ("rejected_candidate", "int", "index of the rejected candidate"),
        ("chosen_score", "float", "the AI judge's probability of the speaker's answer with the chosen candidate"),
        ("rejected_score", "float", "the same with the rejected candidate"),
        ("chosen_was_kept", "bool", "the chosen candidate is the speech the debate used"),
        *_JUDGE_COLUMNS,
        *_SPEAKER_COLUMNS,
    ],
    "revisions": [
        ("revision_id", "int", "the revision (Debate Arena id)"),
        ("step", "int", "the critique-and-revision step, from 0"),
        ("principle_id", "str", "id of the constitution principle the critique applied"),
        ("principle", "str", "text of that principle"),
        ("critique", "str", "the model's critique of its draft"),
        *_SPEAKER_COLUMNS,
    ],
    "judgments": [
        ("margin", "float", "|p_a − p_b|: how sure the judge was"),
        ("verdict_id", "int", "the verdict (Debate Arena id)"),
        *_JUDGE_COLUMNS,
        ("verdict_origin", "str", "arena, or where an imported verdict came from (e.g. nyu-2023)"),
        ("shown_first", "int", "the answer shown first to the judge, labelled A (0 or 1)"),
        ("p_a", "float", "the judge's probability of answer 1"),
        ("p_b", "float", "the judge's probability of answer 2"),
        ("n_judges", "int", "how many verdicts the debate has in this selection"),
        ("agreement", "float", "share of the debate's verdicts preferring the answer with the higher mean probability"),
        ("judge_correct", "bool", "the judge gave the gold answer the higher probability (= label)"),
        ("time_spent_s", "float", "seconds the judge spent; null when unknown"),
    ],
}

_UNPAIRED_FROM_PAIR: list[Column] = [("completion_is", "str", "chosen or rejected: which side of the pair this row is")]


def columns(kind: str, fmt: str) -> list[Column]:
    """The columns of an export, in order: the format's, then the kind's, then the debate's."""
    cols = list(FORMAT_COLUMNS[fmt])
    if fmt in ("unpaired", "unpaired-standard") and kind != "judgments":
        cols += _UNPAIRED_FROM_PAIR
    return cols + KIND_COLUMNS[kind] + DEBATE_COLUMNS


def arrow_schema(kind: str, fmt: str) -> pa.Schema:
    import pyarrow as pa

    types = {
        "str": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "messages": _messages_type(),
        "ints": pa.list_(pa.int64()),
    }
    return pa.schema([(name, types[t]) for name, t, _ in columns(kind, fmt)])


# --- Requests -------------------------------------------------------------------------------------


def parse_since(text: str) -> datetime:
    """An ISO date or date-time; a naive one is taken as UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ExportError(f"--since {text!r} is not an ISO date (YYYY-MM-DD) or date-time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ExportRequest:
    """What to export and how. :meth:`validate` says what is wrong in words a researcher reads."""

    kind: str = "arguments"
    format: str = "conversational"
    file_format: str = "jsonl"
    judge: str = "any"
    min_margin: float | None = None
    min_agreement: float | None = None
    constitution: str = ""
    since: datetime | None = None
    tournament: int | None = None
    correct_only: bool = False
    per_verdict: bool = False
    all_pairs: bool = False
    test_fraction: float = 0.1
    stable_judge_ids: bool = False

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ExportError(f"unknown kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.format not in FORMATS:
            raise ExportError(f"unknown format {self.format!r}; known: {', '.join(FORMATS)}")
        if self.file_format not in FILE_FORMATS:
            raise ExportError(f"unknown file format {self.file_format!r}; known: {', '.join(FILE_FORMATS)}")
        if self.judge not in JUDGES:
            raise ExportError(f"unknown judge selection {self.judge!r}; known: {', '.join(JUDGES)}")
        if self.kind == "judgments" and self.format not in ("unpaired", "unpaired-standard"):
            raise ExportError(
                "judgments are unpaired (a judge's answer and whether it was right): "
                "use format unpaired or unpaired-standard"
            )
        if self.kind == "revisions" and self.format == "reward":
            raise ExportError("revisions have no margin, so no reward data: use conversational or standard")
        if self.kind == "turns" and self.judge == "human":
            raise ExportError("best-of-N candidates are scored by an AI judge: --judge human selects none")
        if self.kind == "revisions" and self.judge != "any":
            raise ExportError("revisions have no judge: leave the judge selection at 'any'")
        for name in ("min_margin", "min_agreement"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or not 0.0 <= value <= 1.0):
                raise ExportError(f"{name.replace('_', '-')} must be between 0 and 1 (got {value})")
        if self.min_margin is not None and self.kind == "revisions":
            raise ExportError("min-margin does not apply to revisions (they have no score)")
        if self.min_agreement is not None and self.kind not in ("arguments", "judgments"):
            raise ExportError("min-agreement applies to verdicts: kinds arguments and judgments")
        if self.per_verdict and self.kind != "arguments":
            raise ExportError("per-verdict applies to kind arguments (judgments are always one row per verdict)")
        if self.all_pairs and self.kind != "turns":
            raise ExportError("all-pairs applies to kind turns")
        if not (math.isfinite(self.test_fraction) and 0.0 <= self.test_fraction < 1.0):
            raise ExportError(f"test-fraction must be in [0, 1) (got {self.test_fraction})")
        if self.tournament is not None and self.tournament < 1:
            raise ExportError(f"tournament must be a positive id (got {self.tournament})")
        self.constitution_filter()

    def constitution_filter(self) -> tuple[str, int | None] | None:
        """``name`` or ``name@version`` → (name, version or None); None when not filtering."""
        text = self.constitution.strip()
        if not text:
            return None
        name, sep, version = text.partition("@")
        if not name or (sep and not version.isdigit()):
            raise ExportError(f"constitution {text!r} must be NAME or NAME@VERSION (e.g. arena-default@2)")
        return name, int(version) if sep else None

    def to_filters(self) -> dict[str, object]:
        """Everything but kind and format, as JSON (for ``Export.filters`` and the card)."""
        data = asdict(self)
        data.pop("kind")
        data.pop("format")
        data["since"] = self.since.isoformat() if self.since else None
        return data

    @classmethod
    def from_filters(cls, kind: str, fmt: str, filters: Mapping[str, object]) -> ExportRequest:
        known = {f for f in cls.__dataclass_fields__ if f not in ("kind", "format")}
        unknown = set(filters) - known
        if unknown:
            raise ExportError(f"unknown export options: {', '.join(sorted(unknown))}")
        data = dict(filters)
        since = data.get("since")
        if isinstance(since, str):
            data["since"] = parse_since(since)
        return cls(kind=kind, format=fmt, **data)  # type: ignore[arg-type]

    def describe_filters(self) -> list[str]:
        out = [f"judges: {self.judge}"]
        if self.min_margin is not None:
            out.append(f"min margin: {self.min_margin}")
        if self.min_agreement is not None:
            out.append(f"min agreement: {self.min_agreement}")
        if self.constitution:
            out.append(f"constitution: {self.constitution}")
        if self.since:
            out.append(f"since: {self.since.isoformat()}")
        if self.tournament is not None:
            out.append(f"tournament: {self.tournament}")
        if self.correct_only:
            out.append("correct only: yes")
        if self.kind == "arguments":
            out.append("rows: one per verdict" if self.per_verdict else "rows: one per debate (verdicts aggregated)")
        if self.kind == "turns":
            out.append("pairs: every pair of different scores" if self.all_pairs else "pairs: best against worst")
        return out


def keep_row(row: Row, req: ExportRequest) -> bool:
    """The row filters (applied after rows are built, so aggregates see every verdict)."""
    if req.min_margin is not None and float(row.get("margin") or 0.0) < req.min_margin:  # type: ignore[arg-type]
        return False
    if req.min_agreement is not None and float(row.get("agreement") or 0.0) < req.min_agreement:  # type: ignore[arg-type]
        return False
    if req.correct_only:
        flag = row.get("judge_correct", row.get("speaker_is_gold"))
        if not flag:
            return False
    return True


# --- Sources: streaming from the database ---------------------------------------------------------


@dataclass(frozen=True)
class _QuestionInfo:
    external_id: str
    question: str
    answers: tuple[str, str]
    correct_index: int
    licence: str
    question_set: str


class _Lookups:
    """Small tables (questions, constitutions, profiles, AI judges) fetched once per id, in bulk."""

    MAX_QUESTIONS = 50_000

    def __init__(self) -> None:
        self.questions: dict[int, _QuestionInfo] = {}
        self.constitutions: dict[int, str] = {}
        self.principles: dict[int, str] = {}
        self.profiles: dict[int, str] = {}
        self.ai_judges: dict[int, str] = {}

    def load(
        self,
        questions: Iterable[int] = (),
        constitutions: Iterable[int] = (),
        profiles: Iterable[int] = (),
        ai_judges: Iterable[int] = (),
    ) -> None:
        missing = set(questions) - self.questions.keys()
        if missing:
            if len(self.questions) + len(missing) > self.MAX_QUESTIONS:
                self.questions.clear()  # keeps memory bounded on huge question banks
            for pk, ext, text, answers, correct, licence, set_licence, set_name in Question.objects.filter(
                pk__in=missing
            ).values_list(
                "pk",
                "external_id",
                "question",
                "answers",
                "correct_index",
                "licence",
                "question_set__licence",
                "question_set__name",
            ):
                self.questions[pk] = _QuestionInfo(
                    ext, text, (answers[0], answers[1]), correct, licence or set_licence, set_name
                )
        missing = set(constitutions) - self.constitutions.keys()
        if missing:
            for constitution in Constitution.objects.filter(pk__in=missing):
                self.constitutions[constitution.pk] = constitution.label
                self.principles[constitution.pk] = principles_text(constitution)
        missing = set(profiles) - self.profiles.keys()
        if missing:
            for pk, backend, model in DebaterProfile.objects.filter(pk__in=missing).values_list(
                "pk", "backend", "model"
            ):
                self.profiles[pk] = f"{backend}/{model}"
        missing = {pk for pk in ai_judges if pk is not None} - self.ai_judges.keys()
        if missing:
            for judge in JudgeProfile.objects.filter(pk__in=missing):
                self.ai_judges[judge.pk] = judge.label

    def debate_info(self, debate_id: int, row: Sequence[object]) -> DebateInfo:
        """``row`` = (question_id, protocol, constitution_id, debater_a_id, debater_b_id, tournament_id)."""
        q = self.questions[row[0]]  # type: ignore[index]
        return DebateInfo(
            debate_id=debate_id,
            question_id=q.external_id,
            question=q.question,
            answers=q.answers,
            correct_index=q.correct_index,
            protocol=row[1],  # type: ignore[arg-type]
            constitution=self.constitutions[row[2]],  # type: ignore[index]
            debater_models=(self.profiles[row[3]], self.profiles[row[4]]),  # type: ignore[index]
            tournament_id=row[5],  # type: ignore[arg-type]
            licence=q.licence,
            question_set=q.question_set,
        )


_DEBATE_FIELDS = ("question_id", "protocol", "constitution_id", "debater_a_id", "debater_b_id", "tournament_id")


@dataclass
class Block:
    """One chunk of the stream: how many source records it consumed and the canonical rows."""

    consumed: int
    rows: list[Row]
    skipped: int


def _debate_filters(req: ExportRequest, prefix: str) -> dict[str, object]:
    out: dict[str, object] = {}
    constitution = req.constitution_filter()
    if constitution is not None:
        out[f"{prefix}constitution__name"] = constitution[0]
        if constitution[1] is not None:
            out[f"{prefix}constitution__version"] = constitution[1]
    if req.tournament is not None:
        out[f"{prefix}tournament_id"] = req.tournament
    return out


def verdict_queryset(judge_kind: str = "any", req: ExportRequest | None = None) -> QuerySet[Verdict]:
    """Verdicts on finished debates matching the request's selection filters."""
    req = req or ExportRequest(judge=judge_kind)
    qs = Verdict.objects.filter(debate__status=Debate.Status.FINISHED, **_debate_filters(req, "debate__"))
    if req.judge != "any":
        qs = qs.filter(kind=req.judge)
    if req.since is not None:
        qs = qs.filter(created_at__gte=req.since)
    return qs.order_by("debate_id", "pk")


def candidate_queryset(req: ExportRequest) -> QuerySet[Candidate]:
    qs = Candidate.objects.filter(**_debate_filters(req, "turn__debate__"))
    if req.since is not None:
        qs = qs.filter(turn__finished_at__gte=req.since)
    return qs.order_by("turn_id", "index")


def revision_queryset(req: ExportRequest) -> QuerySet[Revision]:
    qs = Revision.objects.filter(**_debate_filters(req, "turn__debate__"))
    if req.since is not None:
        qs = qs.filter(turn__finished_at__gte=req.since)
    return qs.order_by("turn_id", "step")


def selection(req: ExportRequest) -> QuerySet[Verdict] | QuerySet[Candidate] | QuerySet[Revision]:
    if req.kind in ("arguments", "judgments"):
        return verdict_queryset(req=req)
    if req.kind == "turns":
        return candidate_queryset(req)
    return revision_queryset(req)


def empty_selection_message(req: ExportRequest) -> str:
    what = {
        "arguments": "no verdicts match: judge some finished debates first, or relax the filters",
        "judgments": "no verdicts match: judge some finished debates first, or relax the filters",
        "turns": "no best-of-N candidates match: run debates with best-of-N sampling, or relax the filters",
        "revisions": "no critique-and-revision steps match: run debates with revisions on, or relax the filters",
    }
    return what[req.kind]


def _grouped(rows: Iterable[tuple[object, ...]], key_index: int, chunk: int) -> Iterator[list[tuple[object, ...]]]:
    """Cut a stream sorted by ``row[key_index]`` into blocks of about ``chunk`` rows, never
    splitting one key's rows across blocks."""
    block: list[tuple[object, ...]] = []
    for row in rows:
        if len(block) >= chunk and row[key_index] != block[-1][key_index]:
            yield block
            block = []
        block.append(row)
    if block:
        yield block


def _ids_filter(name: str, ids: set[int]) -> dict[str, object]:
    """A range when the ids are dense (an index range scan, no long IN list to send and parse),
    else IN. Callers drop rows outside ``ids``."""
    lo, hi = min(ids), max(ids)
    if len(ids) * 2 >= hi - lo + 1:
        return {f"{name}__gte": lo, f"{name}__lte": hi}
    return {f"{name}__in": list(ids)}


_VERDICT_FIELDS = (
    "pk", "debate_id", "kind", "judge_id", "ai_judge_id", "judge_label", "shown_first", "p_a", "p_b",
    "reason", "correct", "time_spent_s", "origin",
    *(f"debate__{f}" for f in _DEBATE_FIELDS),
)  # fmt: skip
_VERDICT_DEBATE_OFFSET = len(_VERDICT_FIELDS) - len(_DEBATE_FIELDS)


def iter_verdict_groups(
    qs: QuerySet[Verdict], *, judgments: bool = False, chunk: int = CHUNK
) -> Iterator[tuple[int, list[list[VerdictRecord]]]]:
    """Stream ``(verdicts consumed, [one debate's records, …])`` blocks, in debate order.

    One server-side cursor over the verdicts, and per block one query for the speeches (with quote
    checks, referee findings and judge questions when ``judgments``).
    """
    lookups = _Lookups()
    turn_fields = ["debate_id", "index", "round", "side", "text"]
    if judgments:
        turn_fields += ["quotes", "violations"]
    ordered = qs.order_by("debate_id", "pk")  # grouping needs each debate's verdicts together
    for block in _grouped(ordered.values_list(*_VERDICT_FIELDS).iterator(chunk_size=chunk), 1, chunk):
        debate_ids = list(dict.fromkeys(row[1] for row in block))
        speeches: dict[int, list[SpeechData]] = {}
        wanted = set(debate_ids)
        for t in Turn.objects.filter(**_ids_filter("debate_id", wanted)).order_by().values_list(*turn_fields):
            if t[0] not in wanted:
                continue
            quotes: tuple[Mapping[str, object], ...] = ()
            violations: tuple[str, ...] = ()
            if judgments:
                quotes = tuple(q for q in (t[5] or ()) if isinstance(q, Mapping))
                violations = tuple(
                    str(v.get("message") or v.get("rule")) if isinstance(v, Mapping) else str(v) for v in (t[6] or ())
                )
            speeches.setdefault(t[0], []).append(SpeechData(t[1], t[2], t[3], t[4], quotes, violations))  # type: ignore[arg-type]
        asked: dict[int, list[JudgeQuestionData]] = {}
        if judgments:
            for debate_id, after, text in JudgeQuestion.objects.filter(**_ids_filter("debate_id", wanted)).values_list(
                "debate_id", "after_round", "text"
            ):
                if debate_id not in wanted:
                    continue
                asked.setdefault(debate_id, []).append(JudgeQuestionData(after, text))
        d = _VERDICT_DEBATE_OFFSET
        lookups.load(
            questions={row[d] for row in block},  # type: ignore[misc]
            constitutions={row[d + 2] for row in block},  # type: ignore[misc]
            profiles={row[d + 3] for row in block} | {row[d + 4] for row in block},  # type: ignore[operator]
            ai_judges={row[4] for row in block},  # type: ignore[misc]
        )
        groups: list[list[VerdictRecord]] = []
        current: list[VerdictRecord] = []
        infos: dict[int, DebateInfo] = {}
        for row in block:
            (pk, debate_id, kind, judge_id, ai_judge_id, judge_label, shown_first, p_a, p_b, reason, correct,
             time_spent_s, origin) = row[:d]  # fmt: skip
            info = infos.get(debate_id)  # type: ignore[arg-type]
            if info is None:
                info = infos[debate_id] = lookups.debate_info(debate_id, row[d:])  # type: ignore[arg-type,index]
            if judge_id is not None:
                ref, model = f"user:{judge_id}", ""
            elif ai_judge_id is not None:
                ref, model = f"ai:{ai_judge_id}", lookups.ai_judges.get(ai_judge_id, judge_label)  # type: ignore[arg-type]
            else:
                ref, model = f"label:{judge_label}", judge_label if kind == Verdict.Kind.AI else ""
            record = VerdictRecord(
                verdict_id=pk,  # type: ignore[arg-type]
                debate_id=debate_id,  # type: ignore[arg-type]
                question_id=info.question_id,
                question=info.question,
                answers=info.answers,
                correct_index=info.correct_index,
                protocol=info.protocol,
                constitution=info.constitution,
                debater_models=info.debater_models,
                judge_kind=kind,  # type: ignore[arg-type]
                judge_ref=ref,
                shown_first=shown_first,  # type: ignore[arg-type]
                p=(p_a, p_b),  # type: ignore[arg-type]
                reason=reason,  # type: ignore[arg-type]
                speeches=tuple(speeches.get(debate_id, ())),  # type: ignore[arg-type]
                judge_model=str(model),
                correct=correct,  # type: ignore[arg-type]
                tournament_id=info.tournament_id,
                licence=info.licence,
                question_set=info.question_set,
                origin=origin,  # type: ignore[arg-type]
                judge_principles=lookups.principles[row[d + 2]] if kind == Verdict.Kind.AI else "",  # type: ignore[index]
                time_spent_s=time_spent_s,  # type: ignore[arg-type]
                judge_questions=tuple(asked.get(debate_id, ())),  # type: ignore[arg-type]
            )
            if current and current[-1].debate_id != record.debate_id:
                groups.append(current)
                current = []
            current.append(record)
        if current:
            groups.append(current)
        yield len(block), groups


def iter_records(qs: QuerySet[Verdict], chunk: int = CHUNK) -> Iterator[VerdictRecord]:
    """Every verdict of ``qs`` as a record, in debate order, streamed in chunks."""
    for _, groups in iter_verdict_groups(qs, chunk=chunk):
        for group in groups:
            yield from group


def _turn_infos(turn_ids: Iterable[int], lookups: _Lookups) -> dict[int, tuple[DebateInfo, tuple[object, ...]]]:
    """turn id → (its debate's info, (index, round, side, model, prompt, meta))."""
    turns = {
        t[0]: t
        for t in Turn.objects.filter(pk__in=list(turn_ids)).values_list(
            "pk", "debate_id", "index", "round", "side", "model_name", "prompt", "meta"
        )
    }
    debates = {
        d[0]: d[1:]
        for d in Debate.objects.filter(pk__in={t[1] for t in turns.values()}).values_list("pk", *_DEBATE_FIELDS)
    }
    lookups.load(
        questions={d[0] for d in debates.values()},
        constitutions={d[2] for d in debates.values()},
        profiles={d[3] for d in debates.values()} | {d[4] for d in debates.values()},
    )
    out = {}
    for pk, (_, debate_id, index, rnd, side, model_name, prompt, meta) in turns.items():
        info = lookups.debate_info(debate_id, debates[debate_id])
        model = model_name or info.debater_models[side]
        out[pk] = (info, (index, rnd, side, model, prompt, meta))
    return out


def _bon_judge(meta: object) -> str:
    # The best-of-N runner records the scoring judge in Turn.meta["best_of_n"]["judge"].
    if isinstance(meta, Mapping):
        bon = meta.get("best_of_n")
        if isinstance(bon, Mapping) and bon.get("judge"):
            return str(bon["judge"])
    return ""


def iter_candidate_sets(qs: QuerySet[Candidate], chunk: int = CHUNK) -> Iterator[tuple[int, list[CandidateSet]]]:
    lookups = _Lookups()
    fields = ("turn_id", "index", "text", "score", "chosen")
    ordered = qs.order_by("turn_id", "index")
    for block in _grouped(ordered.values_list(*fields).iterator(chunk_size=chunk), 0, chunk):
        infos = _turn_infos({row[0] for row in block}, lookups)  # type: ignore[misc]
        by_turn: dict[int, list[CandidateData]] = {}
        for turn_id, index, text, score, chosen in block:
            by_turn.setdefault(turn_id, []).append(CandidateData(index, text, score, chosen))  # type: ignore[arg-type]
        sets = []
        for turn_id, candidates in by_turn.items():
            info, (index, rnd, side, model, prompt, meta) = infos[turn_id]
            sets.append(
                CandidateSet(
                    debate=info,
                    turn_id=turn_id,
                    turn_index=index,  # type: ignore[arg-type]
                    round=rnd,  # type: ignore[arg-type]
                    side=side,  # type: ignore[arg-type]
                    model=str(model),
                    prompt=tuple(clean_messages(prompt or ())),  # type: ignore[arg-type]
                    candidates=tuple(candidates),
                    judge_model=_bon_judge(meta),
                )
            )
        yield len(block), sets


def iter_revisions(qs: QuerySet[Revision], chunk: int = CHUNK) -> Iterator[tuple[int, list[RevisionRecord]]]:
    lookups = _Lookups()
    fields = ("pk", "turn_id", "step", "draft", "revision", "principle_id", "principle", "critique", "prompt")
    for block in _grouped(qs.values_list(*fields).iterator(chunk_size=chunk), 1, chunk):
        infos = _turn_infos({row[1] for row in block}, lookups)  # type: ignore[misc]
        records = []
        for pk, turn_id, step, draft, revision, principle_id, principle, critique, prompt in block:
            info, (index, rnd, side, model, turn_prompt, _) = infos[turn_id]  # type: ignore[index]
            records.append(
                RevisionRecord(
                    debate=info,
                    revision_id=pk,  # type: ignore[arg-type]
                    turn_id=turn_id,  # type: ignore[arg-type]
                    turn_index=index,  # type: ignore[arg-type]
                    round=rnd,  # type: ignore[arg-type]
                    side=side,  # type: ignore[arg-type]
                    model=str(model),
                    step=step,  # type: ignore[arg-type]
                    prompt=tuple(clean_messages(prompt or turn_prompt or ())),  # type: ignore[arg-type]
                    draft=draft,  # type: ignore[arg-type]
                    revision=revision,  # type: ignore[arg-type]
                    principle_id=principle_id,  # type: ignore[arg-type]
                    principle=principle,  # type: ignore[arg-type]
                    critique=critique,  # type: ignore[arg-type]
                )
            )
        yield len(block), records


_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def read_ahead(make: Callable[[], Iterator[T]], depth: int = 2) -> Iterator[T]:
    """The items of ``make()``, produced by a reader thread up to ``depth`` items ahead.

    The reader has its own database connection: while it waits for PostgreSQL, the caller builds
    and writes rows (the GIL is free during network waits and Arrow's compression). Inside an
    atomic block (a test's transaction) another connection would not see the data, so the items
    are then produced in the caller's thread. An error in the reader is raised in the caller.
    """
    from django.db import connection, connections

    if depth <= 0 or connection.in_atomic_block:
        yield from make()
        return
    items: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in make():
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
            put(_Failed(exc))
        finally:
            connections.close_all()

    reader = threading.Thread(target=produce, name="export-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        reader.join()


def canonical_blocks(req: ExportRequest, anonymize: Anonymizer, chunk: int = CHUNK, ahead: int = 2) -> Iterator[Block]:
    """The request's canonical rows, block by block (selection filters applied, row filters not).

    The records are read ``ahead`` chunks in advance by a reader thread (see :func:`read_ahead`).
    """
    if req.kind in ("arguments", "judgments"):
        judgments = req.kind == "judgments"
        verdicts = verdict_queryset(req=req)
        for consumed, groups in read_ahead(
            lambda: iter_verdict_groups(verdicts, judgments=judgments, chunk=chunk), ahead
        ):
            rows: list[Row] = []
            skipped = 0
            for group in groups:
                if judgments:
                    stats = group_stats(group)
                    for record in group:
                        row = judgments_row(record, anonymize, stats)
                        if row is None:
                            skipped += 1
                        else:
                            rows.append(row)
                else:
                    made = arguments_group_rows(group, anonymize, per_verdict=req.per_verdict)
                    if req.per_verdict:
                        skipped += len(group) - len(made)
                    elif not made:
                        skipped += len(group)
                    rows += made
            yield Block(consumed, rows, skipped)
    elif req.kind == "turns":
        candidates = candidate_queryset(req)
        for consumed, sets in read_ahead(lambda: iter_candidate_sets(candidates, chunk=chunk), ahead):
            rows = []
            skipped = 0
            for cs in sets:
                made = turns_rows(cs, anonymize, all_pairs=req.all_pairs)
                skipped += 0 if made else 1
                rows += made
            yield Block(consumed, rows, skipped)
    else:
        revisions = revision_queryset(req)
        for consumed, records in read_ahead(lambda: iter_revisions(revisions, chunk=chunk), ahead):
            rows = []
            skipped = 0
            for r in records:
                row = revisions_row(r, anonymize)
                if row is None:
                    skipped += 1
                else:
                    rows.append(row)
            yield Block(consumed, rows, skipped)


# --- Writers --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=65536)
def split_of(question_id: str, test_fraction: float) -> str:
    """``train`` or ``test``, from a hash of the question id: the same question always lands in
    the same split, in every export."""
    h = int.from_bytes(hashlib.sha256(f"split:{question_id}".encode()).digest()[:8], "big") / 2**64
    return "test" if h < test_fraction else "train"


class _JsonlWriter:
    def __init__(self, path: Path, names: Sequence[str]) -> None:
        self.path = path
        self.names = list(names)
        self.handle = path.open("w", encoding="utf-8")
        self.digest = hashlib.sha256()

    def write(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        dumps = json.dumps
        names = self.names
        text = "".join(dumps({n: row.get(n) for n in names}, ensure_ascii=False) + "\n" for row in rows)
        data = text.encode("utf-8")
        self.digest.update(data)
        self.handle.write(text)

    def close(self) -> str:
        self.handle.close()
        return self.digest.hexdigest()

    def abort(self) -> None:
        self.handle.close()


def _messages_type() -> pa.DataType:
    import pyarrow as pa

    return pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


class _ParquetWriter:
    """Rows buffered into row groups of ``ROW_GROUP`` and written as they fill: bounded memory."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.schema = schema
        self.names = schema.names
        self.writer = pq.ParquetWriter(str(path), schema, compression="zstd")
        self.buffer: list[Row] = []

    def write(self, rows: Sequence[Row]) -> None:
        self.buffer.extend(rows)
        if len(self.buffer) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self.buffer:
            return
        arrays = [pa.array([row.get(c.name) for row in self.buffer], type=c.type) for c in self.schema]
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.buffer = []

    def abort(self) -> None:
        self.buffer = []
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - the file is deleted anyway
            log.debug("closing an aborted Parquet file failed", exc_info=True)

    def close(self) -> str:
        self._flush()
        self.writer.close()
        digest = hashlib.sha256()
        with self.path.open("rb") as handle:
            for piece in iter(lambda: handle.read(1 << 20), b""):
                digest.update(piece)
        return digest.hexdigest()


@dataclass
class _Stats:
    """What the card reports, accumulated from the rows written."""

    rows: int = 0
    consumed: int = 0
    skipped: int = 0
    filtered: int = 0
    splits: Counter[str] = field(default_factory=Counter)
    constitutions: Counter[str] = field(default_factory=Counter)
    debater_models: Counter[str] = field(default_factory=Counter)
    judge_kinds: Counter[str] = field(default_factory=Counter)
    judge_models: Counter[str] = field(default_factory=Counter)
    licences: Counter[str] = field(default_factory=Counter)
    protocols: Counter[str] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)
    question_sets: Counter[str] = field(default_factory=Counter)
    questions: set[str] = field(default_factory=set)

    def observe(self, row: Row) -> None:
        self.constitutions[str(row["constitution"])] += 1
        self.debater_models[str(row["debater_a_model"])] += 1
        self.debater_models[str(row["debater_b_model"])] += 1
        self.licences[str(row["source_licence"]) or "unknown"] += 1
        self.protocols[str(row["protocol"])] += 1
        self.question_sets[str(row["question_set"])] += 1
        if "judge_kind" in row:
            self.judge_kinds[str(row["judge_kind"])] += 1
            for model in str(row.get("judge_model") or "").split(","):
                if model:
                    self.judge_models[model] += 1
        if "label" in row:
            self.labels[str(row["label"]).lower()] += 1
        if len(self.questions) < 1_000_000:
            self.questions.add(str(row["question_id"]))


@dataclass
class ExportResult:
    path: Path
    rows: int
    skipped: int
    sha256: str
    filtered: int = 0
    consumed: int = 0
    card: Path | None = None
    hf_dir: Path | None = None
    splits: dict[str, int] = field(default_factory=dict)


ProgressFn = Callable[[int, int], None]


def _fewer_gc_passes(blocks: Iterator[Block]) -> Iterator[Block]:
    """The blocks, with the cyclic garbage collector running rarely meanwhile.

    An export allocates millions of short-lived, acyclic objects; at the default thresholds the
    collector walks them over and over (about a fifth of the run time). Reference counting frees
    them as before; only cycles wait a little longer.
    """
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], 50_000), old[1], old[2])
    try:
        yield from blocks
    finally:
        gc.set_threshold(*old)


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise ExportError(f"{path} exists and is not a folder")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise ExportError(f"{path} exists and is not empty (use --overwrite)")


def _anonymizer(req: ExportRequest) -> Anonymizer:
    if req.stable_judge_ids:
        key = hmac.new(str(settings.ARENA_EXPORT_KEY).encode(), b"judge-ids", hashlib.sha256).digest()
        return Anonymizer(key)
    return Anonymizer()


def run_export(
    req: ExportRequest,
    out_dir: Path,
    *,
    overwrite: bool = False,
    hf_dir: Path | None = None,
    progress: ProgressFn | None = None,
    chunk: int = CHUNK,
    ahead: int = 2,
) -> ExportResult:
    """Write ``out_dir/preferences.{jsonl,parquet}`` and ``out_dir/README.md`` (the dataset card),
    and with ``hf_dir`` a ``datasets`` folder (``save_to_disk``) with train/test splits.

    Refuses (:class:`ExportError`, nothing written) an invalid request, a non-empty folder without
    ``overwrite``, and a selection with no rows. Files appear whole or not at all: they are written
    under temporary names and renamed at the end. ``progress(done, total)`` is called per chunk,
    counted in source records (verdicts, candidates or revisions). ``ahead`` chunks are read in
    advance by a reader thread (0: read in the caller's thread).
    """
    req.validate()
    _refuse_existing(out_dir, overwrite)
    if hf_dir is not None:
        if hf_dir.resolve() == out_dir.resolve():
            raise ExportError("the datasets folder (--hf) must differ from the output folder")
        _refuse_existing(hf_dir, overwrite)
    total = selection(req).count()
    if total == 0:
        raise ExportError(empty_selection_message(req))

    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    data_path = out_dir / f"{DATA_STEM}.{req.file_format}"
    tmp_path = out_dir / f".{data_path.name}.partial"
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    cols = columns(req.kind, req.format)
    names = [c[0] for c in cols]
    opened: list[_JsonlWriter | _ParquetWriter] = []
    try:
        schema = arrow_schema(req.kind, req.format)
        main: _JsonlWriter | _ParquetWriter
        main = _JsonlWriter(tmp_path, names) if req.file_format == "jsonl" else _ParquetWriter(tmp_path, schema)
        opened.append(main)
        split_writers: dict[str, _ParquetWriter] = {}
        if hf_dir is not None:
            split_writers = {s: _ParquetWriter(work / f"{s}.parquet", schema) for s in ("train", "test")}
            opened += split_writers.values()
        stats = _Stats()
        anonymize = _anonymizer(req)
        done = 0
        # No transaction around the stream: progress updates (the Celery job's) must be visible to
        # other connections as they happen. PostgreSQL then holds the cursor's result server-side.
        for block in _fewer_gc_passes(canonical_blocks(req, anonymize, chunk=chunk, ahead=ahead)):
            out_rows: list[Row] = []
            by_split: dict[str, list[Row]] = {"train": [], "test": []}
            for row in block.rows:
                if not keep_row(row, req):
                    stats.filtered += 1
                    continue
                formatted = to_format(row, req.format)
                for one in formatted:
                    stats.observe(one)
                out_rows += formatted
                if split_writers:
                    by_split[split_of(str(row["question_id"]), req.test_fraction)] += formatted
            main.write(out_rows)
            for name, writer in split_writers.items():
                writer.write(by_split[name])
                stats.splits[name] += len(by_split[name])
            stats.rows += len(out_rows)
            stats.skipped += block.skipped
            done += block.consumed
            if progress is not None:
                progress(min(done, total), total)
        stats.consumed = done
        sha = main.close()
        split_paths = {name: (writer.path, writer.close()) for name, writer in split_writers.items()}
        if stats.rows == 0:
            raise ExportError(
                f"no rows: {total} {UNIT[req.kind]}(s) matched, but {stats.skipped} made no pair and "
                f"{stats.filtered} were removed by the row filters"
            )
        for stale in out_dir.glob(f"{DATA_STEM}.*"):
            if stale.suffix.lstrip(".") in FILE_FORMATS and stale != data_path:
                stale.unlink()
        tmp_path.replace(data_path)
        result = ExportResult(
            path=data_path,
            rows=stats.rows,
            skipped=stats.skipped,
            sha256=sha,
            filtered=stats.filtered,
            consumed=stats.consumed,
            splits=dict(stats.splits),
        )
        card = render_card(req, result, stats)
        (out_dir / CARD).write_text(card, encoding="utf-8")
        result.card = out_dir / CARD
        if hf_dir is not None:
            _save_hf(split_paths, hf_dir, work, card)
            result.hf_dir = hf_dir
        return result
    except BaseException:
        for writer in opened:
            writer.abort()
        tmp_path.unlink(missing_ok=True)
        if created:
            shutil.rmtree(work, ignore_errors=True)
            if out_dir.exists() and not any(out_dir.iterdir()):
                out_dir.rmdir()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _save_hf(split_paths: Mapping[str, tuple[Path, str]], hf_dir: Path, work: Path, card: str) -> None:
    """A ``DatasetDict`` of the split files, saved next to ``hf_dir`` and swapped in when whole."""
    import datasets

    with _QuietDatasets():
        dd = datasets.DatasetDict(
            {
                name: datasets.Dataset.from_parquet(str(path), cache_dir=str(work / "cache"), keep_in_memory=False)
                for name, (path, _) in split_paths.items()
            }
        )
        hf_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = hf_dir.parent / f".{hf_dir.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        dd.save_to_disk(str(staging))
    (staging / CARD).write_text(card, encoding="utf-8")
    if hf_dir.exists():
        shutil.rmtree(hf_dir)
    staging.replace(hf_dir)


class _QuietDatasets:
    """datasets prints progress bars per split; the export has its own."""

    def __enter__(self) -> None:
        import datasets

        self.was = not datasets.are_progress_bars_disabled()
        datasets.disable_progress_bars()

    def __exit__(self, *exc: object) -> None:
        import datasets

        if self.was:
            datasets.enable_progress_bars()


# --- The dataset card -----------------------------------------------------------------------------


def _counter_lines(counter: Counter[str], empty: str = "none") -> str:
    if not counter:
        return f"  - {empty}\n"
    return "".join(f"  - `{name}`: {n} rows\n" for name, n in counter.most_common())


def _source_lines(stats: _Stats) -> str:
    sets = {
        name: (origin, licence)
        for name, origin, licence in QuestionSet.objects.filter(name__in=list(stats.question_sets)).values_list(
            "name", "origin", "licence"
        )
    }
    lines = []
    for name, n in stats.question_sets.most_common():
        origin, licence = sets.get(name, ("", ""))
        lines.append(f"- `{name}` ({n} rows): origin {origin or 'not recorded'}; licence {licence or 'not recorded'}\n")
    lines.append("- licences of the texts, per row:\n" + _counter_lines(stats.licences))
    return "".join(lines)


def _licence_tag(licences: Counter[str]) -> str:
    known = {name.lower() for name in licences}
    if len(known) == 1:
        only = known.pop()
        if re.fullmatch(r"[a-z0-9.\-]+", only) and only != "unknown":
            return only
    return "other"


def render_card(req: ExportRequest, result: ExportResult, stats: _Stats) -> str:
    """The dataset card (README.md): what the rows are, every column, counts, filters, provenance."""
    name = result.path.name
    loader = "json" if req.file_format == "jsonl" else "parquet"
    column_rows = "".join(
        f"| `{n}` | {t} | {meaning.replace('|', chr(92) + '|')} |\n" for n, t, meaning in columns(req.kind, req.format)
    )
    splits = ""
    if result.splits:
        splits = (
            f"- `--hf` splits (by a hash of `question_id`, test fraction {req.test_fraction}): "
            f"train {result.splits.get('train', 0)}, test {result.splits.get('test', 0)}; no question is in both\n"
        )
    labels = ""
    if stats.labels:
        labels = f"- labels: {stats.labels.get('true', 0)} true, {stats.labels.get('false', 0)} false\n"
    filters = "".join(f"- {line}\n" for line in req.describe_filters())
    summary = KIND_HELP[req.kind][0].upper() + KIND_HELP[req.kind][1:]
    layout = "one JSON object a line" if req.file_format == "jsonl" else "Parquet, zstd-compressed row groups"
    id_scope = (
        "stable across exports that share ARENA_EXPORT_KEY"
        if req.stable_judge_ids
        else "stable within this export only"
    )
    return f"""---
license: {_licence_tag(stats.licences)}
task_categories: [text-generation]
tags: [debate, preference, rlaif, trl, scalable-oversight]
configs:
- config_name: default
  data_files: {name}
---
# Debate Arena preference data: {req.kind}, {req.format}

{summary}.

Format: {FORMAT_HELP[req.format]}. The rows are in `{name}` ({layout}). Load them with

```python
import datasets
ds = datasets.load_dataset("{loader}", data_files="{name}", split="train")
```

and pass it to TRL as it is (`DPOTrainer`, `RewardTrainer` for pairs; `KTOTrainer` for unpaired
rows). docs/datasets.md in Debate Arena defines every kind precisely.

## Columns

| column | type | meaning |
|---|---|---|
{column_rows}
## Counts

- rows: {result.rows}
- {UNIT[req.kind]}s read: {result.consumed}
- skipped (no preference, a side without speeches, no stored prompt, or nothing to pair): {result.skipped}
- removed by the row filters: {result.filtered}
- distinct questions: {len(stats.questions)}
{labels}{splits}
## Filters

- kind: {req.kind}
- format: {req.format}
{filters}
## Provenance

- constitution versions:
{_counter_lines(stats.constitutions)}- debater models (two per row):
{_counter_lines(stats.debater_models)}- judge kinds:
{_counter_lines(stats.judge_kinds)}- judge models:
{_counter_lines(stats.judge_models, "none (human judges only)")}- protocols:
{_counter_lines(stats.protocols)}- judge ids are keyed hashes, {id_scope}

## Source texts and licence

The debates are about the source texts of these question sets. Judgment prompts never contain
the texts; debater prompts (turns, revisions) contain the excerpts the debater saw.

{_source_lines(stats)}
## Content hash

- sha256 of `{name}`: `{result.sha256}`
- written: {timezone.now().isoformat(timespec="seconds")}
"""


# --- The command line's original entry point ------------------------------------------------------


def export_arguments_jsonl(
    out_dir: Path, *, overwrite: bool = False, judge_kind: str = "any", progress: bool = False
) -> ExportResult:
    """``arguments`` pairs, TRL conversational, as ``out_dir/preferences.jsonl`` plus the card."""
    req = ExportRequest(kind="arguments", format="conversational", file_format="jsonl", judge=judge_kind)
    if not progress:
        return run_export(req, out_dir, overwrite=overwrite)
    with TqdmProgress(UNIT[req.kind]) as update:
        return run_export(req, out_dir, overwrite=overwrite, progress=update)


class TqdmProgress:
    """A tqdm bar as a :data:`ProgressFn` (its total is learnt from the first call)."""

    def __init__(self, unit: str, file: object = None) -> None:
        self.unit = unit
        self.file = file
        self.bar: object = None

    def __enter__(self) -> ProgressFn:
        from tqdm import tqdm

        def update(done: int, total: int) -> None:
            if self.bar is None:
                self.bar = tqdm(total=total, unit=self.unit, desc="export", file=self.file, dynamic_ncols=True)
            self.bar.update(done - self.bar.n)  # type: ignore[attr-defined]

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()  # type: ignore[attr-defined]


# --- Actions behind the researcher page -----------------------------------------------------------


def export_root() -> Path:
    return Path(settings.ARENA_EXPORT_DIR)


def export_folder(export_id: int) -> Path:
    """Where an export's files live: named by its id only, so no request can choose a path."""
    return export_root() / f"export-{int(export_id)}"


def start_export(req: ExportRequest, user: AbstractBaseUser | None) -> Export:
    """Validate, check the selection is not empty, record the export and queue it once committed."""
    req.validate()
    if not selection(req).exists():
        raise ExportError(empty_selection_message(req))
    with transaction.atomic():
        export = Export.objects.create(kind=req.kind, format=req.format, filters=req.to_filters(), created_by=user)
        transaction.on_commit(lambda: _enqueue(export.pk))
    return export


def _enqueue(export_id: int) -> None:
    from judging.tasks import export_task

    export_task.delay(export_id)


def run_export_job(export_id: int, *, redelivered: bool = False) -> str:
    """Run one queued export (the Celery task's body). Returns the export's final status.

    Claims the row with a conditional UPDATE, so a duplicate delivery does nothing; a redelivered
    task (its worker died) may take over a running one. Progress is stored on the row about twice
    a second for the page to poll; the row count, hash and path when the export is written.
    """
    claimable = [Export.Status.QUEUED] + ([Export.Status.RUNNING] if redelivered else [])
    claimed = Export.objects.filter(pk=export_id, status__in=claimable).update(
        status=Export.Status.RUNNING, progress=0.0, rows=0, error=""
    )
    if claimed != 1:
        current = Export.objects.filter(pk=export_id).values_list("status", flat=True).first()
        return str(current or "missing")
    export = Export.objects.get(pk=export_id)
    last = [float("-inf")]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5 or done >= total:
            last[0] = now
            Export.objects.filter(pk=export_id).update(progress=done / total if total else 1.0)

    out = export_folder(export_id)
    try:
        req = ExportRequest.from_filters(export.kind, export.format, export.filters or {})
        result = run_export(req, out, overwrite=True, progress=progress)
    except ExportError as exc:
        Export.objects.filter(pk=export_id).update(
            status=Export.Status.FAILED, error=str(exc), finished_at=timezone.now()
        )
        return Export.Status.FAILED
    except Exception as exc:
        log.exception("export %s failed", export_id)
        Export.objects.filter(pk=export_id).update(
            status=Export.Status.FAILED,
            error=f"internal error: {type(exc).__name__}: {exc}",
            finished_at=timezone.now(),
        )
        return Export.Status.FAILED
    Export.objects.filter(pk=export_id).update(
        status=Export.Status.FINISHED,
        progress=1.0,
        rows=result.rows,
        path=str(result.path.relative_to(export_root())),
        sha256=result.sha256,
        finished_at=timezone.now(),
    )
    return Export.Status.FINISHED


def export_file(export: Export, which: str) -> Path | None:
    """The data file (``which="data"``) or card (``"card"``) of a finished export, or None.

    The path is built from the export's id and fixed names only, and must resolve inside the
    export folder: nothing a request or the database says can point elsewhere.
    """
    if export.status != Export.Status.FINISHED:
        return None
    folder = export_folder(export.pk).resolve()
    if which == "card":
        name = CARD
    elif which == "data":
        fmt = (export.filters or {}).get("file_format", "jsonl")
        if fmt not in FILE_FORMATS:
            return None
        name = f"{DATA_STEM}.{fmt}"
    else:
        return None
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file():
        return None
    return path


__all__ = [
    "Anonymizer",
    "Block",
    "CandidateData",
    "CandidateSet",
    "DebateInfo",
    "ExportError",
    "ExportRequest",
    "ExportResult",
    "FILE_FORMATS",
    "FORMATS",
    "JUDGES",
    "KINDS",
    "RevisionRecord",
    "SpeechData",
    "VerdictRecord",
    "arguments_group_rows",
    "arguments_row",
    "arrow_schema",
    "columns",
    "export_arguments_jsonl",
    "hh_transcript",
    "iter_records",
    "judgments_row",
    "run_export",
    "split_of",
    "start_export",
    "to_format",
    "turns_rows",
    "revisions_row",
]
