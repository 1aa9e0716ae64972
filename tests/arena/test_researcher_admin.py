"""The researcher role in the Django admin: view everything, change what their work defines, no user admin."""

from __future__ import annotations

import importlib
import io
import json

import pytest
from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client

from arena.models import Constitution, Question
from debaters.models import DebaterProfile

pytestmark = pytest.mark.django_db


@pytest.fixture
def researcher_client() -> Client:
    """Signed in as the demo researcher that ``setup_demo`` creates, with the password it stored."""
    call_command("setup_demo", stdout=io.StringIO())
    credentials = json.loads((settings.DATA_DIR / "demo-credentials.json").read_text())
    client = Client()
    assert client.login(username="researcher", password=credentials["researcher"])
    return client


def test_it_shows_the_demo_researcher_the_arenas_models_and_not_the_users(researcher_client: Client) -> None:
    body = researcher_client.get("/admin/").content.decode()

    for name in ("Debater profiles", "Judge profiles", "Questions", "Question sets", "Constitutions", "Debates", "Verdicts"):
        assert f">{name}<" in body, name
    assert ">Users<" not in body and ">Groups<" not in body
    assert researcher_client.get("/admin/auth/user/").status_code == 403
    assert researcher_client.get("/admin/auth/group/").status_code == 403


def test_it_lets_the_researcher_change_profiles_questions_and_constitutions(researcher_client: Client) -> None:
    profile = DebaterProfile.objects.get(name="smollm2-embedded")
    question = Question.objects.first()
    assert question is not None
    constitution = Constitution.objects.first()
    assert constitution is not None

    for path in (
        f"/admin/debaters/debaterprofile/{profile.pk}/change/",
        f"/admin/arena/question/{question.pk}/change/",
        f"/admin/arena/constitution/{constitution.pk}/change/",
        "/admin/judging/judgeprofile/add/",
        "/admin/arena/questionset/add/",
    ):
        response = researcher_client.get(path)
        assert response.status_code == 200, path
        assert 'name="_save"' in response.content.decode(), path


def test_it_lets_the_researcher_only_view_debates_and_verdicts_and_delete_nothing(researcher_client: Client) -> None:
    question = Question.objects.first()
    assert question is not None

    assert researcher_client.get("/admin/judging/verdict/").status_code == 200
    assert researcher_client.get("/admin/judging/verdict/add/").status_code == 403
    assert researcher_client.get("/admin/arena/debate/add/").status_code == 403
    assert researcher_client.get(f"/admin/arena/question/{question.pk}/delete/").status_code == 403


def test_it_keeps_the_demo_judge_out_of_the_admin() -> None:
    call_command("setup_demo", stdout=io.StringIO())
    credentials = json.loads((settings.DATA_DIR / "demo-credentials.json").read_text())
    client = Client()
    assert client.login(username="judge", password=credentials["judge"])

    response = client.get("/admin/")

    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_its_data_migration_grants_the_permissions_on_its_own() -> None:
    Group.objects.filter(name="researcher").delete()
    migration = importlib.import_module("arena.migrations.0004_researcher_permissions")

    migration.grant(apps, None)

    codenames = set(Group.objects.get(name="researcher").permissions.values_list("codename", flat=True))
    assert {
        "view_debate", "view_verdict", "change_debaterprofile", "add_judgeprofile", "change_question",
        "change_questionset", "change_constitution", "change_study",
    } <= codenames
    assert not {c for c in codenames if c.startswith("delete_")}
    assert not {"view_user", "change_user", "change_group"} & codenames
    assert "change_debate" not in codenames and "change_verdict" not in codenames


def test_it_opens_a_profile_that_a_debate_used_read_only(researcher_client: Client, make_debate) -> None:  # type: ignore[no-untyped-def]
    debate = make_debate()
    profile = debate.debater_a
    unused = DebaterProfile.objects.create(name="unused", backend="transformers", model="embedded")

    frozen = researcher_client.get(f"/admin/debaters/debaterprofile/{profile.pk}/change/").content.decode()
    editable = researcher_client.get(f"/admin/debaters/debaterprofile/{unused.pk}/change/").content.decode()

    assert 'name="model"' not in frozen and 'name="sampling"' not in frozen
    assert 'name="model"' in editable and 'name="version"' not in editable
