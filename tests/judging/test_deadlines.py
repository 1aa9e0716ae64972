"""Interactive debates never stall: when a judge's question deadline passes, the debate goes on
with the study's AI questioner or with no question, and the record says which."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from arena import services, worker_loop
from arena.engine.protocol import ProtocolSettings
from arena.models import Debate, JudgeQuestion
from arena.protocol_services import WAITING_KEY
from arena.runner import run_debate
from debaters.models import DebaterProfile
from judging import deadlines, studies
from judging.models import Assignment, JudgeProfile
from judging.services import QuestionError, ask_question


def _interactive(question, profile, judges) -> Debate:  # type: ignore[no-untyped-def]
    return services.create_debate(
        question=question, debater_a=profile, debater_b=profile, protocol="interactive",
        limits=ProtocolSettings(rounds=2, max_tokens=32, word_limit=60, context_tokens=200),
        judges=judges, enqueue=False, seed=5,
    )


@pytest.fixture
def scripted(db: None):  # type: ignore[no-untyped-def]
    from debaters.backends import forget_backends

    forget_backends()
    yield DebaterProfile.objects.create(name="dl", backend="scripted", model="script", options={"text": "I argue."})
    forget_backends()


@pytest.mark.django_db(transaction=True)
def test_the_debate_goes_on_without_a_question_when_the_deadline_passes(bob, question, scripted) -> None:  # type: ignore[no-untyped-def]
    debate = _interactive(question, scripted, [bob])
    assert worker_loop.run(run_debate(debate.pk, "dl-owner")).status == "waiting-for-judge"
    debate.refresh_from_db()
    due = deadlines.deadline_of(debate)
    assert due is not None and debate.settings[WAITING_KEY] == 1

    assert deadlines.expire_question(debate.pk, 1, now=due - timedelta(seconds=1)) is None, "not yet due"
    fallback = deadlines.expire_question(debate.pk, 1, now=due + timedelta(seconds=1))

    assert fallback is not None and fallback.used == "none"
    debate.refresh_from_db()
    assert debate.status == Debate.Status.QUEUED and WAITING_KEY not in debate.settings
    assert debate.settings["question_fallbacks"]["1"]["used"] == "none"
    with pytest.raises(QuestionError, match="not waiting"):
        ask_question(Assignment.objects.get(debate=debate), "Too late?")
    assert worker_loop.run(run_debate(debate.pk, "dl-owner")).status == "finished"
    assert not JudgeQuestion.objects.filter(debate=debate).exists()
    for turn in debate.turns.filter(round=2):
        assert "The judge asked" not in turn.prompt[-1]["content"]


@pytest.mark.django_db(transaction=True)
def test_the_studys_ai_judge_asks_when_the_deadline_passes(alice, bob, question, scripted) -> None:  # type: ignore[no-untyped-def]
    asker = JudgeProfile.objects.create(name="asker", backend="scripted", model="script", options={"text": "Which year?"})
    debate = _interactive(question, scripted, [bob])
    studies.create_study(name="live", created_by=alice, debates=[debate], mode="live", question_deadline_s=30, ai_questioner=asker)
    worker_loop.run(run_debate(debate.pk, "dl-owner"))
    debate.refresh_from_db()
    since = debate.settings["waiting_since"]
    assert deadlines.deadline_of(debate) == timezone.datetime.fromisoformat(since) + timedelta(seconds=30)
    fallback = deadlines.expire_question(debate.pk, 1, now=timezone.now() + timedelta(seconds=31))
    assert fallback is not None and fallback.used == "ai" and fallback.ai_judge == "asker"

    assert worker_loop.run(run_debate(debate.pk, "dl-owner")).status == "finished"
    asked = JudgeQuestion.objects.get(debate=debate)
    assert asked.text == "Which year?" and asked.ai_judge.startswith("asker:") and asked.asked_by is None
    for turn in debate.turns.filter(round=2):
        assert 'The judge asked: "Which year?"' in turn.prompt[-1]["content"]


@pytest.mark.django_db
def test_a_question_asked_in_time_wins_over_the_deadline(bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    debate = _interactive(question, profile, [bob])
    Debate.objects.filter(pk=debate.pk).update(
        status=Debate.Status.WAITING,
        settings={**debate.settings, WAITING_KEY: 1, "waiting_since": timezone.now().isoformat()},
    )
    ask_question(Assignment.objects.get(debate=debate), "In time?")
    assert deadlines.expire_due_questions(now=timezone.now() + timedelta(days=1)) == []
    debate.refresh_from_db()
    assert "question_fallbacks" not in debate.settings
