"""The researcher's new-debate form (issue 13): a question picker that scales (search by text or id,
filter by set, story title shown), no judge pre-selected, help text on every field, the two shipped
debater profiles, and a favicon."""

from __future__ import annotations

import pytest
from django.test import Client

from arena_test_support import signed_in

from arena.constitution import default_constitution
from arena.forms import NewDebateForm
from arena.models import Debate, Question, QuestionSet
from debaters.profiles import DEFAULT_PROFILE, EVIDENCE_PROFILE, default_profile, evidence_profile

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


@pytest.fixture(autouse=True)
def _no_queue(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The form is what is tested; nothing needs to run.
    monkeypatch.setattr("arena.services.enqueue_debate", lambda debate_id: None)


def _many_questions(count: int) -> QuestionSet:
    other = QuestionSet.objects.create(name="other-set", licence="CC-BY-4.0")
    Question.objects.bulk_create(
        Question(
            question_set=other, external_id=f"gen-{i}", question=f"Why did robot {i} leave?", answers=["a", "b"],
            correct_index=0, source_title=f"Robots {i}", source_text=f"Robot {i} left.",
        )
        for i in range(count)
    )
    return other


def test_the_form_preselects_no_judge_and_explains_every_field(alice, bob, question) -> None:  # type: ignore[no-untyped-def]
    body = signed_in(alice).get("/debates/").content.decode()
    assert 'name="judges"' in body and "checked" not in body.split('name="judges"')[1].split(">")[0]
    assert 'type="text" name="question"' in body and "<select name=\"question\"" not in body
    form = NewDebateForm()
    assert all(field.help_text for field in form), [f.name for f in form if not f.help_text]
    # The start button comes right after the main fields; the rest waits behind "More settings".
    assert body.index("more-settings") < body.index('id="start-debate"')
    assert 'rel="icon"' in body


def test_the_demo_ships_two_debater_profiles_in_distinct_styles(alice, question) -> None:  # type: ignore[no-untyped-def]
    body = signed_in(alice).get("/debates/").content.decode()
    first, second = default_profile(), evidence_profile()
    assert (first.name, second.name) == (DEFAULT_PROFILE, EVIDENCE_PROFILE)
    assert (first.speech_style, second.speech_style) == ("structured", "evidence")
    assert first.model == second.model
    assert f'<option value="{second.pk}" selected>' in body


def test_the_picker_finds_questions_by_words_id_and_set_and_shows_the_story_title(alice, question) -> None:  # type: ignore[no-untyped-def]
    other = _many_questions(60)
    client = signed_in(alice)
    by_words = client.get("/debates/questions/", {"q": "robot 42"}).json()
    assert [r["external_id"] for r in by_words["results"]] == ["gen-42"]
    assert by_words["results"][0]["title"] == "Robots 42" and by_words["results"][0]["set"] == "other-set"
    by_id = client.get("/debates/questions/", {"q": str(question.pk)}).json()
    assert by_id["results"][0]["id"] == question.pk
    in_set = client.get("/debates/questions/", {"q": "", "set": str(question.question_set_id)}).json()
    assert [r["id"] for r in in_set["results"]] == [question.pk] and not in_set["more"]
    many = client.get("/debates/questions/", {"q": "robot", "set": str(other.pk)}).json()
    assert len(many["results"]) == 20 and many["more"]


def test_the_picker_is_for_researchers_only(bob) -> None:  # type: ignore[no-untyped-def]
    assert signed_in(bob).get("/debates/questions/", {"q": "x"}).status_code == 403


def _post(client: Client, question_value: object, profile) -> object:  # type: ignore[no-untyped-def]
    return client.post("/debates/", {
        "question": question_value, "protocol": "debate", "debater_a": profile.pk, "debater_b": profile.pk,
        "constitution": default_constitution().pk, "rounds": 2, "max_tokens": 64, "word_limit": 100,
        "scoring": "log", "turn_penalty": 0.05, "critique_rounds_a": 0, "critique_rounds_b": 0,
        "best_of_n_a": 1, "best_of_n_b": 1,
    })


def test_a_question_may_be_given_by_external_id_and_an_unknown_one_is_a_clear_error(alice, question, profile) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(alice)
    response = _post(client, "no-such-question", profile)
    assert response.status_code == 200  # type: ignore[attr-defined]
    assert "No question has the id or external id" in response.content.decode()  # type: ignore[attr-defined]
    assert 'value="64"' in response.content.decode()  # type: ignore[attr-defined]  # nothing typed is lost
    assert not Debate.objects.exists()
    response = _post(client, question.external_id, profile)
    debate = Debate.objects.get()
    assert debate.question == question and not debate.assignments.exists()


def test_the_favicon_is_served(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("arena/favicon.svg")
