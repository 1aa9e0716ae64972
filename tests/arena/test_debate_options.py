"""The researcher's debate form (protocol, constitution, judging rules, CAI options) and what the
debate page shows researchers but never judges (drafts, critiques, candidates)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from arena.constitution import default_constitution, new_version
from arena.engine.protocol import draw_consultant_side
from arena.models import Candidate, Debate, Revision, Turn

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _no_queue(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # These tests look at what is stored; nothing needs to run.
    monkeypatch.setattr("arena.services.enqueue_debate", lambda debate_id: None)


def _client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def _form(question, profile, **changes: object) -> dict[str, object]:  # type: ignore[no-untyped-def]
    data: dict[str, object] = {
        "question": question.pk,
        "protocol": "debate",
        "debater_a": profile.pk,
        "debater_b": profile.pk,
        "constitution": default_constitution().pk,
        "rounds": 2,
        "max_tokens": 64,
        "word_limit": 100,
        "scoring": "log",
        "turn_penalty": 0.05,
        "min_turns": "",
        "critique_rounds_a": 0,
        "critique_rounds_b": 0,
        "best_of_n_a": 1,
        "best_of_n_b": 1,
        "judge_profile": "",
    }
    data.update(changes)
    return data


def test_it_stores_the_chosen_protocol_rules_and_options_in_the_debate(alice, bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    strict = new_version(
        default_constitution(),
        name="strict",
        preamble="Strict.",
        principles=default_constitution().principles,
        rules={**default_constitution().rules, "word_limit": 120},
    )

    response = _client(alice).post(
        "/debates/",
        _form(
            question,
            profile,
            protocol="interactive",
            constitution=strict.pk,
            scoring="spherical",
            turn_penalty=0.1,
            allow_even="on",
            min_turns=2,
            critique_rounds_a=1,
            best_of_n_b=3,
            judges=[bob.pk],
        ),
    )

    debate = Debate.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/debates/{debate.pk}/"
    assert debate.protocol == "interactive" and debate.constitution == strict
    assert {k: debate.settings[k] for k in ("scoring", "turn_penalty", "allow_even", "min_turns")} == {
        "scoring": "spherical",
        "turn_penalty": 0.1,
        "allow_even": True,
        "min_turns": 2,
    }
    assert debate.settings["critique_rounds"] == [1, 0] and debate.settings["best_of_n"] == [1, 3]


def test_it_records_the_consultants_side_drawn_from_the_seed(alice, question, profile) -> None:  # type: ignore[no-untyped-def]
    _client(alice).post("/debates/", _form(question, profile, protocol="consultancy"))

    debate = Debate.objects.get()
    assert debate.settings["consultant_side"] == draw_consultant_side(debate.seed)


@pytest.mark.parametrize(
    "changes, error",
    [
        ({"word_limit": 400}, "allows at most 150 words"),
        ({"min_turns": 9}, "only 4 speeches"),
        ({"scoring": "brier"}, "Select a valid choice"),
        ({"best_of_n_a": 9}, "less than or equal to 8"),
        ({"protocol": "mystery"}, "Select a valid choice"),
    ],
)
def test_it_refuses_impossible_options_and_creates_nothing(alice, question, profile, changes, error) -> None:  # type: ignore[no-untyped-def]
    response = _client(alice).post("/debates/", _form(question, profile, **changes))

    assert response.status_code == 200 and error in response.content.decode()
    assert not Debate.objects.exists()


def _debate_with_cai(make_debate, bob):  # type: ignore[no-untyped-def]
    debate = make_debate(judges=[bob])
    now = timezone.now()
    turn = Turn.objects.create(
        debate=debate,
        index=0,
        round=1,
        side=0,
        text="FINAL speech.",
        prompt=[],
        prompt_hash="x",
        started_at=now,
        finished_at=now,
        truncated=True,
        violations=[{"rule": "length", "message": "over the 60-word limit"}],
    )
    Turn.objects.create(
        debate=debate,
        index=1,
        round=1,
        side=1,
        text="Other.",
        prompt=[],
        prompt_hash="x",
        started_at=now,
        finished_at=now,
    )
    Revision.objects.create(
        turn=turn,
        step=0,
        draft="SECRET-DRAFT",
        principle_id="engage",
        principle="Engage.",
        critique="SECRET-CRITIQUE",
        revision="FINAL speech.",
    )
    Candidate.objects.create(turn=turn, index=0, text="SECRET-CANDIDATE", score=0.31, chosen=False)
    Candidate.objects.create(turn=turn, index=1, text="FINAL speech.", score=0.77, chosen=True)
    Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.FINISHED, started_at=now, finished_at=now)
    return debate


def test_it_shows_researchers_the_drafts_critiques_candidates_and_findings(alice, bob, make_debate) -> None:  # type: ignore[no-untyped-def]
    debate = _debate_with_cai(make_debate, bob)

    body = _client(alice).get(f"/debates/{debate.pk}/").content.decode()

    for text in ("SECRET-DRAFT", "SECRET-CRITIQUE", "SECRET-CANDIDATE", "0.770", "over the 60-word limit", "truncated"):
        assert text in body
    assert 'data-candidate="1"' in body and "chosen" in body


def test_it_never_shows_a_judge_the_drafts_critiques_or_candidates(bob, make_debate) -> None:  # type: ignore[no-untyped-def]
    debate = _debate_with_cai(make_debate, bob)

    body = _client(bob).get(f"/judge/debates/{debate.pk}/").content.decode()

    for secret in ("SECRET-DRAFT", "SECRET-CRITIQUE", "SECRET-CANDIDATE"):
        assert secret not in body
    assert _client(bob).get(f"/debates/{debate.pk}/").status_code == 403
