"""Import of question sets from JSONL: all or nothing, with every bad line reported."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from arena.models import Question, QuestionSet

SAMPLE_SET = Path(__file__).resolve().parent / "data" / "quality-questions.jsonl"
SAMPLE_SET_NAME = "quality-sample"


class ImportFailed(ValueError):
    """The file has bad lines; ``problems`` lists (line number, reason). Nothing was imported."""

    def __init__(self, problems: list[tuple[int, str]], message: str = "") -> None:
        self.problems = problems
        if message:
            super().__init__(message)
            return
        lines = "\n".join(f"  line {n}: {why}" for n, why in problems[:50])
        more = f"\n  … and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{len(problems)} bad line(s), nothing imported:\n{lines}{more}")


@dataclass(frozen=True)
class ImportResult:
    question_set: QuestionSet
    created: int
    updated: int


def _str(obj: dict[str, object], key: str, where: str = "") -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}{key} must be a non-empty string")
    return value


def parse_line(text: str) -> dict[str, object]:
    """Validate one JSONL line; raises ValueError with a reason a person can act on."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    missing = [k for k in ("id", "question", "answers", "correct_index", "source") if k not in obj]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    answers = obj["answers"]
    if not isinstance(answers, list) or len(answers) != 2 or not all(isinstance(a, str) and a.strip() for a in answers):
        raise ValueError("answers must be a list of exactly two non-empty strings")
    if answers[0].strip() == answers[1].strip():
        raise ValueError("the two answers are identical")
    correct = obj["correct_index"]
    if isinstance(correct, bool) or not isinstance(correct, int) or correct not in (0, 1):
        raise ValueError("correct_index must be 0 or 1")
    source = obj["source"]
    if not isinstance(source, dict):
        raise ValueError("source must be an object with title and text")
    licence = obj.get("license", "")
    if not isinstance(licence, str):
        raise ValueError("license must be a string")
    origin = source.get("origin", "")
    if not isinstance(origin, str):
        raise ValueError("source.origin must be a string")
    return {
        "external_id": _str(obj, "id"),
        "question": _str(obj, "question"),
        "answers": [a.strip() for a in answers],
        "correct_index": correct,
        "source_title": _str(source, "title", "source."),
        "source_text": _str(source, "text", "source."),
        "source_origin": origin,
        "licence": licence,
    }


def import_questions(path: Path, set_name: str | None = None, description: str = "") -> ImportResult:
    """Import a JSONL file into a question set (re-importing updates questions by id)."""
    rows: list[dict[str, object]] = []
    problems: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ImportFailed([], f"cannot open {path}: {exc.strerror}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append((number, f"not UTF-8 (byte {exc.start + 1}: {exc.reason})"))
                continue
            if not line.strip():
                continue
            try:
                row = parse_line(line)
            except ValueError as exc:
                problems.append((number, str(exc)))
                continue
            ext = str(row["external_id"])
            if ext in seen:
                problems.append((number, f"duplicate id {ext!r} (first on line {seen[ext]})"))
                continue
            seen[ext] = number
            rows.append(row)
    if problems:
        raise ImportFailed(problems)
    if not rows:
        raise ImportFailed([], "the file holds no questions")
    licences = sorted({str(r["licence"]) for r in rows if r["licence"]})
    with transaction.atomic():
        qset, _ = QuestionSet.objects.get_or_create(
            name=set_name or path.stem, defaults={"description": description, "licence": ", ".join(licences)}
        )
        created = updated = 0
        for row in rows:
            ext = row.pop("external_id")
            _, was_created = Question.objects.update_or_create(question_set=qset, external_id=ext, defaults=row)
            created += int(was_created)
            updated += int(not was_created)
    return ImportResult(qset, created, updated)


def ensure_sample_set() -> QuestionSet:
    existing = QuestionSet.objects.filter(name=SAMPLE_SET_NAME).first()
    if existing is not None and existing.questions.exists():
        return existing
    return import_questions(
        SAMPLE_SET,
        SAMPLE_SET_NAME,
        "QuALITY questions over public-domain stories, via the NYU 2023 debate release (CC-BY-4.0).",
    ).question_set
