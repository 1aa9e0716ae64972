"""Tournament pages: the form (YAML or fields), the live progress JSON, and the control buttons."""

from __future__ import annotations

import pytest
from django.test import Client

from arena.models import Tournament
from debaters.models import DebaterProfile
from judging.models import JudgeProfile

pytestmark = pytest.mark.django_db

YAML = """
name: page-test
questions: {set: test-set}
debaters: [p1, p2]
judges: [pj]
limits: {rounds: 1, max_tokens: 12, word_limit: 20, context_tokens: 120}
"""


@pytest.fixture
def profiles(question):  # type: ignore[no-untyped-def]
    DebaterProfile.objects.create(name="p1", backend="scripted", model="a")
    DebaterProfile.objects.create(name="p2", backend="scripted", model="b")
    JudgeProfile.objects.create(name="pj", backend="scripted", model="j")


def test_a_yaml_definition_creates_and_starts_a_tournament(client, alice, profiles, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    client.force_login(alice)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post("/tournaments/", {"definition": YAML})
    tournament = Tournament.objects.get(name="page-test")
    assert response.status_code == 302 and response["Location"] == f"/tournaments/{tournament.pk}/"
    assert tournament.status == Tournament.Status.RUNNING and tournament.created_by == alice
    assert tournament.debates.count() == 4
    assert len(callbacks) == 1  # the dispatch task, queued once the tournament is committed
    page = client.get(f"/tournaments/{tournament.pk}/").content.decode()
    assert 'id="t-progress"' in page and 'id="t-pause"' in page and "csrfmiddlewaretoken" in page
    progress = client.get(f"/tournaments/{tournament.pk}/progress.json").json()
    assert progress["total"] == 4 and progress["queued"] == 4 and progress["status"] == "running"
    assert progress["turns_total"] == 8 and progress["verdicts_expected"] == 4


def test_the_fields_work_without_yaml(client, alice, profiles, question) -> None:  # type: ignore[no-untyped-def]
    client.force_login(alice)
    p1, p2 = DebaterProfile.objects.filter(name__in=["p1", "p2"]).order_by("name")
    response = client.post(
        "/tournaments/",
        {
            "name": "fields",
            "question_set": question.question_set.pk,
            "debaters": [p1.pk, p2.pk],
            "protocols": ["debate", "naive"],
            "judges": [JudgeProfile.objects.get(name="pj").pk],
            "rounds": 1, "max_tokens": 12, "word_limit": 20, "context_tokens": 120, "seed": 3, "chunk_size": 4,
        },
    )
    assert response.status_code == 302
    tournament = Tournament.objects.get(name="fields")
    assert tournament.debates.filter(protocol="debate").count() == 4
    assert tournament.debates.filter(protocol="naive").count() == 2
    assert tournament.config["chunk_size"] == 4


def test_a_bad_definition_shows_every_problem_and_creates_nothing(client, alice, profiles) -> None:  # type: ignore[no-untyped-def]
    client.force_login(alice)
    bad = YAML.replace("p2", "ghost").replace("rounds: 1", "rounds: 99")
    response = client.post("/tournaments/", {"definition": bad, "rounds": 2, "max_tokens": 120, "word_limit": 100, "seed": 0, "chunk_size": 8})
    assert response.status_code == 200
    html = response.content.decode()
    assert "unknown debater profile &#x27;ghost&#x27;" in html
    assert "rounds must be between 1 and 10" in html
    assert not Tournament.objects.exists()
    response = client.post("/tournaments/", {"definition": "name: [unclosed", "rounds": 2, "max_tokens": 120, "word_limit": 100, "seed": 0, "chunk_size": 8})
    assert "not valid YAML" in response.content.decode()


def test_pause_resume_cancel_buttons(alice, profiles) -> None:  # type: ignore[no-untyped-def]
    from arena import tournaments

    tournament = tournaments.create_tournament(tournaments.validate(tournaments.parse_yaml(YAML)))
    tournaments.start(tournament.pk, enqueue=False)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    # Without the CSRF token the button does nothing.
    assert strict.post(f"/tournaments/{tournament.pk}/pause/").status_code == 403
    page = strict.get(f"/tournaments/{tournament.pk}/")
    token = page.cookies["csrftoken"].value
    assert strict.post(f"/tournaments/{tournament.pk}/pause/", {"csrfmiddlewaretoken": token}).status_code == 302
    tournament.refresh_from_db()
    assert tournament.status == Tournament.Status.PAUSED
    assert strict.get(f"/tournaments/{tournament.pk}/pause/").status_code == 405
    assert strict.post(f"/tournaments/{tournament.pk}/pause/", {"csrfmiddlewaretoken": token}).status_code == 409
    assert strict.post(f"/tournaments/{tournament.pk}/resume/", {"csrfmiddlewaretoken": token}).status_code == 302
    assert strict.post(f"/tournaments/{tournament.pk}/cancel/", {"csrfmiddlewaretoken": token}).status_code == 302
    tournament.refresh_from_db()
    assert tournament.status == Tournament.Status.CANCELLED


def test_judges_cannot_see_or_run_tournaments(client, bob, profiles) -> None:  # type: ignore[no-untyped-def]
    client.force_login(bob)
    assert client.get("/tournaments/").status_code == 403
    assert client.post("/tournaments/", {"definition": YAML}).status_code == 403
    assert not Tournament.objects.exists()
