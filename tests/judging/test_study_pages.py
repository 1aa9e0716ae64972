"""Study pages: researchers create and read studies, judges click "Next debate" and read their queue."""

from __future__ import annotations

import pytest
from django.test import Client

from arena.models import Debate
from judging import invitations, studies
from judging.models import Assignment, Study, StudySlot, Verdict

GOOD_PASSWORD = "correct horse battery staple 42"


def _client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_a_researcher_creates_a_study_by_filter_and_reads_its_rules(alice, finished_debate) -> None:  # type: ignore[no-untyped-def]
    client = _client(alice)
    response = client.post("/studies/", {
        "name": "offline debates", "mode": "offline", "verdicts_per_debate": "3", "protocol": "debate",
        "distinct_story": "on", "per_judge_cap": "5", "gold_every": "0",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    study = Study.objects.get(name="offline debates")
    assert list(study.entries.values_list("debate_id", "target")) == [(finished_debate.pk, 3)]
    page = client.get(response["Location"]).content.decode()
    assert "a judge never judges the same story twice" in page and "at most 5 debates per judge" in page
    assert "0 of 3 verdicts" in page


@pytest.mark.django_db
def test_a_study_without_debates_is_refused_with_a_reason(alice) -> None:  # type: ignore[no-untyped-def]
    response = _client(alice).post("/studies/", {"name": "empty", "mode": "offline", "verdicts_per_debate": "1", "gold_every": "0"})
    assert response.status_code == 400
    assert "choose which debates" in response.content.decode()
    assert not Study.objects.exists()


@pytest.mark.django_db
def test_hand_assignment_on_the_study_page_names_the_broken_rule(alice, bob, finished_debate, make_debate) -> None:  # type: ignore[no-untyped-def]
    Verdict.objects.create(debate=finished_debate, judge=bob, shown_first=0, p_a=0.7, p_b=0.3, reason="x", correct=True)
    second = make_debate()  # the same question
    study = studies.create_study(name="s", created_by=alice, debates=[second])
    response = _client(alice).post(f"/studies/{study.pk}/", {"action": "assign", "debate": second.pk, "judge": bob.pk})
    assert response.status_code == 400
    assert "same-question" in response.content.decode()
    assert not Assignment.objects.filter(debate=second).exists()


@pytest.mark.django_db
def test_next_debate_takes_the_judge_to_a_study_debate(alice, charlie, finished_debate) -> None:  # type: ignore[no-untyped-def]
    study = studies.create_study(name="s", created_by=alice, debates=[finished_debate])
    client = _client(charlie)
    assert "Next debate" in client.get("/judge/").content.decode()
    response = client.post(f"/judge/studies/{study.pk}/next/")
    assert response.status_code == 302 and response["Location"] == f"/judge/debates/{finished_debate.pk}/"
    assert Assignment.objects.filter(judge=charlie, debate=finished_debate).exists()
    assert "held for you until" in client.get("/judge/").content.decode()
    # Nothing else to give: the judge comes back to the queue with the reason.
    Verdict.objects.create(debate=finished_debate, judge=charlie, shown_first=0, p_a=0.7, p_b=0.3, reason="x", correct=True)
    again = client.post(f"/judge/studies/{study.pk}/next/", follow=True)
    assert "nothing in this study is waiting for you" in again.content.decode()


@pytest.mark.django_db
def test_the_queue_shows_a_cancelled_debate_with_a_note_and_the_judges_score(bob, finished_debate, make_debate) -> None:  # type: ignore[no-untyped-def]
    cancelled = make_debate(judges=[bob])
    Debate.objects.filter(pk=cancelled.pk).update(status=Debate.Status.CANCELLED)
    Verdict.objects.create(debate=finished_debate, judge=bob, shown_first=0, p_a=0.5, p_b=0.5, reason="x", correct=False)
    page = _client(bob).get("/judge/").content.decode()
    assert f"Debate {cancelled.pk} was cancelled before it could be judged" in page
    assert "mean log score -1.000" in page


@pytest.mark.django_db
def test_judges_cannot_open_study_pages_and_researchers_see_quality(alice, bob, finished_debate) -> None:  # type: ignore[no-untyped-def]
    assert _client(bob).get("/studies/").status_code == 403
    Verdict.objects.create(debate=finished_debate, judge=bob, shown_first=0, p_a=0.9, p_b=0.1, reason="x", correct=True)
    page = _client(alice).get("/studies/judges/").content.decode()
    assert 'data-judge="bob"' in page


@pytest.mark.django_db
def test_the_leaderboard_shows_only_when_the_study_enables_it(alice, bob, finished_debate) -> None:  # type: ignore[no-untyped-def]
    study = studies.create_study(name="s", created_by=alice, debates=[finished_debate])
    assert _client(bob).get(f"/judge/studies/{study.pk}/leaderboard/").status_code == 404
    Study.objects.filter(pk=study.pk).update(leaderboard=True)
    Verdict.objects.create(debate=finished_debate, judge=bob, shown_first=0, p_a=0.9, p_b=0.1, reason="x", correct=True)
    page = _client(bob).get(f"/judge/studies/{study.pk}/leaderboard/").content.decode()
    assert "bob" in page


@pytest.mark.django_db
def test_the_new_debate_form_refuses_a_judge_who_judged_the_question(alice, bob, charlie, finished_debate, profile) -> None:  # type: ignore[no-untyped-def]
    from arena.constitution import default_constitution

    Verdict.objects.create(debate=finished_debate, judge=bob, shown_first=0, p_a=0.7, p_b=0.3, reason="x", correct=True)
    form = {
        "question": finished_debate.question_id, "protocol": "debate", "debater_a": profile.pk, "debater_b": profile.pk,
        "constitution": default_constitution().pk, "rounds": 1, "max_tokens": 32, "word_limit": 60, "scoring": "log",
        "turn_penalty": 0.05, "min_turns": "", "critique_rounds_a": 0, "critique_rounds_b": 0, "best_of_n_a": 1,
        "best_of_n_b": 1, "judge_profile": "", "judges": [bob.pk, charlie.pk],
    }
    response = _client(alice).post("/debates/", form)
    assert response.status_code == 200
    body = response.content.decode()
    assert "bob may not judge this question" in body and "same-question" in body and "charlie may not" not in body
    assert Debate.objects.count() == 1
    response = _client(alice).post("/debates/", {**form, "judges": [charlie.pk]})
    assert response.status_code == 302


@pytest.mark.django_db
def test_the_analysis_page_says_how_many_verdicts_break_an_exposure_rule(alice, bob, finished_debate, make_debate) -> None:  # type: ignore[no-untyped-def]
    again = make_debate(seed=9)  # the same question
    Debate.objects.filter(pk=again.pk).update(status=Debate.Status.FINISHED)
    for debate in (finished_debate, again):
        Verdict.objects.create(debate=debate, judge=bob, shown_first=0, p_a=0.7, p_b=0.3, reason="x", correct=True)
    page = _client(alice).get("/analysis/").content.decode()
    assert "1 human verdict in the record breaks an exposure rule" in page


@pytest.mark.django_db
def test_a_members_only_study_is_hidden_from_judges_who_are_not_members(alice, bob, charlie, finished_debate) -> None:  # type: ignore[no-untyped-def]
    study = studies.create_study(name="closed circle", created_by=alice, debates=[finished_debate],
                                 open_to_all=False, leaderboard=True)
    study.members.add(charlie)
    outsider = _client(bob)
    assert "closed circle" not in outsider.get("/judge/").content.decode()
    assert outsider.post(f"/judge/studies/{study.pk}/next/").status_code == 404
    assert outsider.get(f"/judge/studies/{study.pk}/leaderboard/").status_code == 404
    assert not studies.next_debate(study, bob).assignment  # the service refuses too
    assert not StudySlot.objects.filter(judge=bob).exists()  # no slot of the study handed out
    member = _client(charlie)
    assert "closed circle" in member.get("/judge/").content.decode()
    assert member.get(f"/judge/studies/{study.pk}/leaderboard/").status_code == 200
    response = member.post(f"/judge/studies/{study.pk}/next/")
    assert response.status_code == 302 and response["Location"] == f"/judge/debates/{finished_debate.pk}/"


@pytest.mark.django_db
def test_an_invitation_for_a_members_only_study_makes_the_new_judge_a_member(alice, finished_debate) -> None:  # type: ignore[no-untyped-def]
    study = studies.create_study(name="closed circle", created_by=alice, debates=[finished_debate], open_to_all=False)
    _, token = invitations.create_invitation(created_by=alice, study=study)
    client = Client()
    response = client.post(f"/join/{token}/", {"username": "dana", "password": GOOD_PASSWORD, "password_again": GOOD_PASSWORD})
    assert response.status_code == 302
    assert list(study.members.values_list("username", flat=True)) == ["dana"]
    assert "closed circle" in client.get("/judge/").content.decode()
    assert client.post(f"/judge/studies/{study.pk}/next/").status_code == 302
    assert Assignment.objects.filter(judge__username="dana", debate=finished_debate).exists()


@pytest.mark.django_db
def test_a_researcher_adds_and_removes_members_on_the_study_page(alice, charlie, finished_debate) -> None:  # type: ignore[no-untyped-def]
    study = studies.create_study(name="closed circle", created_by=alice, debates=[finished_debate], open_to_all=False)
    researcher = Client(enforce_csrf_checks=True)
    researcher.force_login(alice)
    assert researcher.post(f"/studies/{study.pk}/", {"action": "add_member", "username": "charlie"}).status_code == 403
    page = researcher.get(f"/studies/{study.pk}/")
    assert "its members only" in page.content.decode()
    token = page.cookies["csrftoken"].value
    added = researcher.post(f"/studies/{study.pk}/", {"action": "add_member", "username": "charlie", "csrfmiddlewaretoken": token})
    assert added.status_code == 200 and "charlie added to the members" in added.content.decode()
    assert "closed circle" in _client(charlie).get("/judge/").content.decode()
    unknown = researcher.post(f"/studies/{study.pk}/", {"action": "add_member", "username": "nobody", "csrfmiddlewaretoken": token})
    assert unknown.status_code == 400 and "no active judge named" in unknown.content.decode()
    assert researcher.post(f"/studies/{study.pk}/", {"action": "add_member", "username": "alice", "csrfmiddlewaretoken": token}).status_code == 400
    researcher.post(f"/studies/{study.pk}/", {"action": "remove_member", "username": "charlie", "csrfmiddlewaretoken": token})
    assert not study.members.exists()
    assert "closed circle" not in _client(charlie).get("/judge/").content.decode()
