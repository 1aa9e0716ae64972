"""Preference datasets derived from stored verdicts.

Every row is built from one master record (:class:`VerdictRecord`) by a pure function, and records
stream from the database in chunks so memory stays bounded whatever the size. docs/datasets.md says
exactly what each kind of pair means.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.db.models import QuerySet

from arena.models import Debate, Turn
from judging.models import Verdict

CHUNK = 2000


@dataclass(frozen=True)
class SpeechData:
    index: int
    round: int
    side: int
    text: str


@dataclass(frozen=True)
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
    created_at: datetime
    speeches: tuple[SpeechData, ...] = field(default=())


class Anonymizer:
    """Keyed hash of judge identities: stable within one export, unlinkable across exports."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or secrets.token_bytes(32)

    def __call__(self, ref: str) -> str:
        return "judge-" + hmac.new(self.key, ref.encode(), hashlib.sha256).hexdigest()[:16]


def neutral_prompt(question: str, answers: Sequence[str]) -> str:
    return (
        f"Question: {question}\nAnswer 1: {answers[0]}\nAnswer 2: {answers[1]}\n"
        "Argue for the answer that is correct according to the text."
    )


def side_argument(speeches: Sequence[SpeechData], side: int) -> str:
    """One side's full argument: all its speeches in order, separated by blank lines."""
    return "\n\n".join(s.text.strip() for s in sorted(speeches, key=lambda s: s.index) if s.side == side)


def arguments_row(record: VerdictRecord, anonymize: Anonymizer) -> dict[str, object] | None:
    """One verdict → one TRL conversational preference pair; None when it cannot make a pair.

    ``chosen`` is the argument of the side the judge gave the higher probability. No pair comes
    from a verdict without a preference (equal probabilities) or a debate missing a side.
    """
    p0, p1 = record.p
    if p0 == p1:
        return None
    winner = 0 if p0 > p1 else 1
    chosen_text = side_argument(record.speeches, winner)
    rejected_text = side_argument(record.speeches, 1 - winner)
    if not chosen_text or not rejected_text:
        return None
    prompt = [{"role": "user", "content": neutral_prompt(record.question, record.answers)}]
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen_text}],
        "rejected": [{"role": "assistant", "content": rejected_text}],
        "margin": round(abs(p0 - p1), 6),
        "debate_id": record.debate_id,
        "verdict_id": record.verdict_id,
        "question_id": record.question_id,
        "protocol": record.protocol,
        "constitution": record.constitution,
        "chosen_model": record.debater_models[winner],
        "rejected_model": record.debater_models[1 - winner],
        "chosen_answer": record.answers[winner],
        "rejected_answer": record.answers[1 - winner],
        "judge_kind": record.judge_kind,
        "judge_id": anonymize(record.judge_ref),
        "shown_first": record.shown_first,
        "judge_correct": (winner == record.correct_index),
        "chosen_is_gold": winner == record.correct_index,
    }


def verdict_queryset(judge_kind: str = "any") -> QuerySet[Verdict]:
    qs = Verdict.objects.filter(debate__status=Debate.Status.FINISHED)
    if judge_kind != "any":
        qs = qs.filter(kind=judge_kind)
    return qs.order_by("pk")


def iter_records(qs: QuerySet[Verdict], chunk: int = CHUNK) -> Iterator[VerdictRecord]:
    """Stream records: one query for a chunk of verdicts, one for their debates' speeches."""
    last = 0
    base = qs.select_related(
        "debate", "debate__question", "debate__constitution", "debate__debater_a", "debate__debater_b"
    )
    while True:
        batch = list(base.filter(pk__gt=last)[:chunk])
        if not batch:
            return
        last = batch[-1].pk
        speeches: dict[int, list[SpeechData]] = {}
        for turn in Turn.objects.filter(debate_id__in={v.debate_id for v in batch}).only(
            "debate_id", "index", "round", "side", "text"
        ):
            speeches.setdefault(turn.debate_id, []).append(SpeechData(turn.index, turn.round, turn.side, turn.text))
        for v in batch:
            d = v.debate
            q = d.question
            yield VerdictRecord(
                verdict_id=v.pk,
                debate_id=d.pk,
                question_id=q.external_id,
                question=q.question,
                answers=(q.answers[0], q.answers[1]),
                correct_index=q.correct_index,
                protocol=d.protocol,
                constitution=d.constitution.label,
                debater_models=(d.debater_a.model_label, d.debater_b.model_label),
                judge_kind=v.kind,
                judge_ref=f"user:{v.judge_id}" if v.judge_id else f"label:{v.judge_label}",
                shown_first=v.shown_first,
                p=(v.p_a, v.p_b),
                reason=v.reason,
                created_at=v.created_at,
                speeches=tuple(speeches.get(d.pk, ())),
            )


class ExportError(ValueError):
    """The export cannot be written; the message says why."""


@dataclass
class ExportResult:
    path: Path
    rows: int
    skipped: int
    sha256: str


def export_arguments_jsonl(out_dir: Path, *, overwrite: bool = False, judge_kind: str = "any", progress: bool = False) -> ExportResult:
    """Write ``preferences.jsonl`` (TRL conversational pairs) and a dataset card into ``out_dir``."""
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"{out_dir} exists and is not empty (use --overwrite)")
    qs = verdict_queryset(judge_kind)
    total = qs.count()
    if total == 0:
        raise ExportError("no verdicts match: judge some finished debates first")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "preferences.jsonl"
    anonymize = Anonymizer()
    digest = hashlib.sha256()
    rows = skipped = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="verdict", desc="export")
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in iter_records(qs):
            row = arguments_row(record, anonymize)
            if bar is not None:
                bar.update()
            if row is None:
                skipped += 1
                continue
            line = json.dumps(row, ensure_ascii=False) + "\n"
            digest.update(line.encode())
            handle.write(line)
            rows += 1
    if bar is not None:
        bar.close()
    tmp.replace(path)
    result = ExportResult(path=path, rows=rows, skipped=skipped, sha256=digest.hexdigest())
    (out_dir / "README.md").write_text(_card(result, judge_kind))
    return result


def _card(result: ExportResult, judge_kind: str) -> str:
    return f"""---
license: cc-by-4.0
task_categories: [text-generation]
tags: [debate, preference, rlaif, trl]
---
# Debate Arena preference data

Format: TRL conversational preference with explicit prompt, one JSON object a line in
`{result.path.name}`. Load with `datasets.load_dataset("json", data_files="{result.path.name}")`.

Each row comes from one verdict on a finished debate. `prompt` is the question with both answers,
no side assigned. `chosen` is the full argument (every speech, in order) of the side the judge gave
the higher probability; `rejected` is the other side's. `margin` is the difference of the two
probabilities. The other columns are provenance: `debate_id`, `verdict_id`, `question_id`,
`protocol`, `constitution`, `chosen_model`/`rejected_model`, `chosen_answer`/`rejected_answer`,
`judge_kind` (human or ai), `judge_id` (a keyed hash, stable within this export only),
`shown_first` (index of the answer shown first to the judge), `judge_correct` (the judge preferred
the gold answer) and `chosen_is_gold` (the same fact, named for training filters).

- rows: {result.rows}
- verdicts skipped (no preference or a side without speeches): {result.skipped}
- judges: {judge_kind}
- content sha256: `{result.sha256}`

Source texts: QuALITY / Project Gutenberg stories, CC-BY-4.0 (via the NYU 2023 debate release).
"""
