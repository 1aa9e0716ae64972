"""Import of question sets from JSONL: all or nothing, with every bad line reported."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from arena import identity
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
    """``updated`` counts questions whose content changed; ``unchanged`` those the file repeats
    (possibly with the answers in the other order); ``recognised`` new questions identical to one
    of another set, stored in that question's answer order."""

    question_set: QuestionSet
    created: int
    updated: int
    unchanged: int = 0
    recognised: int = 0


# A story is a few thousand words in QuALITY (the longest ~60,000 characters); a file whose story
# is far longer is almost certainly not a story. Documented in docs/protocols.md ("Question sets").
MAX_STORY_CHARS = 300_000


def _max_length(name: str) -> int:
    length = Question._meta.get_field(name).max_length
    assert length is not None
    return length


def check_text(value: str, where: str, max_length: int | None = None) -> None:
    """Refuse what the database would refuse with a raw error: NUL characters and over-long values."""
    if "\x00" in value:
        raise ValueError(f"{where} contains a NUL character (\\u0000), which cannot be stored")
    if max_length is not None and len(value) > max_length:
        raise ValueError(f"{where} is {len(value)} characters long; at most {max_length} are allowed")


def _str(obj: dict[str, object], key: str, where: str = "", field_name: str | None = None) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}{key} must be a non-empty string")
    check_text(value, f"{where}{key}", _max_length(field_name) if field_name else None)
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
    for n, answer in enumerate(answers, start=1):
        check_text(answer, f"answer {n}")
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
    check_text(licence, "license", _max_length("licence"))
    origin = source.get("origin", "")
    if not isinstance(origin, str):
        raise ValueError("source.origin must be a string")
    check_text(origin, "source.origin", _max_length("source_origin"))
    story = _str(source, "text", "source.")
    if len(story) > MAX_STORY_CHARS:
        raise ValueError(f"source.text is {len(story)} characters long; stories are limited to {MAX_STORY_CHARS}")
    return {
        "external_id": _str(obj, "id", field_name="external_id"),
        "question": _str(obj, "question"),
        "answers": [a.strip() for a in answers],
        "correct_index": correct,
        "source_title": _str(source, "title", "source.", "source_title"),
        "source_text": story,
        "source_origin": origin,
        "licence": licence,
    }


def reconcile(existing: Question, row: dict[str, object], *, any_tokenisation: bool = False) -> tuple[list[str], bool]:
    """Compare a file's row with the stored question, answers mapped into the stored order.

    Returns the names of what would change (empty: the row is the question, perhaps in the other
    order) and whether the row lists the answers reversed. A row that is the same question keeps
    the stored order; one that changes something replaces it. ``any_tokenisation``: the story is
    the same if its :func:`~arena.identity.story_hash` is (the NYU release tokenises it variously)."""
    answers = [str(a) for a in row["answers"]]  # type: ignore[union-attr]
    reversed_ = identity.answer_order(existing.answers, answers)
    changes = []
    if reversed_ is None:
        changes.append("answers")
    elif existing.correct_index != identity.stored_index(int(str(row["correct_index"])), reversed_):
        changes.append("gold answer")
    for name, label in (("question", "question"), ("source_text", "source text"), ("source_title", "source title")):
        if name == "source_text" and any_tokenisation:
            if existing.source_hash != identity.story_hash(str(row[name])):
                changes.append(label)
        elif getattr(existing, name) != row[name]:
            changes.append(label)
    return changes, bool(reversed_)


def changed_question_message(existing: Question, changes: list[str]) -> str:
    n = existing.debates.count()
    return (
        f"question {existing.external_id!r} (set {existing.question_set.name!r}) is used by {n} debate(s); this would "
        f"change its {', '.join(changes)}, and its debates' turns and verdicts refer to it as it is. A question that "
        "has debates cannot change: import the new version under a new id"
    )


def identical_elsewhere(qset: QuestionSet, row: dict[str, object]) -> Question | None:
    """The first question of another set identical to ``row`` (same story, question and answers in
    either order: ``Question.fingerprint``), if any."""
    fingerprint = identity.question_fingerprint(
        identity.story_hash(str(row["source_text"])), str(row["question"]), _answers(row)
    )
    return Question.objects.filter(fingerprint=fingerprint).exclude(question_set=qset).order_by("pk").first()


def in_order_of(model: Question, row: dict[str, object]) -> None:
    """Store ``row`` (a new question identical to ``model``) in ``model``'s answer order."""
    answers = _answers(row)
    if identity.answer_order(model.answers, answers):
        row["answers"] = answers[::-1]
        row["correct_index"] = 1 - int(str(row["correct_index"]))


def _answers(row: dict[str, object]) -> list[str]:
    """The two answers of a row that ``parse_line`` accepted (it checked they are a list of two)."""
    answers = row["answers"]
    if not isinstance(answers, list | tuple):
        raise TypeError(f"answers must be a list, not {type(answers).__name__}")
    return [str(a) for a in answers]


def import_questions(path: Path, set_name: str | None = None, description: str = "") -> ImportResult:
    """Import a JSONL file into a question set, all or nothing.

    Re-importing a question (same id) whose answers come in the other order changes nothing: the
    stored order is the question's one order. A changed question is updated only while no debate
    uses it; otherwise the line is refused with the question's name. A new question identical to
    one of another set (same story, question and answers, ``Question.fingerprint``) is stored in
    that question's order.
    """
    rows: list[tuple[int, dict[str, object]]] = []
    problems: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    name = set_name or path.stem
    longest = QuestionSet._meta.get_field("name").max_length
    if longest is not None and len(name) > longest:
        raise ImportFailed([], f"the set name is longer than {longest} characters")
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
            rows.append((number, row))
    if problems:
        raise ImportFailed(problems)
    if not rows:
        raise ImportFailed([], "the file holds no questions")
    licences = sorted({str(r["licence"]) for _, r in rows if r["licence"]})
    with transaction.atomic():
        qset, _ = QuestionSet.objects.get_or_create(
            name=name, defaults={"description": description, "licence": ", ".join(licences)[:100]}
        )
        existing = {q.external_id: q for q in Question.objects.filter(question_set=qset, external_id__in=list(seen))}
        created = updated = unchanged = recognised = 0
        for number, row in rows:
            ext = str(row.pop("external_id"))
            old = existing.get(ext)
            if old is None:
                model = identical_elsewhere(qset, row)
                if model is not None:
                    in_order_of(model, row)
                    recognised += 1
                Question.objects.create(question_set=qset, external_id=ext, **row)
                created += 1
                continue
            changes, _ = reconcile(old, row)
            if not changes:
                if old.source_origin != row["source_origin"] or old.licence != row["licence"]:
                    provenance = {"source_origin": row["source_origin"], "licence": row["licence"]}
                    Question.objects.filter(pk=old.pk).update(**provenance)
                unchanged += 1
            elif old.debates.exists():
                problems.append((number, changed_question_message(old, changes)))
            else:
                for key, value in row.items():
                    setattr(old, key, value)
                old.save()
                updated += 1
        if problems:
            transaction.set_rollback(True)
    if problems:
        raise ImportFailed(problems)
    return ImportResult(qset, created, updated, unchanged, recognised)


def ensure_sample_set() -> QuestionSet:
    existing = QuestionSet.objects.filter(name=SAMPLE_SET_NAME).first()
    if existing is not None and existing.questions.exists():
        return existing
    return import_questions(
        SAMPLE_SET,
        SAMPLE_SET_NAME,
        "QuALITY questions over public-domain stories, via the NYU 2023 debate release (CC-BY-4.0).",
    ).question_set
