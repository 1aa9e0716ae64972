"""A deactivated judge's past verdicts stay in the record, flagged: marked on the research pages,
left out of exports and the human-vs-AI comparison unless a researcher asks for them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from arena import services
from arena.engine.protocol import Limits
from arena.models import Debate, Question, QuestionSet, Turn
from debaters.models import DebaterProfile
from judging import human_ai, invitations, quality, studies
from judging.exports.request import ExportRequest
from judging.exports.sources import verdict_queryset
from judging.models import JudgeProfile, Verdict
from judging.views_exports import ExportForm


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _debate(profile: DebaterProfile, n: int) -> Debate:
    qset, _ = QuestionSet.objects.get_or_create(name="deactivation-set")
    question = Question.objects.create(
        question_set=qset,
        external_id=f"q{n}",
        question=f"Question {n}?",
        answers=["yes", "no"],
        correct_index=0,
        source_title=f"Story {n}",
        source_text=f"Text of story {n}.",
    )
    debate = services.create_debate(
        question=question,
        debater_a=profile,
        debater_b=profile,
        limits=Limits(rounds=1, max_tokens=24, word_limit=60),
        enqueue=False,
        seed=1,
    )
    Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.FINISHED)
    debate.refresh_from_db()
    return debate


def _human(debate: Debate, judge: User, p_a: float = 0.8) -> Verdict:
    services.assign_judge(debate, judge)
    return Verdict.objects.create(
        debate=debate, judge=judge, shown_first=0, p_a=p_a, p_b=1 - p_a, reason="a reason", correct=p_a > 0.5
    )


def _ai(debate: Debate, p_a: float = 0.8) -> Verdict:
    ai, _ = JudgeProfile.objects.get_or_create(name="ai")
    return Verdict.objects.create(
        debate=debate, kind=Verdict.Kind.AI, ai_judge=ai, shown_first=0, p_a=p_a, p_b=1 - p_a, reason="r", correct=True
    )


@pytest.mark.django_db
def test_it_leaves_a_deactivated_judges_verdicts_out_of_exports_unless_asked(
    bob: User, charlie: User, profile: DebaterProfile
) -> None:
    debate = _debate(profile, 1)
    kept, gone, machine = _human(debate, bob), _human(debate, charlie), _ai(debate)
    invitations.deactivate_judge(charlie, "left the study")

    assert set(verdict_queryset(req=ExportRequest(judge="human"))) == {kept}
    assert set(verdict_queryset(req=ExportRequest(judge="any"))) == {kept, machine}
    assert set(verdict_queryset(req=ExportRequest(judge="human", include_deactivated=True))) == {kept, gone}
    # The verdict itself stays in the record.
    assert Verdict.objects.filter(pk=gone.pk).exists()
    # Reactivating takes the flag off.
    invitations.reactivate_judge(charlie)
    assert set(verdict_queryset(req=ExportRequest(judge="human"))) == {kept, gone}


@pytest.mark.django_db
def test_a_judge_switched_off_in_the_admin_counts_as_deactivated(bob: User, profile: DebaterProfile) -> None:
    verdict = _human(_debate(profile, 1), bob)
    User.objects.filter(pk=bob.pk).update(is_active=False)
    assert quality.deactivated_judges() == {bob.pk}
    assert not verdict_queryset(req=ExportRequest(judge="human")).exists()
    (row,) = quality.judge_quality()
    assert row.deactivated and row.n == 1
    assert Verdict.objects.filter(pk=verdict.pk).exists()


@pytest.mark.django_db
def test_the_export_form_and_the_command_carry_the_option(alice: User) -> None:
    form = ExportForm(data={"kind": "arguments", "format": "conversational", "file_format": "jsonl", "judge": "any"})
    assert form.is_valid(), form.errors
    assert form.to_request().include_deactivated is False
    form = ExportForm(
        data={
            "kind": "arguments",
            "format": "conversational",
            "file_format": "jsonl",
            "judge": "any",
            "include_deactivated": "on",
        }
    )
    assert form.is_valid(), form.errors
    request = form.to_request()
    assert request.include_deactivated is True
    # Stored with the export and read back by its job.
    again = ExportRequest.from_filters(request.kind, request.format, request.to_filters())
    assert again.include_deactivated is True
    page = _client(alice).get("/exports/").content.decode()
    assert 'name="include_deactivated"' in page


@pytest.mark.django_db
def test_the_command_exports_a_deactivated_judge_only_with_the_flag(
    bob: User, charlie: User, profile: DebaterProfile, tmp_path: Path
) -> None:
    debate = _debate(profile, 1)
    now = timezone.now()
    for side in (0, 1):
        Turn.objects.create(
            debate=debate, index=side, round=1, side=side, text=f"Speech for answer {side + 1}.",
            prompt=[], prompt_hash="x", started_at=now, finished_at=now,
        )  # fmt: skip
    kept, gone = _human(debate, bob), _human(debate, charlie)
    invitations.deactivate_judge(charlie)

    def exported(*flags: str) -> set[int]:
        folder = tmp_path / f"run{len(flags)}"
        call_command(
            "export_preferences", "--judge", "human", "--per-verdict", "--out", str(folder), "--no-progress", *flags
        )
        rows = [json.loads(line) for f in folder.glob("*.jsonl") for line in f.read_text().splitlines() if line]
        return {r["verdict_id"] for r in rows}

    assert exported() == {kept.pk}
    assert exported("--include-deactivated") == {kept.pk, gone.pk}


@pytest.mark.django_db
def test_the_human_vs_ai_comparison_leaves_them_out_unless_asked(
    alice: User, bob: User, charlie: User, profile: DebaterProfile
) -> None:
    debate = _debate(profile, 1)
    _human(debate, bob, p_a=0.8)
    _human(debate, charlie, p_a=0.3)
    _ai(debate)
    invitations.deactivate_judge(charlie)
    (row,) = human_ai.compare().protocols
    assert (row.human_n, row.human_correct) == (1, 1)
    (row,) = human_ai.compare(include_deactivated=True).protocols
    assert (row.human_n, row.human_correct) == (2, 1)
    client = _client(alice)
    page = client.get("/studies/human-vs-ai/").content.decode()
    assert "Verdicts of deactivated judges are left out" in page
    page = client.get("/studies/human-vs-ai/?include_deactivated=1").content.decode()
    assert "Verdicts of deactivated judges are included" in page


@pytest.mark.django_db
def test_the_study_and_analysis_pages_flag_a_deactivated_judges_verdicts(
    alice: User, bob: User, charlie: User, profile: DebaterProfile
) -> None:
    debate = _debate(profile, 1)
    study = studies.create_study(name="s", created_by=alice, debates=[debate], verdicts_per_debate=2)
    _human(debate, bob)
    gone = _human(debate, charlie)
    client = _client(alice)
    assert 'id="deactivated-verdicts"' not in client.get(f"/studies/{study.pk}/").content.decode()
    invitations.deactivate_judge(charlie)
    page = client.get(f"/studies/{study.pk}/").content.decode()
    assert f"verdict {gone.pk} on debate {debate.pk}: charlie (deactivated)" in page
    analysis = client.get("/analysis/").content.decode()
    assert 'id="deactivated-verdicts"' in analysis and "1 human verdict in the record" in analysis
    judges = client.get("/studies/judges/").content.decode()
    assert "deactivated" in judges
