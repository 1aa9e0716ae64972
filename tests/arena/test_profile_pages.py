"""Profile pages: researchers only, validation that names the field, no key stored, versions once used."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from arena_test_support import signed_in

from arena import profiles
from debaters.models import DebaterProfile
from judging.models import JudgeProfile, ProfileCheck, Verdict

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def _debater_post(**changes: str) -> dict[str, str]:
    data = {
        "name": "remote-llama",
        "description": "Llama on the GPU box",
        "backend": "openai",
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "base_urls": "http://gpu1:8000/v1\nhttp://gpu2:8000/v1",
        "api_key_env": "VLLM_API_KEY",
        "dtype": "",
        "other_options": '{"timeout_s": 30}',
        "max_tokens": "200",
        "temperature": "0.5",
        "top_p": "",
        "seed": "",
        "stop": "</speech>",
        "context_tokens": "4000",
    }
    data.update(changes)
    return data


def _judge_post(**changes: str) -> dict[str, str]:
    data = {
        "name": "remote-judge",
        "backend": "openai",
        "model": "judge-model",
        "base_urls": "http://gpu1:8000/v1",
        "api_key_env": "",
        "dtype": "",
        "other_options": "",
        "prompt_version": "v2",
        "max_cot_tokens": "128",
    }
    data.update(changes)
    return data


def _field_error(response, field: str) -> str:  # type: ignore[no-untyped-def]
    form = response.context["form"]
    return " ".join(form.errors.get(field, []))


# --- Who may come in ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/profiles/", "/profiles/debaters/new/", "/profiles/judges/new/"],
)
def test_it_forbids_judges_and_sends_anonymous_visitors_to_sign_in(bob, path: str) -> None:
    assert signed_in(bob).get(path).status_code == 403
    anonymous = Client().get(path)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("login"))


def test_it_shows_researchers_both_kinds_of_profile(alice) -> None:
    response = signed_in(alice).get("/profiles/")

    assert response.status_code == 200
    body = response.content.decode()
    assert "smollm2-embedded" in body and "smollm2-judge" in body


def test_it_forbids_a_judge_to_test_a_profile_or_read_a_test(bob, alice, profile) -> None:
    check = ProfileCheck.objects.create(debater=profile, prompt="hi", spec={})

    assert signed_in(bob).post(f"/profiles/debaters/{profile.pk}/test/").status_code == 403
    assert signed_in(bob).get(f"/profiles/checks/{check.pk}/").status_code == 403
    assert ProfileCheck.objects.count() == 1


def test_it_refuses_a_post_without_the_csrf_token(alice) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    response = client.post("/profiles/debaters/new/", _debater_post())

    assert response.status_code == 403
    assert not DebaterProfile.objects.filter(name="remote-llama").exists()


# --- Creating -------------------------------------------------------------------------------------


def test_it_creates_a_debater_profile_from_the_fields(alice) -> None:
    response = signed_in(alice).post("/profiles/debaters/new/", _debater_post())

    created = DebaterProfile.objects.get(name="remote-llama")
    assert response.status_code == 302
    assert response["Location"] == f"/profiles/debaters/{created.pk}/"
    assert created.options == {
        "base_urls": ["http://gpu1:8000/v1", "http://gpu2:8000/v1"],
        "api_key_env": "VLLM_API_KEY",
        "timeout_s": 30,
    }
    assert created.sampling == {"max_tokens": 200, "temperature": 0.5, "stop": ["</speech>"]}
    assert (created.context_tokens, created.lineage, created.version) == (4000, "remote-llama", 1)


def test_it_creates_an_ai_judge_profile(alice) -> None:
    response = signed_in(alice).post("/profiles/judges/new/", _judge_post(chain_of_thought="on", dtype="bfloat16"))

    judge = JudgeProfile.objects.get(name="remote-judge")
    assert response.status_code == 302
    assert judge.options == {"base_urls": ["http://gpu1:8000/v1"], "dtype": "bfloat16"}
    assert judge.chain_of_thought and not judge.clamp


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"temperature": "7"}, "temperature", "less than or equal to 5"),
        ({"max_tokens": "0"}, "max_tokens", "greater than or equal to 1"),
        ({"base_urls": "gpu1:8000/v1"}, "base_urls", "must start with http:// or https://"),
        ({"api_key_env": "sk-live-1234567890abcdef"}, "api_key_env", "not the key itself"),
        ({"other_options": '{"api_key": "sk-1"}'}, "other_options", "never stored"),
        ({"other_options": '{"base_urls": ["http://x/v1"]}'}, "other_options", "in its own field"),
        ({"other_options": "{oops"}, "other_options", "not valid JSON"),
        ({"backend": "nonesuch"}, "backend", "nonesuch"),
        ({"name": "has spaces"}, "name", "letters"),
        # What the backend accepts (debaters.backends.limits), on the field it concerns.
        ({"temperature": "3"}, "temperature", "2"),
        ({"base_urls": ""}, "base_urls", "base_urls"),
    ],
)
def test_it_names_the_bad_field_and_saves_nothing(alice, changes: dict[str, str], field: str, words: str) -> None:
    response = signed_in(alice).post("/profiles/debaters/new/", _debater_post(**changes))

    assert response.status_code == 400
    assert words in _field_error(response, field)
    assert f'data-field="{field}"' in response.content.decode()
    assert not DebaterProfile.objects.filter(name="remote-llama").exists()


def test_it_refuses_a_name_that_is_taken(alice, profile) -> None:
    response = signed_in(alice).post("/profiles/debaters/new/", _debater_post(name=profile.name))

    assert response.status_code == 400
    assert "already exists" in _field_error(response, "name")


def test_it_never_stores_the_api_key_itself(alice, monkeypatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "sk-the-real-secret")

    signed_in(alice).post("/profiles/debaters/new/", _debater_post())

    created = DebaterProfile.objects.get(name="remote-llama")
    assert "sk-the-real-secret" not in repr(created.__dict__)


# --- Editing and versions --------------------------------------------------------------------------


def test_it_edits_a_profile_no_debate_used_in_place(alice) -> None:
    client = signed_in(alice)
    client.post("/profiles/debaters/new/", _debater_post())
    created = DebaterProfile.objects.get(name="remote-llama")

    response = client.post(f"/profiles/debaters/{created.pk}/edit/", _debater_post(temperature="0.2", name="ignored"))

    assert response.status_code == 302
    created.refresh_from_db()
    assert (created.name, created.version, created.sampling["temperature"]) == ("remote-llama", 1, 0.2)
    assert DebaterProfile.objects.filter(lineage="remote-llama").count() == 1


def test_it_saves_an_edit_of_a_used_profile_as_the_next_version(alice, make_debate, profile) -> None:
    debate = make_debate()
    before = (profile.name, profile.sampling, profile.options, profile.context_tokens)
    client = signed_in(alice)
    form = client.get(f"/profiles/debaters/{profile.pk}/edit/").context["form"]
    assert form.initial["name"] == f"{profile.lineage}-v2"
    data = {key: "" if value is None else str(value) for key, value in form.initial.items()}
    data.update(temperature="0.1", name=f"{profile.lineage}-v2")

    response = client.post(f"/profiles/debaters/{profile.pk}/edit/", data)

    assert response.status_code == 302, response.context["form"].errors
    new = DebaterProfile.objects.get(name=f"{profile.lineage}-v2")
    assert (new.lineage, new.version, new.sampling["temperature"]) == (profile.lineage, 2, 0.1)
    assert new.options == profile.options and new.context_tokens == profile.context_tokens
    profile.refresh_from_db()
    assert (profile.name, profile.sampling, profile.options, profile.context_tokens) == before
    debate.refresh_from_db()
    assert debate.debater_a_id == profile.pk


def test_it_refuses_an_edit_that_changes_nothing(alice, make_debate, profile) -> None:
    make_debate()

    with pytest.raises(ValidationError, match="nothing changed"):
        profiles.save_edit(profile, {"sampling": profile.sampling})

    assert DebaterProfile.objects.filter(lineage=profile.lineage).count() == 1


def test_it_versions_a_judge_profile_once_it_gave_a_verdict(finished_debate) -> None:
    judge = JudgeProfile.objects.create(name="j", backend="scripted", model="m")
    Verdict.objects.create(
        debate=finished_debate, kind=Verdict.Kind.AI, ai_judge=judge, judge_label=judge.label, p_a=0.7, p_b=0.3,
        correct=True, shown_first=0,
    )

    new = profiles.save_edit(judge, {"clamp": True})

    judge.refresh_from_db()
    assert (new.name, new.version, new.clamp) == ("j-v2", 2, True)
    assert judge.clamp is False


def test_it_counts_a_judge_profile_named_by_a_tournament_as_used() -> None:
    from arena.models import Tournament

    judge = JudgeProfile.objects.create(name="panel-judge", backend="scripted", model="m")
    assert not profiles.is_used(judge)

    Tournament.objects.create(name="t", config={"judges": ["panel-judge"]})

    assert profiles.is_used(judge)


def test_it_queues_a_test_of_the_profile_with_what_it_will_run(alice, profile, django_capture_on_commit_callbacks, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sent: list[tuple[str, list[int]]] = []
    monkeypatch.setattr("judging.profile_checks.enqueue", lambda name, *args: sent.append((name, list(args))))

    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in(alice).post(f"/profiles/debaters/{profile.pk}/test/")

    check = ProfileCheck.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/profiles/debaters/{profile.pk}/?check={check.pk}#check"
    assert sent == [("judging.tasks.run_profile_check_task", [check.pk])]
    assert check.status == ProfileCheck.Status.QUEUED
    assert check.spec == {"backend": profile.backend, "model": profile.model, "options": profile.options, "sampling": profile.sampling}


def test_it_shows_a_tests_reply_as_text_and_serves_it_to_the_page_script(alice, profile) -> None:
    check = ProfileCheck.objects.create(
        debater=profile, prompt="hi", spec={}, status=ProfileCheck.Status.OK, reply="<script>alert(1)</script>",
        first_token_s=0.25, tokens_per_s=12.5, prompt_tokens=30, completion_tokens=8,
    )
    client = signed_in(alice)

    page = client.get(f"/profiles/debaters/{profile.pk}/").content.decode()
    status = client.get(f"/profiles/checks/{check.pk}/").json()

    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert status["done"] and status["reply"] == "<script>alert(1)</script>"
    assert (status["first_token_s"], status["tokens_per_s"], status["completion_tokens"]) == (0.25, 12.5, 8)
