"""Tournament pages: the form (YAML or fields), the live progress JSON, and the control buttons."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from arena.models import Question, Tournament
from debaters.models import DebaterProfile
from judging.models import JudgeProfile, Study

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


# --- human verdicts from the form's fields (the YAML human: block) -------------------------------


def _fields(question: Question, **extra: object) -> dict[str, object]:
    p1, p2 = DebaterProfile.objects.filter(name__in=["p1", "p2"]).order_by("name")
    return {
        "name": "with-humans",
        "question_set": question.question_set.pk,
        "debaters": [p1.pk, p2.pk],
        "protocols": ["debate"],
        "judges": [JudgeProfile.objects.get(name="pj").pk],
        "rounds": 1,
        "max_tokens": 12,
        "word_limit": 20,
        "context_tokens": 120,
        "seed": 0,
        "chunk_size": 4,
        **extra,
    }


HUMAN_FIELDS = {
    "human": "on",
    "human_fraction": "0.5",
    "human_verdicts": "2",
    "human_mode": "live",
    "human_lease": "900",
}


def test_the_fields_ask_for_human_verdicts_as_the_yaml_block_does(
    client: Client, alice: User, profiles: None, question: Question
) -> None:
    client.force_login(alice)
    form = client.get("/tournaments/").content.decode()
    assert 'name="human_lease"' in form and "ARENA_JUDGE_LEASE_SECONDS" in form  # the help text is shown
    response = client.post("/tournaments/", _fields(question, **HUMAN_FIELDS))
    assert response.status_code == 302, response.content.decode()[-2000:]
    tournament = Tournament.objects.get(name="with-humans")
    study = Study.objects.get(tournament=tournament)
    assert (study.sample_fraction, study.verdicts_per_debate, study.mode, study.lease_seconds) == (0.5, 2, "live", 900)
    assert tournament.config["human"] == {
        "fraction": 0.5,
        "verdicts": 2,
        "mode": "live",
        "distinct_story": True,
        "per_judge_cap": None,
        "leaderboard": False,
        "lease_seconds": 900,
    }


def test_human_fields_left_empty_take_the_yaml_defaults(
    client: Client, alice: User, profiles: None, question: Question
) -> None:
    client.force_login(alice)
    empty = {"human_fraction": "", "human_verdicts": "", "human_distinct_story": "", "human_per_judge_cap": ""}
    response = client.post("/tournaments/", _fields(question, human="on", **empty))
    assert response.status_code == 302
    study = Study.objects.get(tournament__name="with-humans")
    assert (study.sample_fraction, study.verdicts_per_debate, study.mode, study.lease_seconds) == (1.0, 1, "offline", None)
    # The exposure rule stays on, no cap, no leaderboard: the YAML block's defaults.
    assert (study.distinct_story, study.per_judge_cap, study.leaderboard) == (True, None, False)


def test_a_post_without_the_rule_fields_keeps_one_story_per_judge(
    client: Client, alice: User, profiles: None, question: Question
) -> None:
    # A client that never sends the new fields (an older page, a script) must not turn the rule off.
    client.force_login(alice)
    assert client.post("/tournaments/", _fields(question, **HUMAN_FIELDS)).status_code == 302
    study = Study.objects.get(tournament__name="with-humans")
    assert (study.distinct_story, study.per_judge_cap, study.leaderboard) == (True, None, False)


RULE_FIELDS = {"human_distinct_story": "false", "human_per_judge_cap": "3", "human_leaderboard": "on"}


def test_the_story_rule_cap_and_leaderboard_fields_reach_the_study(
    client: Client, alice: User, profiles: None, question: Question
) -> None:
    client.force_login(alice)
    form = client.get("/tournaments/").content.decode()
    for name in RULE_FIELDS:
        assert f'name="{name}"' in form
    # The help texts say the rule and why.
    assert "never judges two debates on the same story" in form and "cannot dominate the study" in form
    assert '<option value="true" selected>yes</option>' in form  # the rule is on unless turned off
    fields = _fields(question, **HUMAN_FIELDS, **RULE_FIELDS)
    preview = client.post("/tournaments/", {**fields, "preview": "1"}).content.decode()
    assert '<strong id="preview-human">4 human verdicts</strong>' in preview
    assert not Tournament.objects.exists()
    response = client.post("/tournaments/", fields)
    assert response.status_code == 302, response.content.decode()[-2000:]
    tournament = Tournament.objects.get(name="with-humans")
    study = Study.objects.get(tournament=tournament)
    assert (study.distinct_story, study.per_judge_cap, study.leaderboard) == (False, 3, True)
    config = tournament.config["human"]
    assert (config["distinct_story"], config["per_judge_cap"], config["leaderboard"]) == (False, 3, True)


@pytest.mark.parametrize("cap", ["0", "-2", "x", "2.5"])
def test_a_bad_per_judge_cap_is_refused_by_its_label_and_nothing_is_created(
    client: Client, alice: User, profiles: None, question: Question, cap: str
) -> None:
    client.force_login(alice)
    response = client.post("/tournaments/", _fields(question, **HUMAN_FIELDS, human_per_judge_cap=cap))
    assert response.status_code == 200
    html = response.content.decode().replace("&quot;", '"')
    # One wording whether Django (not a number) or the human: block's validation (not positive) refuses it.
    assert '"Per-judge cap" must be a positive integer (or left empty)' in html
    assert not Tournament.objects.exists() and not Study.objects.exists()


def test_without_the_box_ticked_no_human_study_is_made(
    client: Client, alice: User, profiles: None, question: Question
) -> None:
    client.force_login(alice)
    fields = {k: v for k, v in HUMAN_FIELDS.items() if k != "human"}
    assert client.post("/tournaments/", _fields(question, **fields)).status_code == 302
    assert Tournament.objects.filter(name="with-humans").exists()
    assert not Study.objects.exists()
    assert "human" not in Tournament.objects.get(name="with-humans").config


def test_bad_human_fields_are_named_by_their_labels_and_nothing_is_created(
    client: Client, alice: User, profiles: None, question: Question
) -> None:
    client.force_login(alice)
    bad = {**HUMAN_FIELDS, "human_fraction": "1.5", "human_verdicts": "0", "human_lease": "10"}
    response = client.post("/tournaments/", _fields(question, **bad))
    assert response.status_code == 200
    html = response.content.decode().replace("&quot;", '"')
    assert '"Share of debates judged by humans" must be a number above 0 and at most 1' in html
    assert '"Human verdicts per debate" must be an integer from 1 to 50' in html
    assert '"Lease (seconds)" must be an integer from 60 to 604800' in html
    assert not Tournament.objects.exists() and not Study.objects.exists()


def test_the_preview_counts_the_human_verdicts_too(
    client: Client, alice: User, profiles: None, question: Question
) -> None:
    client.force_login(alice)
    response = client.post("/tournaments/", _fields(question, preview="1", **HUMAN_FIELDS))
    html = response.content.decode()
    # 4 debates (two debaters, each on both sides, on the one question); half of them, 2 verdicts each.
    assert '<strong id="preview-human">4 human verdicts</strong>' in html
    assert not Tournament.objects.exists()


def test_a_yaml_lease_reaches_the_study_and_a_bad_one_is_refused(
    client: Client, alice: User, profiles: None
) -> None:
    client.force_login(alice)
    good = YAML + "human: {fraction: 1, verdicts: 1, lease_seconds: 120}\n"
    assert client.post("/tournaments/", {"definition": good}).status_code == 302
    assert Study.objects.get().lease_seconds == 120
    bad = YAML.replace("page-test", "page-test-2") + "human: {lease_seconds: 5}\n"
    html = client.post("/tournaments/", {"definition": bad}).content.decode()
    assert "human.lease_seconds must be an integer from 60 to 604800" in html
