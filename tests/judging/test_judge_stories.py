"""The researcher's page of stories a judge read outside judging (``StoryExposure``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client

from arena.models import Debate, Question
from judging import scheduler, studies
from judging.models import StoryExposure, Verdict


def _client(user: User, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_it_records_a_story_and_the_scheduler_keeps_it_from_the_judge(
    alice: User, charlie: User, question: Question, make_debate: Callable[..., Debate]
) -> None:
    client = _client(alice)
    assert f'href="/studies/judges/{charlie.pk}/stories/"' in client.get("/studies/judges/").content.decode()
    url = f"/studies/judges/{charlie.pk}/stories/"
    response = client.post(url, {"action": "add", "story": f"  {question.source_title.upper()} ", "role": "debater"})
    assert response.status_code == 302 and response["Location"] == url
    exposure = StoryExposure.objects.get(judge=charlie)
    assert (exposure.story, exposure.role) == (question.source_title, "debater")  # stored as the questions spell it
    page = client.get(url).content.decode()
    assert f"recorded: charlie read {question.source_title!r} as debater" in page.replace("&#x27;", "'")
    assert f'data-story="{question.source_title}"' in page
    debate = make_debate()
    assert studies.check_assignment(debate, charlie) == [scheduler.READ_STORY]


@pytest.mark.django_db
def test_an_unknown_story_is_refused_with_a_reason(alice: User, charlie: User, question: Question) -> None:
    response = _client(alice).post(
        f"/studies/judges/{charlie.pk}/stories/", {"action": "add", "story": "A Story Nobody Wrote", "role": "expert"}
    )
    assert response.status_code == 400
    assert "no question in the arena comes from a story titled" in response.content.decode().replace("&#x27;", "'")
    assert not StoryExposure.objects.exists()


@pytest.mark.django_db
def test_a_duplicate_and_a_bad_role_are_refused(alice: User, charlie: User, question: Question) -> None:
    client = _client(alice)
    url = f"/studies/judges/{charlie.pk}/stories/"
    assert client.post(url, {"action": "add", "story": question.source_title, "role": "expert"}).status_code == 302
    again = client.post(url, {"action": "add", "story": question.source_title, "role": "expert"})
    assert again.status_code == 400
    assert "is already recorded as having read" in again.content.decode()
    bad = client.post(url, {"action": "add", "story": question.source_title, "role": "reader"})
    assert bad.status_code == 400 and "Select a valid choice" in bad.content.decode()
    assert StoryExposure.objects.count() == 1
    # The same story read in the other role is a second, distinct record.
    assert client.post(url, {"action": "add", "story": question.source_title, "role": "debater"}).status_code == 302
    assert StoryExposure.objects.count() == 2


@pytest.mark.django_db
def test_recording_a_story_flags_verdicts_already_given_on_it(alice: User, bob: User, finished_debate: Debate) -> None:
    verdict = Verdict.objects.create(
        debate=finished_debate, judge=bob, shown_first=0, p_a=0.7, p_b=0.3, reason="x", correct=True
    )
    client = _client(alice)
    url = f"/studies/judges/{bob.pk}/stories/"
    response = client.post(url, {"action": "add", "story": finished_debate.question.source_title, "role": "debater"})
    assert response.status_code == 302
    assert "1 verdict(s) bob gave on this story are now flagged (read-story)" in client.get(url).content.decode()
    assert studies.exposure_flags()[verdict.pk] == [scheduler.READ_STORY]


@pytest.mark.django_db
def test_a_researcher_removes_a_record_made_by_mistake(alice: User, charlie: User, question: Question) -> None:
    client = _client(alice)
    url = f"/studies/judges/{charlie.pk}/stories/"
    client.post(url, {"action": "add", "story": question.source_title, "role": "expert"})
    exposure = StoryExposure.objects.get()
    assert client.post(url, {"action": "remove", "exposure": str(exposure.pk)}).status_code == 302
    assert not StoryExposure.objects.exists()
    assert "removed: charlie read" in client.get(url).content.decode()
    gone = client.post(url, {"action": "remove", "exposure": str(exposure.pk)})
    assert gone.status_code == 400 and "does not exist" in gone.content.decode()


@pytest.mark.django_db
def test_judges_get_403_and_a_post_without_the_csrf_token_is_refused(
    alice: User, bob: User, charlie: User, question: Question
) -> None:
    url = f"/studies/judges/{charlie.pk}/stories/"
    judge = _client(bob)
    assert judge.get(url).status_code == 403
    assert judge.post(url, {"action": "add", "story": question.source_title, "role": "expert"}).status_code == 403
    forged = _client(alice, csrf=True).post(url, {"action": "add", "story": question.source_title, "role": "expert"})
    assert forged.status_code == 403
    assert not StoryExposure.objects.exists()
    # A researcher is not a judge: the page exists for judges only.
    assert _client(alice).get(f"/studies/judges/{alice.pk}/stories/").status_code == 404
