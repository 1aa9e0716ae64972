"""Preference rows from verdicts: the pure row builder and the export command end to end."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from judging.exports import Anonymizer, SpeechData, VerdictRecord, arguments_row, neutral_prompt


def _record(
    p: tuple[float, float] = (0.8, 0.2), speeches: tuple[SpeechData, ...] | None = None, **kw: object,
) -> VerdictRecord:
    if speeches is None:
        # Deliberately stored out of order: the row must sort by index.
        speeches = (
            SpeechData(3, 2, 1, "B rebuttal."),
            SpeechData(0, 1, 0, "  A opening.  "),
            SpeechData(2, 2, 0, "A rebuttal."),
            SpeechData(1, 1, 1, "B opening."),
        )
    fields: dict[str, object] = {
        "verdict_id": 7,
        "debate_id": 3,
        "question_id": "quality-1",
        "question": "Who did it?",
        "answers": ("The butler", "The gardener"),
        "correct_index": 0,
        "protocol": "debate",
        "constitution": "arena-default@1",
        "debater_models": ("transformers/a", "openai/b"),
        "judge_kind": "human",
        "judge_ref": "user:5",
        "shown_first": 1,
        "p": p,
        "reason": "because",
        "created_at": datetime(2025, 1, 1, tzinfo=UTC),
        "speeches": speeches,
    }
    fields.update(kw)
    return VerdictRecord(**fields)  # type: ignore[arg-type]


def test_it_chooses_the_side_the_judge_gave_the_higher_probability() -> None:
    row = arguments_row(_record(p=(0.8, 0.2)), Anonymizer())

    assert row is not None
    assert row["chosen"] == [{"role": "assistant", "content": "A opening.\n\nA rebuttal."}]
    assert row["rejected"] == [{"role": "assistant", "content": "B opening.\n\nB rebuttal."}]
    assert (row["chosen_answer"], row["rejected_answer"]) == ("The butler", "The gardener")
    assert (row["chosen_model"], row["rejected_model"]) == ("transformers/a", "openai/b")


def test_it_chooses_side_b_when_b_has_the_higher_probability() -> None:
    row = arguments_row(_record(p=(0.3, 0.7)), Anonymizer())

    assert row is not None
    assert row["chosen"] == [{"role": "assistant", "content": "B opening.\n\nB rebuttal."}]
    assert row["rejected"] == [{"role": "assistant", "content": "A opening.\n\nA rebuttal."}]
    assert (row["chosen_answer"], row["rejected_answer"]) == ("The gardener", "The butler")
    assert (row["chosen_model"], row["rejected_model"]) == ("openai/b", "transformers/a")


def test_it_prompts_with_the_question_and_both_answers_without_a_side() -> None:
    row = arguments_row(_record(), Anonymizer())

    assert row is not None
    assert row["prompt"] == [{"role": "user", "content": neutral_prompt("Who did it?", ("The butler", "The gardener"))}]
    content = row["prompt"][0]["content"]  # type: ignore[index]
    assert "Answer 1: The butler" in content and "Answer 2: The gardener" in content


def test_it_records_the_margin_between_the_probabilities() -> None:
    row = arguments_row(_record(p=(0.35, 0.65)), Anonymizer())

    assert row is not None
    assert row["margin"] == pytest.approx(0.3)


def test_it_copies_provenance_fields() -> None:
    row = arguments_row(_record(), Anonymizer())

    assert row is not None
    assert {k: row[k] for k in ("debate_id", "verdict_id", "question_id", "protocol", "constitution")} == {
        "debate_id": 3,
        "verdict_id": 7,
        "question_id": "quality-1",
        "protocol": "debate",
        "constitution": "arena-default@1",
    }
    assert row["judge_kind"] == "human"
    assert row["shown_first"] == 1
    assert str(row["judge_id"]).startswith("judge-")
    assert "user:5" not in json.dumps(row)


@pytest.mark.parametrize(
    "p, correct_index, expected", [((0.8, 0.2), 0, True), ((0.8, 0.2), 1, False), ((0.1, 0.9), 1, True)]
)
def test_it_flags_whether_the_chosen_side_is_gold(p: tuple[float, float], correct_index: int, expected: bool) -> None:
    row = arguments_row(_record(p=p, correct_index=correct_index), Anonymizer())

    assert row is not None
    assert row["chosen_is_gold"] is expected
    assert row["judge_correct"] is expected


def test_it_makes_no_row_from_equal_probabilities() -> None:
    assert arguments_row(_record(p=(0.5, 0.5)), Anonymizer()) is None


@pytest.mark.parametrize("missing_side", [0, 1])
def test_it_makes_no_row_when_a_side_has_no_speech(missing_side: int) -> None:
    speeches = tuple(s for s in _record().speeches if s.side != missing_side)

    assert arguments_row(_record(speeches=speeches), Anonymizer()) is None


def test_it_makes_no_row_from_a_debate_without_speeches() -> None:
    assert arguments_row(_record(speeches=()), Anonymizer()) is None


def test_the_anonymizer_is_stable_within_one_instance() -> None:
    anonymize = Anonymizer()

    assert anonymize("user:5") == anonymize("user:5")
    assert anonymize("user:5") != anonymize("user:6")


def test_the_anonymizer_differs_across_instances() -> None:
    assert Anonymizer()("user:5") != Anonymizer()("user:5")


def test_the_anonymizer_with_the_same_key_agrees() -> None:
    assert Anonymizer(b"k" * 32)("user:5") == Anonymizer(b"k" * 32)("user:5")


# --- The export command on database data ------------------------------------------------------


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings) -> None:  # type: ignore[no-untyped-def]
    """The users of conftest hash a password each; the default PBKDF2 costs ~0.5 s a user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def judged_debate(finished_debate, bob):  # type: ignore[no-untyped-def]
    from judging.models import Assignment
    from judging.services import submit_human_verdict

    assignment = Assignment.objects.get(debate=finished_debate, judge=bob)
    verdict = submit_human_verdict(assignment, 0.75, 0.25, "The first answer's quotes were convincing.")
    return finished_debate, verdict


def _export(out: Path, *extra: str) -> str:
    stdout = StringIO()
    call_command("export_preferences", "--out", str(out), "--no-progress", *extra, stdout=stdout)
    return stdout.getvalue()


@pytest.mark.django_db
def test_the_export_writes_one_row_per_verdict_with_the_right_sides(  # type: ignore[no-untyped-def]
    tmp_path: Path, judged_debate,
) -> None:
    debate, verdict = judged_debate
    out = tmp_path / "export"

    message = _export(out)

    lines = (out / "preferences.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    winner = 0 if verdict.p_a > verdict.p_b else 1
    assert row["chosen"] == [{"role": "assistant", "content": f"Speech for answer {winner + 1}."}]
    assert row["rejected"] == [{"role": "assistant", "content": f"Speech for answer {2 - winner}."}]
    assert row["debate_id"] == debate.pk
    assert row["verdict_id"] == verdict.pk
    assert row["question_id"] == debate.question.external_id
    assert row["margin"] == pytest.approx(0.5)
    assert "1 pairs" in message


@pytest.mark.django_db
def test_the_export_loads_with_datasets_as_conversational_pairs(  # type: ignore[no-untyped-def]
    tmp_path: Path, judged_debate,
) -> None:
    import datasets

    out = tmp_path / "export"
    _export(out)

    ds = datasets.load_dataset(
        "json", data_files=str(out / "preferences.jsonl"), split="train", cache_dir=str(tmp_path / "hf-cache")
    )

    assert ds.num_rows == 1
    for column in ("prompt", "chosen", "rejected"):
        assert column in ds.column_names
        messages = ds[0][column]
        assert isinstance(messages, list) and messages
        for message in messages:
            assert set(message) == {"role", "content"}
            assert isinstance(message["content"], str) and message["content"]
    assert ds[0]["prompt"][0]["role"] == "user"
    assert ds[0]["chosen"][0]["role"] == "assistant"


@pytest.mark.django_db
def test_the_export_writes_a_dataset_card(tmp_path: Path, judged_debate) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "export"
    _export(out)

    card = (out / "README.md").read_text(encoding="utf-8")

    assert card.startswith("---\n")
    assert "preferences.jsonl" in card
    assert "- rows: 1" in card


@pytest.mark.django_db
def test_the_export_refuses_a_non_empty_folder(tmp_path: Path, judged_debate) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("precious")

    with pytest.raises(CommandError, match="not empty"):
        _export(out)

    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


@pytest.mark.django_db
def test_the_export_writes_into_a_non_empty_folder_with_overwrite(  # type: ignore[no-untyped-def]
    tmp_path: Path, judged_debate,
) -> None:
    out = tmp_path / "export"
    _export(out)

    _export(out, "--overwrite")

    assert len((out / "preferences.jsonl").read_text(encoding="utf-8").splitlines()) == 1


@pytest.mark.django_db
def test_the_export_accepts_an_existing_empty_folder(  # type: ignore[no-untyped-def]
    tmp_path: Path, judged_debate,
) -> None:
    out = tmp_path / "export"
    out.mkdir()

    _export(out)

    assert (out / "preferences.jsonl").exists()


@pytest.mark.django_db
def test_the_export_refuses_when_there_are_no_verdicts(  # type: ignore[no-untyped-def]
    tmp_path: Path, finished_debate,
) -> None:
    out = tmp_path / "export"

    with pytest.raises(CommandError, match="no verdicts"):
        _export(out)

    assert not (out / "preferences.jsonl").exists()


@pytest.mark.django_db
def test_the_export_filters_by_judge_kind(tmp_path: Path, judged_debate) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CommandError, match="no verdicts"):
        _export(tmp_path / "ai", "--judge", "ai")

    _export(tmp_path / "human", "--judge", "human")
    assert (tmp_path / "human" / "preferences.jsonl").read_text().count("\n") == 1
