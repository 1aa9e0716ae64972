"""Exports split by story across all question sets: the shipped QuALITY sample and the NYU rooms
share stories (quality-51274-8e30de8b is nyu-51274-8e30de8b), and no story is in two splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arena.constitution import default_constitution
from arena.importing import SAMPLE_SET, import_questions
from arena.models import Debate, Question
from debaters.profiles import default_profile
from judging.exports import ExportRequest, run_export
from judging.exports.writers import split_of, split_position
from judging.models import Verdict, verdict_correct
from judging.nyu import import_release

pytestmark = pytest.mark.django_db


def _naive_verdict(question: Question, p_a: float) -> Verdict:
    profile = default_profile()
    debate = Debate.objects.create(
        question=question, protocol="naive", settings={"rounds": 1, "allow_even": True}, constitution=default_constitution(),
        debater_a=profile, debater_b=profile, status=Debate.Status.FINISHED, seed=question.pk,
    )  # fmt: skip
    p = (p_a, 1.0 - p_a)
    return Verdict.objects.create(
        debate=debate, kind=Verdict.Kind.AI, judge_label="test-judge", shown_first=0, p_a=p[0], p_b=p[1],
        reason="From the answers alone.", correct=verdict_correct(p, question.correct_index),
    )  # fmt: skip


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_no_story_is_in_two_splits_across_question_sets(tmp_path: Path) -> None:
    import datasets

    import_questions(SAMPLE_SET, "quality-sample")
    import_release()
    sample = Question.objects.filter(question_set__name="quality-sample")
    twin = sample.get(external_id="quality-51274-8e30de8b")
    nyu_stories = set(Question.objects.filter(question_set__name="nyu-debates-2023").values_list("source_hash", flat=True))
    assert twin.source_hash in nyu_stories and len(nyu_stories) == 2
    hashes = sample.exclude(source_hash__in=nyu_stories).order_by("source_hash").values_list("source_hash", flat=True)
    others = [sample.filter(source_hash=h).first() for h in list(dict.fromkeys(hashes))[:3]]
    for q in [twin, *others]:
        assert q is not None
        _naive_verdict(q, 0.7)
    stories = {h[:16] for h in Question.objects.filter(debates__verdicts__isnull=False).values_list("source_hash", flat=True)}
    assert len(stories) == 5  # Ambition, The Atom Mystery and the three others
    positions = sorted(split_position(s) for s in stories)
    fraction = (positions[1] + positions[2]) / 2  # two stories in test, three in train

    run_export(ExportRequest(kind="judgments", format="unpaired", test_fraction=fraction), tmp_path / "out", hf_dir=tmp_path / "hf")

    dd = datasets.load_from_disk(str(tmp_path / "hf"))
    train, test = set(dd["train"]["story_id"]), set(dd["test"]["story_id"])
    assert len(train) == 3 and len(test) == 2 and not train & test
    assert all(split_of(s, fraction) == "test" for s in test)
    rows = _rows(tmp_path / "out" / "preferences.jsonl")
    ambition = {r["story_id"] for r in rows if r["question_id"] in ("quality-51274-8e30de8b", "nyu-51274-8e30de8b")}
    assert len(ambition) == 1  # the same story in both sets, whatever its tokenisation
    assert {r["question_set"] for r in rows if r["story_id"] in ambition} == {"quality-sample", "nyu-debates-2023"}
    card = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    assert "splits, by story" in card and "no story is in both" in card
    assert f"train {dd['train'].num_rows} rows from" in card and "on 3 story(ies)" in card and "on 2 story(ies)" in card


def test_an_even_verdict_is_neither_right_nor_wrong_and_makes_no_training_row(tmp_path: Path) -> None:
    import_questions(SAMPLE_SET, "quality-sample")
    questions = list(Question.objects.order_by("pk")[:2])
    even = _naive_verdict(questions[0], 0.5)
    leaning = _naive_verdict(questions[1], 0.7)
    assert even.correct is None and leaning.correct == (questions[1].correct_index == 0)

    result = run_export(ExportRequest(kind="judgments", format="unpaired"), tmp_path / "out")

    rows = _rows(tmp_path / "out" / "preferences.jsonl")
    assert [r["verdict_id"] for r in rows] == [leaning.pk]
    assert rows[0]["label"] is leaning.correct and rows[0]["judge_correct"] is leaning.correct
    assert result.skipped == 1
