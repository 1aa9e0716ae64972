"""Invitations: single-use expiring sign-up links; no open sign-up; deactivating a judge."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from judging import invitations
from judging.models import Invitation, JudgeStatus, Verdict

GOOD_PASSWORD = "correct horse battery staple 42"


@pytest.mark.django_db
def test_it_makes_a_judge_from_an_invitation_once(alice) -> None:  # type: ignore[no-untyped-def]
    invitation, token = invitations.create_invitation(created_by=alice, note="for dana")
    assert invitation.token != token  # only a hash is stored
    user = invitations.accept_invitation(token, "dana", GOOD_PASSWORD)
    assert user.groups.filter(name="judge").exists() and user.check_password(GOOD_PASSWORD)
    with pytest.raises(invitations.InvitationError, match="already used"):
        invitations.accept_invitation(token, "erin", GOOD_PASSWORD)
    assert not get_user_model().objects.filter(username="erin").exists()


@pytest.mark.django_db
def test_it_refuses_an_expired_invitation_a_taken_name_and_a_weak_password(alice, bob) -> None:  # type: ignore[no-untyped-def]
    invitation, token = invitations.create_invitation(created_by=alice)
    with pytest.raises(invitations.InvitationError, match="taken"):
        invitations.accept_invitation(token, "BOB", GOOD_PASSWORD)
    with pytest.raises(invitations.InvitationError, match="too short|too common"):
        invitations.accept_invitation(token, "dana", "abc")
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(invitations.InvitationError, match="expired"):
        invitations.accept_invitation(token, "dana", GOOD_PASSWORD)
    assert Invitation.objects.get(pk=invitation.pk).used_at is None


@pytest.mark.django_db
def test_the_join_page_signs_the_new_judge_in(alice) -> None:  # type: ignore[no-untyped-def]
    _, token = invitations.create_invitation(created_by=alice)
    client = Client()
    assert client.get(f"/join/{token}/").status_code == 200
    response = client.post(f"/join/{token}/", {"username": "dana", "password": GOOD_PASSWORD, "password_again": GOOD_PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/judge/"
    assert client.get("/judge/").status_code == 200
    assert Client().get(f"/join/{token}/").status_code == 410
    assert Client().get("/join/not-a-token/").status_code == 410


@pytest.mark.django_db
def test_a_deactivated_judge_cannot_sign_in_and_keeps_their_verdicts(alice, bob, finished_debate) -> None:  # type: ignore[no-untyped-def]
    Verdict.objects.create(debate=finished_debate, judge=bob, shown_first=0, p_a=0.7, p_b=0.3, reason="x", correct=True)
    client = Client()
    client.force_login(alice)
    response = client.post(f"/studies/judges/{bob.pk}/", {"action": "deactivate"})
    assert response.status_code == 302
    bob.refresh_from_db()
    assert not bob.is_active
    assert JudgeStatus.objects.get(judge=bob).deactivated_at is not None
    assert Verdict.objects.filter(judge=bob).count() == 1
    assert not Client().login(username="bob", password="x")
    page = client.get("/studies/judges/")
    assert "deactivated" in page.content.decode()


@pytest.mark.django_db
def test_researchers_make_invitations_and_judges_cannot(alice, bob) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(alice)
    page = client.post("/studies/judges/", {"action": "invite", "note": "for dana", "days": "3"})
    assert "/join/" in page.content.decode()
    assert Invitation.objects.get().note == "for dana"
    judge = Client()
    judge.force_login(bob)
    assert judge.post("/studies/judges/", {"action": "invite"}).status_code == 403


@pytest.mark.django_db
def test_the_invite_judges_command_prints_working_links(alice) -> None:  # type: ignore[no-untyped-def]
    from io import StringIO

    from django.core.management import CommandError, call_command

    out = StringIO()
    call_command("invite_judges", "--count", "3", "--by", "alice", "--base-url", "https://arena.example.org/", stdout=out)
    links = out.getvalue().split()
    assert len(links) == 3 and all(link.startswith("https://arena.example.org/join/") for link in links)
    token = links[0].rstrip("/").rsplit("/", 1)[1]
    assert invitations.open_invitation(token).created_by == alice
    with pytest.raises(CommandError, match="no study named"):
        call_command("invite_judges", "--by", "alice", "--study", "missing")


@pytest.mark.django_db
def test_the_admin_refuses_an_assignment_that_breaks_a_rule(bob, finished_debate, make_debate) -> None:  # type: ignore[no-untyped-def]
    from judging.admin import AssignmentAdminForm

    Verdict.objects.create(debate=finished_debate, judge=bob, shown_first=0, p_a=0.7, p_b=0.3, reason="x", correct=True)
    other = make_debate(seed=5)
    form = AssignmentAdminForm(data={"debate": other.pk, "judge": bob.pk, "shown_first": 0})
    assert not form.is_valid()
    assert "same-question" in str(form.errors)
