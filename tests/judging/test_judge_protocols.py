"""What a judge sees under each protocol, the judging rules on verdicts, and the judge's questions
in an interactive debate (the pause, the question, the resumption)."""

from __future__ import annotations

import html
import json
import re

import pytest
from django.test import Client
from django.utils import timezone

from arena import services, worker_loop
from arena.engine.protocol import JudgingRules, ProtocolSettings
from arena.models import Debate, JudgeQuestion, Turn
from arena.protocol_services import WAITING_KEY, pause_for_judge
from arena.runner import run_debate
from debaters.models import DebaterProfile
from judging.models import Assignment, Verdict
from judging.services import QuestionError, VerdictError, ask_question, submit_human_verdict

REASON = "The quotes for this answer were verified."


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def _debate(question, profile, judges, protocol: str = "debate", **options: object) -> Debate:  # type: ignore[no-untyped-def]
    rounds = int(options.pop("rounds", 1))  # type: ignore[arg-type]
    settings = ProtocolSettings(rounds=rounds, max_tokens=32, word_limit=60, context_tokens=200, **options)  # type: ignore[arg-type]
    return services.create_debate(
        question=question,
        debater_a=profile,
        debater_b=profile,
        limits=settings,
        protocol=protocol,
        judges=judges,
        enqueue=False,
        seed=77,
    )


def _finish(debate: Debate, sides: tuple[int, ...] = (0, 1), rounds: int = 1) -> None:
    now = timezone.now()
    index = 0
    for rnd in range(1, rounds + 1):
        for side in sides:
            Turn.objects.create(
                debate=debate,
                index=index,
                round=rnd,
                side=side,
                text=f"Speech {index}.",
                prompt=[],
                prompt_hash="x",
                started_at=now,
                finished_at=now,
                violations=[{"rule": "length", "message": "over the limit"}],
            )
            index += 1
    Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.FINISHED, started_at=now, finished_at=now)


def _config(body: str) -> dict:
    match = re.search(r'<script id="client-config" type="application/json">(.*?)</script>', body, re.S)
    assert match is not None
    return json.loads(match.group(1))


def _source_slice(question) -> str:  # type: ignore[no-untyped-def]
    middle = len(question.source_text) // 2
    return question.source_text[middle : middle + 120]


# --- What the judge sees -------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_shows_the_expert_judge_the_source_and_no_other_judge(bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    secret = _source_slice(question)
    for name in ("debate", "interactive", "consultancy", "open-debate", "open-consultancy", "naive", "expert"):
        debate = _debate(question, profile, [bob], protocol=name)
        body = html.unescape(_client(bob).get(f"/judge/debates/{debate.pk}/").content.decode())
        assert (secret in body) is (name == "expert"), name


@pytest.mark.django_db
def test_it_shows_the_naive_judge_only_the_question_and_answers(bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    debate = _debate(question, profile, [bob], protocol="naive")

    body = _client(bob).get(f"/judge/debates/{debate.pk}/").content.decode()

    assert 'id="transcript"' not in body and 'id="source-card"' not in body
    assert html.escape(question.question, quote=False) in body
    assert all(html.escape(a, quote=False) in body for a in question.answers)
    assert _config(body)["transcript"] is False


@pytest.mark.django_db
def test_it_labels_the_single_speaker_of_a_consultancy(bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    debate = _debate(question, profile, [bob], protocol="consultancy", consultant_side=1)

    body = _client(bob).get(f"/judge/debates/{debate.pk}/").content.decode()

    config = _config(body)
    assert config["speakerNoun"] == "Consultant" and config["totalTurns"] == 1
    assert "One consultant argues" in body
    assert "wrong answer" not in body and "right answer" not in body


@pytest.mark.django_db
@pytest.mark.parametrize("rule, words", [("log", "Log score"), ("quadratic", "Quadratic"), ("spherical", "Spherical")])
def test_it_shows_the_judge_the_protocols_scoring_rule(bob, question, profile, rule: str, words: str) -> None:  # type: ignore[no-untyped-def]
    # With an early verdict possible (min_turns below the speeches), the per-round penalty applies.
    debate = _debate(question, profile, [bob], rounds=2, rules=JudgingRules(scoring=rule, min_turns=2))

    body = _client(bob).get(f"/judge/debates/{debate.pk}/").content.decode()

    scoring = re.search(r'id="scoring-rule">(.*?)</p>', body, re.S)
    assert scoring is not None and words in scoring.group(1) and "0.05" in scoring.group(1)


# --- The judging rules on verdicts ---------------------------------------------------------------


@pytest.mark.django_db
def test_it_refuses_50_50_unless_the_protocol_allows_it(bob, charlie, question, profile) -> None:  # type: ignore[no-untyped-def]
    strict = _debate(question, profile, [bob])
    lenient = _debate(question, profile, [charlie], rules=JudgingRules(allow_even=True))
    _finish(strict)
    _finish(lenient)

    with pytest.raises(VerdictError, match="50/50"):
        submit_human_verdict(Assignment.objects.get(debate=strict), 0.5, 0.5, REASON)
    verdict = submit_human_verdict(Assignment.objects.get(debate=lenient), 0.5, 0.5, REASON)

    assert (verdict.p_a, verdict.p_b) == (0.5, 0.5)


@pytest.mark.django_db
def test_it_takes_an_early_verdict_once_the_minimum_speeches_are_in(bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    debate = _debate(question, profile, [bob], rounds=2, rules=JudgingRules(min_turns=2))
    assignment = Assignment.objects.get(debate=debate)
    Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.RUNNING)

    with pytest.raises(VerdictError, match=r"at least 2 speeches .* \(0 so far\)"):
        submit_human_verdict(assignment, 0.7, 0.3, REASON)
    now = timezone.now()
    for side in (0, 1):
        Turn.objects.create(
            debate=debate,
            index=side,
            round=1,
            side=side,
            text="x",
            prompt=[],
            prompt_hash="x",
            started_at=now,
            finished_at=now,
        )
    verdict = submit_human_verdict(assignment, 0.7, 0.3, REASON)

    assert verdict.meta["turns_seen"] == 2 and verdict.meta["rounds_seen"] == 1


@pytest.mark.django_db
def test_it_needs_the_whole_debate_by_default(bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    debate = _debate(question, profile, [bob], rounds=2)
    Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.RUNNING)

    with pytest.raises(VerdictError, match="not over yet"):
        submit_human_verdict(Assignment.objects.get(debate=debate), 0.7, 0.3, REASON)


@pytest.mark.django_db
def test_it_stores_the_score_with_the_penalty_for_each_round_waited(bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    import math

    debate = _debate(question, profile, [bob], rounds=3, rules=JudgingRules(min_turns=2))
    _finish(debate, rounds=3)
    assignment = Assignment.objects.get(debate=debate)
    gold = question.correct_index
    p_first = 0.8 if assignment.shown_first == gold else 0.2

    verdict = submit_human_verdict(assignment, p_first, 1 - p_first, REASON)

    assert verdict.meta["scoring"] == "log" and verdict.meta["rounds_seen"] == 3
    assert verdict.meta["score"] == pytest.approx(math.log2(0.8) - 0.05 * 2)
    page = _client(bob).get(f"/judge/debates/{debate.pk}/").content.decode()
    assert re.search(r'id="score">(-?[0-9.]+)<', page).group(1) == f"{math.log2(0.8) - 0.1:.3f}"  # type: ignore[union-attr]


@pytest.mark.django_db
def test_it_shows_referee_findings_to_the_judge_in_the_turn_payload(bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    from arena.runner import turn_payload

    debate = _debate(question, profile, [bob])
    _finish(debate)

    payload = turn_payload(debate.turns.get(index=0))

    assert payload["violations"] == [{"rule": "length", "message": "over the limit"}]
    assert payload["truncated"] is False


@pytest.mark.django_db
def test_it_shows_the_error_of_a_second_verdict_on_the_page(bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    debate = _debate(question, profile, [bob])
    _finish(debate)
    client = _client(bob)
    client.post(f"/judge/debates/{debate.pk}/", {"p_first": "0.8", "p_second": "0.2", "reason": REASON})

    response = client.post(f"/judge/debates/{debate.pk}/", {"p_first": "0.1", "p_second": "0.9", "reason": REASON})

    assert response.status_code == 400
    assert b"you have already judged this debate" in response.content
    assert Verdict.objects.count() == 1


# --- Questions in an interactive debate ---------------------------------------------------------


def _waiting(question, profile, judges) -> Debate:  # type: ignore[no-untyped-def]
    debate = _debate(question, profile, judges, protocol="interactive", rounds=2)
    Debate.objects.filter(pk=debate.pk).update(settings={**debate.settings, WAITING_KEY: 1})
    return debate


@pytest.mark.django_db
def test_it_takes_the_judges_question_while_the_debate_waits_and_queues_it_again(  # type: ignore[no-untyped-def]
    bob, question, profile, django_capture_on_commit_callbacks
) -> None:
    debate = _waiting(question, profile, [bob])
    assignment = Assignment.objects.get(debate=debate)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        asked = ask_question(assignment, "  Where   does the story say he woke up? ")

    assert (asked.after_round, asked.text, asked.asked_by) == (1, "Where does the story say he woke up?", bob)
    debate.refresh_from_db()
    assert WAITING_KEY not in debate.settings
    assert len(callbacks) == 1, "the debate is queued again once the question is committed"
    with pytest.raises(QuestionError, match="not waiting"):
        ask_question(assignment, "Another?")


@pytest.mark.django_db
@pytest.mark.parametrize("text, message", [("   ", "type a question"), ("x" * 501, "under 500")])
def test_it_refuses_an_empty_or_overlong_question(bob, question, profile, text: str, message: str) -> None:  # type: ignore[no-untyped-def]
    debate = _waiting(question, profile, [bob])

    with pytest.raises(QuestionError, match=message):
        ask_question(Assignment.objects.get(debate=debate), text)
    assert not JudgeQuestion.objects.exists()


@pytest.mark.django_db
def test_it_refuses_questions_outside_interactive_debates(bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    debate = _debate(question, profile, [bob], rounds=2)
    Debate.objects.filter(pk=debate.pk).update(settings={**debate.settings, WAITING_KEY: 1})

    with pytest.raises(QuestionError, match="only in interactive"):
        ask_question(Assignment.objects.get(debate=debate), "Why?")


@pytest.mark.django_db
def test_it_takes_the_question_from_the_judge_page_and_shows_it_escaped(bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    debate = _waiting(question, profile, [bob])
    client = _client(bob)
    page = client.get(f"/judge/debates/{debate.pk}/").content.decode()
    card = re.search(r'<section class="card" id="question-card"[^>]*>', page)
    assert card is not None and 'data-round="1"' in card.group() and "hidden" not in card.group()

    response = client.post(f"/judge/debates/{debate.pk}/", {"action": "question", "question": "<b>Why</b> the moon?"})

    assert response.status_code == 302
    body = client.get(f"/judge/debates/{debate.pk}/").content.decode()
    assert _config(body)["judgeQuestions"] == [{"after_round": 1, "before_turn": 2, "text": "<b>Why</b> the moon?"}]
    assert "<b>Why</b>" not in body


@pytest.mark.django_db
def test_it_keeps_the_typed_question_when_it_is_refused(bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    debate = _debate(question, profile, [bob], protocol="interactive", rounds=2)

    response = _client(bob).post(f"/judge/debates/{debate.pk}/", {"action": "question", "question": "Is it Mars?"})

    assert response.status_code == 400
    assert b"not waiting for a question" in response.content and b"Is it Mars?" in response.content


@pytest.mark.django_db(transaction=True)
def test_it_pauses_for_a_human_judges_question_then_both_debaters_answer_it(bob, question) -> None:  # type: ignore[no-untyped-def]
    from debaters.backends import forget_backends

    forget_backends()
    profile = DebaterProfile.objects.create(name="iq", backend="scripted", model="script", options={"text": "I argue."})
    debate = _debate(question, profile, [bob], protocol="interactive", rounds=2)

    first = worker_loop.run(run_debate(debate.pk, "iq-owner"))

    debate.refresh_from_db()
    assert first.status == "waiting-for-judge" and first.turns_written == 2
    assert debate.status == Debate.Status.WAITING and debate.settings[WAITING_KEY] == 1 and debate.lease_owner == ""
    assert worker_loop.run(run_debate(debate.pk, "iq-owner")).status == "not-claimable", "no question, no progress"
    assert debate.turns.count() == 2

    ask_question(Assignment.objects.get(debate=debate), "Which page mentions the moon?")
    second = worker_loop.run(run_debate(debate.pk, "iq-owner"))

    debate.refresh_from_db()
    assert second.status == "finished" and debate.status == Debate.Status.FINISHED
    for turn in debate.turns.filter(round=2):
        assert 'The judge asked: "Which page mentions the moon?"' in turn.prompt[-1]["content"]
    for turn in debate.turns.filter(round=1):
        assert "moon?" not in turn.prompt[-1]["content"]
    forget_backends()


@pytest.mark.django_db(transaction=True)
def test_it_has_an_ai_judge_ask_when_the_debate_has_no_human_judge(question) -> None:  # type: ignore[no-untyped-def]
    from debaters.backends import forget_backends

    forget_backends()
    profile = DebaterProfile.objects.create(
        name="iq-ai",
        backend="scripted",
        model="script",
        options={"texts": ["Opening.", "Opening.", "What year is it?", "Reply.", "Reply."]},
    )
    debate = _debate(question, profile, [], protocol="interactive", rounds=2)

    outcome = worker_loop.run(run_debate(debate.pk, "iq-owner"))

    assert outcome.status == "finished"
    asked = JudgeQuestion.objects.get(debate=debate)
    assert asked.after_round == 1 and asked.asked_by is None
    assert asked.text == "What year is it?" and "own model" in asked.ai_judge
    for turn in debate.turns.filter(round=2):
        assert "What year is it?" in turn.prompt[-1]["content"]
    forget_backends()


@pytest.mark.django_db(transaction=True)
def test_it_does_not_pause_when_the_question_arrived_while_the_round_ended(bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    debate = _debate(question, profile, [bob], protocol="interactive", rounds=2)
    assert services.claim_debate(debate.pk, "racer")
    JudgeQuestion.objects.create(debate=debate, after_round=1, text="Early?", asked_by=bob)

    assert pause_for_judge(debate.pk, "racer", 1) is False
    debate.refresh_from_db()
    assert debate.status == Debate.Status.RUNNING and WAITING_KEY not in debate.settings
