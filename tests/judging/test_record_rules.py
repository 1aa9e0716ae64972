"""The record's invariants (manage.py check_record) and the verdict rules that keep them: 50/50 is
neither right nor wrong, the per-round penalty only where an early verdict was possible, no
question after a verdict, and the judge's own answer order in what reaches their page."""

from __future__ import annotations

import math
import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from arena import services
from arena.engine.protocol import JudgingRules, ProtocolSettings, make_protocol
from arena.models import Debate, Question, Turn
from arena.protocol_services import WAITING_KEY
from judging import analysis
from judging.analysis import VerdictFilter
from judging.judge_view import RESET_NOTICE, JudgeView, display_ranks
from judging.models import Assignment, Verdict
from judging.record import check_record
from judging.services import QuestionError, ask_question, submit_human_verdict

pytestmark = pytest.mark.django_db
REASON = "The quotes for this answer were verified."


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _debate(question, profile, judges, protocol: str = "debate", rounds: int = 1, **options: object) -> Debate:  # type: ignore[no-untyped-def]
    settings = ProtocolSettings(rounds=rounds, max_tokens=32, word_limit=60, context_tokens=200, **options)  # type: ignore[arg-type]
    return services.create_debate(
        question=question, debater_a=profile, debater_b=profile, limits=settings, protocol=protocol, judges=judges,
        enqueue=False, seed=77,
    )  # fmt: skip


def _speak(debate: Debate, rounds: int, finish: bool = True) -> None:
    now = timezone.now()
    protocol = make_protocol(debate.protocol, debate.settings, seed=debate.seed, first_side=debate.first_side)
    slots = [s for s in protocol.slots() if s.round <= rounds]
    for slot in slots:
        Turn.objects.create(
            debate=debate, index=slot.index, round=slot.round, side=slot.side, text=f"Speech {slot.index}.",
            prompt=[], prompt_hash="x", started_at=now, finished_at=now,
        )  # fmt: skip
    if finish:
        Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.FINISHED, started_at=now, finished_at=now)


def _client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


# --- 50/50 ---------------------------------------------------------------------------------------


def test_a_50_50_verdict_is_neither_right_nor_wrong(bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    debate = _debate(question, profile, [bob], rules=JudgingRules(allow_even=True))
    _speak(debate, 1)

    verdict = submit_human_verdict(Assignment.objects.get(debate=debate), 0.5, 0.5, REASON)

    assert verdict.correct is None
    assert check_record() == []
    (row,) = analysis.accuracy_by_protocol(analysis.load_rows(VerdictFilter()))
    # Counted as a verdict, not as a right one; its P(gold) of 0.5 is in the Brier score as it is.
    assert (row.n, row.correct, row.accuracy) == (1, 0, 0.0)
    assert row.mean_p_correct == pytest.approx(0.5) and row.brier == pytest.approx(0.25)
    html = _client(bob).get(f"/judge/debates/{debate.pk}/").content.decode()
    assert re.search(r'id="verdict-outcome">neither right nor wrong<', html)


# --- The penalty ---------------------------------------------------------------------------------


def test_no_penalty_for_rounds_a_judge_had_to_wait_for(bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    debate = _debate(question, profile, [bob], rounds=3)  # the default rules: a verdict only at the end
    _speak(debate, 3)
    assignment = Assignment.objects.get(debate=debate)
    p_first = 0.8 if assignment.shown_first == question.correct_index else 0.2

    verdict = submit_human_verdict(assignment, p_first, 1 - p_first, REASON)

    assert verdict.meta["rounds_seen"] == 3 and verdict.meta["turn_penalty"] == 0.0
    assert verdict.meta["score"] == pytest.approx(math.log2(0.8))
    page = _client(bob).get(f"/judge/debates/{debate.pk}/").content.decode()
    assert re.search(r'id="score">(-?[0-9.]+)<', page).group(1) == f"{math.log2(0.8):.3f}"  # type: ignore[union-attr]
    assert "penalty" not in page
    scoring = re.search(r'id="scoring-rule">(.*?)</p>', page, re.S)
    assert scoring is not None and "round after the first" not in scoring.group(1)


# --- Questions after a verdict -------------------------------------------------------------------


def test_a_judge_cannot_ask_a_question_after_their_verdict(bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    debate = _debate(question, profile, [bob], protocol="interactive", rounds=2, rules=JudgingRules(min_turns=2))
    _speak(debate, 1, finish=False)
    Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.WAITING, settings={**debate.settings, WAITING_KEY: 1})
    assignment = Assignment.objects.get(debate=debate)
    submit_human_verdict(assignment, 0.7, 0.3, REASON)  # early, as the rules allow; it reveals the gold

    with pytest.raises(QuestionError, match="given your verdict"):
        ask_question(assignment, "Which answer is right, then?")
    response = _client(bob).post(f"/judge/debates/{debate.pk}/", {"action": "question", "question": "And now?"})

    assert response.status_code == 400 and "given your verdict" in response.content.decode()
    assert not debate.judge_questions.exists()
    assert Debate.objects.get(pk=debate.pk).status == Debate.Status.WAITING


# --- What reaches a judge ------------------------------------------------------------------------


def test_a_simultaneous_round_shows_the_judges_a_first_and_later_rounds_in_speaking_order() -> None:
    protocol = make_protocol("debate", {"rounds": 2})
    assert display_ranks(protocol, 0) == {0: 0, 1: 1, 2: 2, 3: 3}
    assert display_ranks(protocol, 1) == {1: 0, 0: 1, 2: 2, 3: 3}
    view = JudgeView(1, display_ranks(protocol, 1))
    turn = view.turn({"turn": 0, "round": 1, "side": 0, "text": "t", "segments": [{"kind": "quote", "similarity": 0.4}]})
    assert turn == {"turn": 1, "round": 1, "answer": "B", "text": "t", "segments": [{"kind": "quote"}]}
    assert view.event({"type": "turn_reset", "turn": 1, "seq": 3, "reason": "backend exploded"}) == {
        "type": "turn_reset", "turn": 0, "seq": 3, "reason": RESET_NOTICE,
    }


# --- check_record --------------------------------------------------------------------------------


def test_check_record_passes_a_sound_record_and_names_every_violation(bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    debate = _debate(question, profile, [bob], rounds=2)
    _speak(debate, 2)
    assignment = Assignment.objects.get(debate=debate)
    verdict = submit_human_verdict(assignment, 0.8, 0.2, REASON)
    out = StringIO()
    call_command("check_record", stdout=out)
    assert "consistent" in out.getvalue()

    Verdict.objects.filter(pk=verdict.pk).update(correct=not verdict.correct, p_b=0.3)
    second = 1 - debate.first_side  # round 2's first slot belongs to first_side; give it to the other
    Turn.objects.filter(debate=debate, index=2).update(side=second)
    Turn.objects.filter(debate=debate, index=3).update(index=7)
    Question.objects.filter(pk=question.pk).update(
        question=question.question + " (edited)", answers=question.answers[::-1]
    )

    err = StringIO()
    with pytest.raises(CommandError, match=r"violation\(s\)"):
        call_command("check_record", stderr=err)
    report = err.getvalue()
    assert f"verdict {verdict.pk}: probabilities {verdict.p_a:g} + 0.3 do not sum to 1" in report
    assert f"verdict {verdict.pk}: correct=" in report
    slot = f"its protocol's slot is round 2 side {debate.first_side} (first_side {debate.first_side})"
    assert f"debate {debate.pk}: turn 2 is round 2 side {second}, {slot}" in report
    assert f"debate {debate.pk}: turn indices [0, 1, 2, 7] are not 0…3 without a gap" in report
    assert f"debate {debate.pk}: question {question.external_id} is not what the debate saw" in report
    assert f"question {question.pk} ({question.external_id}): source_hash/fingerprint do not match" in report
    assert [str(v) for v in check_record([debate.pk])] == report.strip().splitlines()


def test_the_admin_freezes_a_question_that_debates_use(alice, bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.create_superuser("root", "root@example.org", "x-long-password")
    client = _client(admin)
    page = client.get(f"/admin/arena/question/{question.pk}/change/").content.decode()
    assert 'name="correct_index"' in page and 'name="source_hash"' not in page
    _debate(question, profile, [bob])
    page = client.get(f"/admin/arena/question/{question.pk}/change/").content.decode()
    assert 'name="correct_index"' not in page and 'name="answers"' not in page and 'name="source_text"' not in page


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "kept", "sound"),
    [
        ("cancelled", [1], True),  # stopped inside its simultaneous opening: one of its two speeches
        ("running", [1], False),  # a live debate never skips a speech
        ("cancelled", [1, 2], False),  # a speech of a round it had finished is missing
    ],
)
def test_a_debate_stopped_inside_a_simultaneous_round_may_hold_part_of_it(make_debate, status, kept, sound) -> None:  # type: ignore[no-untyped-def]
    debate = make_debate(rounds=2)  # round 1's openings are written at once
    slots = make_protocol(debate.protocol, debate.settings, seed=debate.seed, first_side=debate.first_side).slots()
    assert [s.round for s in slots] == [1, 1, 2, 2]
    for index in kept:
        now = timezone.now()
        Turn.objects.create(
            debate=debate, index=index, round=slots[index].round, side=slots[index].side, text=f"speech {index}",
            started_at=now, finished_at=now,
        )  # fmt: skip
    Debate.objects.filter(pk=debate.pk).update(status=status)
    problems = [str(v) for v in check_record([debate.pk]) if "turn" in str(v)]
    assert (problems == []) is sound, problems
