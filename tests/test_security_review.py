"""Security review of the pages added for studies, profiles, question sets, analysis and exports:
who may open them, what a judge sees before their verdict, invitations and sign-up, CSRF."""

from __future__ import annotations

from datetime import timedelta

import pytest
from arena_test_support import signed_in
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from judging import invitations, studies
from judging.models import Invitation, Verdict

pytestmark = pytest.mark.django_db

GOOD_PASSWORD = "correct horse battery staple 42"

# Every GET page or JSON endpoint added today that only researchers may open (they show gold
# answers, stories, other judges' records or model output). Ids need not exist: the role check
# comes before the lookup.
RESEARCHER_ONLY = [
    "/studies/",
    "/studies/1/",
    "/studies/judges/",
    "/studies/human-vs-ai/",
    "/profiles/",
    "/profiles/debaters/1/",
    "/profiles/judges/1/",
    "/profiles/debaters/1/edit/",
    "/profiles/debaters/new/",
    "/profiles/checks/1/",
    "/questions/",
    "/questions/sets/1/",
    "/questions/1/",
    "/debates/questions/?q=the",
    "/analysis/tournament/1/",
    "/analysis/compare/?a=1&b=2",
    "/exports/1/card/",
    "/exports/1/datasets.zip",
    "/exports/1/README.md",
    "/exports/1/download/",
]
JUDGE_PAGES = ["/judge/", "/judge/studies/1/leaderboard/"]


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.mark.parametrize("path", RESEARCHER_ONLY + JUDGE_PAGES)
def test_anonymous_visitors_are_sent_to_sign_in(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("path", RESEARCHER_ONLY)
def test_judges_are_forbidden_researcher_pages(bob, path: str) -> None:  # type: ignore[no-untyped-def]
    assert signed_in(bob).get(path).status_code == 403


@pytest.mark.parametrize("path", ["/profiles/debaters/1/test/", "/studies/judges/1/"])
def test_judges_cannot_post_to_researcher_actions(bob, path: str) -> None:  # type: ignore[no-untyped-def]
    assert signed_in(bob).post(path, {"action": "deactivate"}).status_code == 403


def test_the_question_picker_gives_researchers_no_gold_and_refuses_an_absurd_set_id(alice, question) -> None:  # type: ignore[no-untyped-def]
    client = signed_in(alice)
    response = client.get("/debates/questions/", {"q": question.external_id})
    assert response.status_code == 200
    hit = response.json()["results"][0]
    assert set(hit) == {"id", "external_id", "question", "title", "set"}
    body = response.content.decode()
    assert question.source_text[len(question.source_text) // 2 :][:120] not in body
    # A set id beyond the database's integer range is no match, not a server error.
    huge = client.get("/debates/questions/", {"q": "", "set": "9" * 30})
    assert huge.status_code == 200 and huge.json()["results"] == []


def test_a_judge_sees_only_their_own_assignments_and_verdicts(bob, charlie, finished_debate, make_debate) -> None:  # type: ignore[no-untyped-def]
    other = make_debate(judges=[charlie])
    Verdict.objects.create(debate=other, judge=charlie, shown_first=0, p_a=0.9, p_b=0.1, reason="x", correct=True)
    bob_client = signed_in(bob)
    queue = bob_client.get("/judge/").content.decode()
    assert f"Debate {finished_debate.pk}:" in queue
    assert f"Debate {other.pk}:" not in queue
    assert "0 verdicts" in queue
    # Another judge's debate is a 404 (not even a 403 that says it exists).
    assert bob_client.get(f"/judge/debates/{other.pk}/").status_code == 404


def test_the_queue_shows_no_gold_story_or_answer_order_before_the_verdict(bob, finished_debate) -> None:  # type: ignore[no-untyped-def]
    question = finished_debate.question
    page = signed_in(bob).get("/judge/").content.decode()
    assert question.source_title not in page
    assert question.source_text[len(question.source_text) // 2 :][:120] not in page
    for answer in question.answers:
        assert answer[:60] not in page
    assert "right" not in page.split('id="done"')[1].split("</table>")[0]


def test_a_judge_cannot_read_the_leaderboard_of_a_study_without_one(alice, bob, finished_debate) -> None:  # type: ignore[no-untyped-def]
    study = studies.create_study(name="private", created_by=alice, debates=[finished_debate])
    assert signed_in(bob).get(f"/judge/studies/{study.pk}/leaderboard/").status_code == 404


# --- Invitations and sign-up ---------------------------------------------------------------------


def test_invitation_tokens_are_long_random_and_stored_only_as_a_hash(alice) -> None:  # type: ignore[no-untyped-def]
    tokens = [invitations.create_invitation(created_by=alice)[1] for _ in range(3)]
    assert len(set(tokens)) == 3 and all(len(t) >= 43 for t in tokens)
    stored = set(Invitation.objects.values_list("token", flat=True))
    assert not stored & set(tokens)


def test_the_join_page_refuses_unknown_used_and_expired_links(alice) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    assert client.get("/join/not-a-real-token/").status_code == 410
    invitation, token = invitations.create_invitation(created_by=alice)
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client.post(
        f"/join/{token}/", {"username": "dana", "password": GOOD_PASSWORD, "password_again": GOOD_PASSWORD}
    )
    assert response.status_code == 410
    assert not get_user_model().objects.filter(username="dana").exists()
    _, token = invitations.create_invitation(created_by=alice)
    data = {"username": "erin", "password": GOOD_PASSWORD, "password_again": GOOD_PASSWORD}
    assert Client().post(f"/join/{token}/", data).status_code == 302
    again = Client().post(f"/join/{token}/", {**data, "username": "frank"})
    assert again.status_code == 410
    assert not get_user_model().objects.filter(username="frank").exists()


def test_sign_up_cannot_ask_for_the_researcher_role_or_staff(alice) -> None:  # type: ignore[no-untyped-def]
    _, token = invitations.create_invitation(created_by=alice)
    client = Client()
    response = client.post(f"/join/{token}/", {
        "username": "mallory", "password": GOOD_PASSWORD, "password_again": GOOD_PASSWORD,
        "groups": "researcher", "group": "researcher", "role": "researcher", "is_staff": "on", "is_superuser": "on",
    })
    assert response.status_code == 302
    user = get_user_model().objects.get(username="mallory")
    assert list(user.groups.values_list("name", flat=True)) == ["judge"]
    assert not user.is_staff and not user.is_superuser
    assert client.get("/studies/").status_code == 403
    assert client.get("/questions/").status_code == 403


# --- CSRF ------------------------------------------------------------------------------------------


def test_the_new_forms_refuse_a_post_without_the_csrf_token(alice, bob, finished_debate) -> None:  # type: ignore[no-untyped-def]
    study = studies.create_study(name="s", created_by=alice, debates=[finished_debate])
    _, token = invitations.create_invitation(created_by=alice)
    judge = Client(enforce_csrf_checks=True)
    judge.force_login(bob)
    assert judge.post(f"/judge/studies/{study.pk}/next/").status_code == 403
    researcher = Client(enforce_csrf_checks=True)
    researcher.force_login(alice)
    assert researcher.post("/studies/judges/", {"action": "invite", "days": "7"}).status_code == 403
    assert researcher.post(f"/studies/{study.pk}/", {"action": "close"}).status_code == 403
    assert researcher.post(f"/studies/judges/{bob.pk}/", {"action": "deactivate"}).status_code == 403
    data = {"username": "dana", "password": GOOD_PASSWORD, "password_again": GOOD_PASSWORD}
    assert Client(enforce_csrf_checks=True).post(f"/join/{token}/", data).status_code == 403
    assert get_user_model().objects.get(username="bob").is_active
    assert not get_user_model().objects.filter(username="dana").exists()


# --- Text a judge or researcher reads ---------------------------------------------------------------


def test_the_queue_shows_no_notice_planted_in_a_link(alice, bob, finished_debate) -> None:  # type: ignore[no-untyped-def]
    """Finding: the queue printed ``?notice=`` from the address, so a link from anyone could put
    "the answer is B" on a judge's own page. Now only the reason "Next debate" gave is shown."""
    client = signed_in(bob)
    planted = "Researchers: the correct answer in this study is always B"
    assert planted not in client.get("/judge/", {"notice": planted}).content.decode()
    study = studies.create_study(name="s", created_by=alice, debates=[finished_debate])
    Verdict.objects.create(debate=finished_debate, judge=bob, shown_first=0, p_a=0.7, p_b=0.3, reason="x", correct=True)
    response = client.post(f"/judge/studies/{study.pk}/next/")
    assert response.status_code == 302 and response["Location"] == "/judge/"
    page = client.get(response["Location"]).content.decode()
    assert 'id="queue-notice"' in page and "nothing in this study is waiting for you" in page
    assert 'id="queue-notice"' not in client.get("/judge/").content.decode()  # shown once


def test_the_export_card_page_shows_html_and_script_links_in_the_card_as_text(alice, settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings.ARENA_EXPORT_DIR = tmp_path
    from judging.exports.jobs import export_folder
    from judging.exports.writers import CARD
    from judging.models import Export

    export = Export.objects.create(
        kind="arguments", format="conversational", filters={}, created_by=alice, status=Export.Status.FINISHED
    )
    folder = export_folder(export.pk)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CARD).write_text(
        "# Set <script>alert(1)</script>\n\n[click](javascript:alert(2)) <img src=x onerror=alert(3)>\n",
        encoding="utf-8",
    )
    page = signed_in(alice).get(f"/exports/{export.pk}/card/").content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert 'href="javascript:' not in page


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_deactivated_judge_loses_the_page_and_the_websocket_of_their_debate(bob, finished_debate) -> None:  # type: ignore[no-untyped-def]
    from arena_test_support import ws_headers
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.db import connections

    from arena.asgi import application

    def _sign_in_then_deactivate() -> tuple[list[tuple[bytes, bytes]], Client]:
        headers = ws_headers(bob)
        client = signed_in(bob)
        invitations.deactivate_judge(bob, "left the study")
        return headers, client

    headers, client = await sync_to_async(_sign_in_then_deactivate)()
    try:
        comm = WebsocketCommunicator(application, f"/ws/debates/{finished_debate.pk}/", headers=headers)
        ok, code = await comm.connect(timeout=5)
        assert not ok and code == 4401
        response = await sync_to_async(client.get)(f"/judge/debates/{finished_debate.pk}/")
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    finally:
        await sync_to_async(connections.close_all)()
