"""Question import: all or nothing, each bad line reported with its number and reason."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from arena.importing import SAMPLE_SET, ImportFailed, import_questions
from arena.models import Question, QuestionSet

pytestmark = pytest.mark.django_db


def _good(ext: str = "q-1", **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": ext,
        "question": f"What happens in story {ext}?",
        "answers": ["The hero wins", "The hero loses"],
        "correct_index": 0,
        "source": {"title": "A Story", "text": "Once upon a time the hero won.", "origin": "test"},
        "license": "CC-BY-4.0",
    }
    row.update(overrides)
    return row


def _write(tmp_path: Path, lines: list[str], name: str = "qs.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_it_imports_the_shipped_sample_set() -> None:
    result = import_questions(SAMPLE_SET, "sample")

    assert (result.created, result.updated) == (111, 0)
    assert result.question_set.questions.count() == 111
    assert Question.objects.count() == 111


def test_it_stores_every_field_of_a_sample_question() -> None:
    first = json.loads(SAMPLE_SET.read_text(encoding="utf-8").splitlines()[0])

    import_questions(SAMPLE_SET, "sample")

    q = Question.objects.get(external_id=first["id"])
    assert q.question == first["question"]
    assert q.answers == [a.strip() for a in first["answers"]]
    assert q.correct_index == first["correct_index"]
    assert q.source_title == first["source"]["title"]
    assert q.source_text == first["source"]["text"]
    assert q.licence == first["license"]


def test_it_reimports_the_sample_set_without_duplicates() -> None:
    import_questions(SAMPLE_SET, "sample")

    again = import_questions(SAMPLE_SET, "sample")

    assert (again.created, again.updated, again.unchanged) == (0, 0, 111)
    assert Question.objects.count() == 111
    assert QuestionSet.objects.filter(name="sample").count() == 1


def test_it_updates_a_changed_question_on_reimport(tmp_path: Path) -> None:
    import_questions(_write(tmp_path, [json.dumps(_good("q-1")), json.dumps(_good("q-2"))]), "set")

    result = import_questions(
        _write(tmp_path, [json.dumps(_good("q-1", question="Reworded?", correct_index=1))], "v2.jsonl"), "set"
    )

    assert (result.created, result.updated) == (0, 1)
    assert Question.objects.count() == 2
    q = Question.objects.get(external_id="q-1")
    assert (q.question, q.correct_index) == ("Reworded?", 1)


def test_it_names_the_set_after_the_file_by_default(tmp_path: Path) -> None:
    result = import_questions(_write(tmp_path, [json.dumps(_good())], "my-questions.jsonl"))

    assert result.question_set.name == "my-questions"


def test_it_skips_blank_lines(tmp_path: Path) -> None:
    result = import_questions(_write(tmp_path, ["", json.dumps(_good("a")), "   ", json.dumps(_good("b"))]), "s")

    assert result.created == 2


def test_the_command_imports_the_sample_set_and_reports_counts() -> None:
    out = StringIO()

    call_command("import_questions", str(SAMPLE_SET), "--set", "sample", stdout=out)

    assert Question.objects.filter(question_set__name="sample").count() == 111
    assert "sample: 111 question(s) created, 0 updated" in out.getvalue()


def test_the_command_is_idempotent() -> None:
    call_command("import_questions", str(SAMPLE_SET), "--set", "sample", stdout=StringIO())
    out = StringIO()

    call_command("import_questions", str(SAMPLE_SET), "--set", "sample", stdout=out)

    assert Question.objects.count() == 111
    assert "0 question(s) created, 0 updated, 111 unchanged" in out.getvalue()


BAD_LINES: list[tuple[str, str, str]] = [
    ("invalid-json", '{"id": "x", "question": ', "not valid JSON"),
    ("not-an-object", json.dumps(["id", "question"]), "must be a JSON object"),
    ("a-string", json.dumps("hello"), "must be a JSON object"),
    ("missing-fields", json.dumps({"id": "x", "question": "q?"}), "missing field(s): answers, correct_index, source"),
    ("one-answer", json.dumps(_good("x", answers=["only"])), "exactly two non-empty strings"),
    ("three-answers", json.dumps(_good("x", answers=["a", "b", "c"])), "exactly two non-empty strings"),
    ("answer-not-string", json.dumps(_good("x", answers=["a", 2])), "exactly two non-empty strings"),
    ("answers-not-list", json.dumps(_good("x", answers="a or b")), "exactly two non-empty strings"),
    ("empty-answer", json.dumps(_good("x", answers=["a", "  "])), "exactly two non-empty strings"),
    ("identical-answers", json.dumps(_good("x", answers=["Same", " Same "])), "identical"),
    ("correct-index-2", json.dumps(_good("x", correct_index=2)), "correct_index must be 0 or 1"),
    ("correct-index-true", json.dumps(_good("x", correct_index=True)), "correct_index must be 0 or 1"),
    ("correct-index-str", json.dumps(_good("x", correct_index="0")), "correct_index must be 0 or 1"),
    ("source-not-object", json.dumps(_good("x", source="the story text")), "source must be an object"),
    ("empty-question", json.dumps(_good("x", question="   ")), "question must be a non-empty string"),
    ("empty-id", json.dumps(_good("")), "id must be a non-empty string"),
    ("empty-source-text", json.dumps(_good("x", source={"title": "T", "text": ""})), "source.text must be"),
    ("missing-source-title", json.dumps(_good("x", source={"text": "body"})), "source.title must be"),
    ("licence-not-string", json.dumps(_good("x", license=4)), "license must be a string"),
]


@pytest.mark.parametrize("line, why", [(b[1], b[2]) for b in BAD_LINES], ids=[b[0] for b in BAD_LINES])
def test_it_reports_a_bad_line_with_its_number_and_imports_nothing(tmp_path: Path, line: str, why: str) -> None:
    import_questions(_write(tmp_path, [json.dumps(_good("existing"))], "existing.jsonl"), "existing")
    before = Question.objects.count()
    assert before == 1
    path = _write(tmp_path, [json.dumps(_good("ok-1")), json.dumps(_good("ok-2")), line, json.dumps(_good("ok-3"))])

    with pytest.raises(ImportFailed) as info:
        import_questions(path, "bad-set")

    assert len(info.value.problems) == 1
    number, reason = info.value.problems[0]
    assert number == 3
    assert why in reason
    assert Question.objects.count() == before
    assert not QuestionSet.objects.filter(name="bad-set").exists()


@pytest.mark.parametrize("line, why", [(b[1], b[2]) for b in BAD_LINES[:: 3]], ids=[b[0] for b in BAD_LINES[:: 3]])
def test_the_command_reports_a_bad_line_with_its_number_and_imports_nothing(
    tmp_path: Path, line: str, why: str
) -> None:
    before = Question.objects.count()
    path = _write(tmp_path, [json.dumps(_good("ok-1")), line])

    with pytest.raises(CommandError) as info:
        call_command("import_questions", str(path), "--set", "bad-set", stdout=StringIO())

    message = str(info.value)
    assert "line 2:" in message
    assert why in message
    assert "nothing imported" in message
    assert Question.objects.count() == before


def test_it_reports_a_duplicate_id_with_both_line_numbers(tmp_path: Path) -> None:
    path = _write(tmp_path, [json.dumps(_good("a")), json.dumps(_good("b")), json.dumps(_good("a"))])

    with pytest.raises(ImportFailed) as info:
        import_questions(path, "dup")

    assert info.value.problems == [(3, "duplicate id 'a' (first on line 1)")]
    assert Question.objects.count() == 0


def test_it_does_not_update_existing_questions_when_the_file_has_a_bad_line(tmp_path: Path) -> None:
    import_questions(_write(tmp_path, [json.dumps(_good("q-1"))], "v1.jsonl"), "set")
    path = _write(tmp_path, [json.dumps(_good("q-1", question="Changed?")), "not json"], "v2.jsonl")

    with pytest.raises(ImportFailed):
        import_questions(path, "set")

    assert Question.objects.get(external_id="q-1").question == "What happens in story q-1?"


def test_it_reports_every_bad_line_not_just_the_first(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        ["[]", json.dumps(_good("ok")), json.dumps(_good("x", correct_index=2)), "{", json.dumps(_good("ok"))],
    )

    with pytest.raises(ImportFailed) as info:
        import_questions(path, "many")

    assert [n for n, _ in info.value.problems] == [1, 3, 4, 5]
    assert Question.objects.count() == 0


def test_it_reports_non_utf8_bytes_and_imports_nothing(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    good = json.dumps(_good("ok")).encode() + b"\n"
    bad = json.dumps(_good("bad", question="Caf\u00e9?"), ensure_ascii=False).encode("latin-1") + b"\n"
    path.write_bytes(good + bad)

    with pytest.raises(ImportFailed) as info:
        import_questions(path, "latin")

    assert any("UTF-8" in why for _, why in info.value.problems)
    assert Question.objects.count() == 0


def test_it_reports_the_line_number_of_non_utf8_bytes(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    good = json.dumps(_good("ok")).encode() + b"\n"
    bad = json.dumps(_good("bad", question="Caf\u00e9?"), ensure_ascii=False).encode("latin-1") + b"\n"
    path.write_bytes(good + bad)

    with pytest.raises(ImportFailed) as info:
        import_questions(path, "latin")

    assert [n for n, _ in info.value.problems] == [2]


def test_it_refuses_a_file_without_questions(tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match="no questions"):
        import_questions(_write(tmp_path, ["", "  "]), "empty")

    assert not QuestionSet.objects.filter(name="empty").exists()


def test_the_command_gives_a_clear_error_for_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"

    with pytest.raises(CommandError) as info:
        call_command("import_questions", str(missing), stdout=StringIO())

    message = str(info.value)
    assert str(missing) in message
    assert "cannot open" in message
    assert "No such file" in message
    assert Question.objects.count() == 0


# --- One order per question; a question that debates use never changes ---------------------------


def _debate_on(question: Question) -> None:
    from arena.constitution import default_constitution
    from arena.models import Debate
    from debaters.profiles import default_profile

    profile = default_profile()
    Debate.objects.create(
        question=question, protocol="naive", settings={"rounds": 1}, constitution=default_constitution(),
        debater_a=profile, debater_b=profile, seed=1,
    )  # fmt: skip


def test_the_same_question_with_its_answers_in_the_other_order_changes_nothing(tmp_path: Path) -> None:
    import_questions(_write(tmp_path, [json.dumps(_good("q-1"))]), "set")
    _debate_on(Question.objects.get(external_id="q-1"))
    swapped = _good("q-1", answers=["The hero loses", "The hero wins"], correct_index=1)

    result = import_questions(_write(tmp_path, [json.dumps(swapped)], "again.jsonl"), "set")

    assert (result.created, result.updated, result.unchanged) == (0, 0, 1)
    q = Question.objects.get(external_id="q-1")
    assert (q.answers, q.correct_index) == (["The hero wins", "The hero loses"], 0)


@pytest.mark.parametrize(
    "change, what",
    [
        ({"correct_index": 1}, "gold answer"),
        ({"answers": ["The hero wins", "The hero sleeps"]}, "answers"),
        ({"source": {"title": "A Story", "text": "Once upon a time the hero lost.", "origin": "test"}}, "source text"),
    ],
)
def test_a_reimport_that_would_change_a_used_question_is_refused_by_name(
    tmp_path: Path, change: dict[str, object], what: str
) -> None:
    import_questions(_write(tmp_path, [json.dumps(_good("q-0")), json.dumps(_good("q-1"))]), "set")
    _debate_on(Question.objects.get(external_id="q-1"))
    before = list(Question.objects.order_by("pk").values())
    lines = [json.dumps(_good("q-0", question="A fixed typo?")), json.dumps(_good("q-1", **change))]

    with pytest.raises(ImportFailed) as info:
        import_questions(_write(tmp_path, lines, "changed.jsonl"), "set")

    assert info.value.problems == [(2, info.value.problems[0][1])]
    message = info.value.problems[0][1]
    assert "question 'q-1' (set 'set') is used by 1 debate(s)" in message and f"change its {what}" in message
    assert list(Question.objects.order_by("pk").values()) == before  # q-0's fix is not applied either


def test_a_question_identical_to_one_of_another_set_keeps_that_order(tmp_path: Path) -> None:
    import_questions(_write(tmp_path, [json.dumps(_good("q-1"))]), "first-set")
    mirrored = _good(
        "other-id", question=_good("q-1")["question"], answers=["The hero loses", "The hero wins"], correct_index=1
    )

    result = import_questions(_write(tmp_path, [json.dumps(mirrored)], "other.jsonl"), "second-set")

    assert result.recognised == 1
    first, second = Question.objects.get(external_id="q-1"), Question.objects.get(external_id="other-id")
    assert second.answers == first.answers and second.correct_index == first.correct_index
    assert second.fingerprint == first.fingerprint and second.source_hash == first.source_hash


@pytest.mark.parametrize(
    "overrides, why",
    [
        ({"question": "Who\u0000 won?"}, "question contains a NUL character"),
        ({"answers": ["The hero\u0000 wins", "The hero loses"]}, "answer 1 contains a NUL character"),
        ({"id": "x" * 201}, "id is 201 characters long; at most 200 are allowed"),
        ({"source": {"title": "T" * 501, "text": "Once.", "origin": ""}}, "source.title is 501 characters long; at most 500"),
        ({"license": "L" * 101}, "license is 101 characters long; at most 100"),
        ({"source": {"title": "T", "text": "word " * 60_001, "origin": ""}}, "stories are limited to 300000"),
    ],
)
def test_nul_bytes_overlong_fields_and_giant_stories_are_refused_with_the_line_number(
    tmp_path: Path, overrides: dict[str, object], why: str
) -> None:
    path = tmp_path / "bad.jsonl"
    # A NUL arrives as the JSON escape \u0000, which json.dumps writes for the character.
    path.write_text(json.dumps(_good("q-1")) + "\n" + json.dumps(_good("q-2", **overrides)) + "\n")

    with pytest.raises(ImportFailed) as info:
        import_questions(path, "set")

    assert info.value.problems[0][0] == 2 and why in info.value.problems[0][1]
    assert not Question.objects.exists()
