"""A profile's "Test": one short request through its real backend, run by a worker, timed and stored."""

from __future__ import annotations

import socket
import time

import pytest

from arena import worker_loop
from debaters.models import DebaterProfile
from debaters.profiles import default_profile
from judging.models import JudgeProfile, ProfileCheck
from judging.profile_checks import CHECK_MAX_TOKENS, request_check, run_check

pytestmark = pytest.mark.django_db(transaction=True)


def _check(profile: DebaterProfile | JudgeProfile) -> ProfileCheck:
    return ProfileCheck.objects.create(
        debater=profile if isinstance(profile, DebaterProfile) else None,
        judge=profile if isinstance(profile, JudgeProfile) else None,
        spec={
            "backend": profile.backend,
            "model": profile.model,
            "options": profile.options,
            "sampling": getattr(profile, "sampling", {}),
        },
        prompt="Say something.",
    )


def _run(check: ProfileCheck) -> ProfileCheck:
    worker_loop.run(run_check(check.pk), timeout=120)
    check.refresh_from_db()
    return check


def test_it_stores_the_reply_and_its_timings() -> None:
    profile = DebaterProfile.objects.create(
        name="scripted", backend="scripted", model="m", options={"text": "Quotes can be checked.", "delay_s": 0.02}
    )

    check = _run(_check(profile))

    assert check.status == ProfileCheck.Status.OK, check.error
    assert check.reply == "Quotes can be checked."
    assert (check.completion_tokens, check.error) == (4, "")
    assert check.first_token_s is not None and 0 <= check.first_token_s < 5
    # Three more words after the first, 20 ms apart: about 50 tokens/s, never infinite.
    assert check.tokens_per_s is not None and 10 < check.tokens_per_s < 200
    assert check.ready_s is not None and check.started_at and check.finished_at


def test_it_asks_an_ai_judge_for_its_letter_probabilities() -> None:
    judge = JudgeProfile.objects.create(name="scripted-judge", backend="scripted", model="m", options={"text": "A."})

    check = _run(_check(judge))

    assert check.status == ProfileCheck.Status.OK, check.error
    assert check.choice_probs == {"A": 0.5, "B": 0.5}


def test_it_shows_the_backends_error() -> None:
    profile = DebaterProfile.objects.create(name="broken", backend="scripted", model="m", options={"fail": "permanent"})

    check = _run(_check(profile))

    assert check.status == ProfileCheck.Status.FAILED
    assert check.error == "scripted permanent failure"
    assert check.reply == "" and check.finished_at is not None


def test_it_says_which_environment_variable_holds_no_key(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("ARENA_TEST_MISSING_KEY", raising=False)
    profile = DebaterProfile.objects.create(
        name="keyless",
        backend="openai",
        model="m",
        options={"base_urls": ["http://127.0.0.1:9/v1"], "api_key_env": "ARENA_TEST_MISSING_KEY"},
    )

    check = _run(_check(profile))

    assert check.status == ProfileCheck.Status.FAILED
    assert "ARENA_TEST_MISSING_KEY" in check.error and "not set" in check.error


def test_it_reports_a_server_that_is_not_there() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port once the socket is closed.
    profile = DebaterProfile.objects.create(
        name="nowhere", backend="openai", model="m", options={"base_urls": [f"http://127.0.0.1:{port}/v1"]}
    )

    check = _run(_check(profile))

    assert check.status == ProfileCheck.Status.FAILED
    assert "127.0.0.1" in check.error


def test_it_does_not_run_a_finished_check_again() -> None:
    profile = DebaterProfile.objects.create(name="scripted", backend="scripted", model="m")
    check = _check(profile)
    ProfileCheck.objects.filter(pk=check.pk).update(status=ProfileCheck.Status.OK, reply="first run")

    assert worker_loop.run(run_check(check.pk)) == "not queued"

    check.refresh_from_db()
    assert check.reply == "first run"


@pytest.mark.slow
def test_it_runs_through_a_celery_worker_on_the_embedded_model(celery_worker_proc) -> None:  # type: ignore[no-untyped-def]
    check = request_check(default_profile())

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        check.refresh_from_db()
        if check.done:
            break
        time.sleep(0.3)

    assert check.status == ProfileCheck.Status.OK, check.error or "the worker never finished the check"
    assert check.reply.strip()
    assert 0 < check.completion_tokens <= CHECK_MAX_TOKENS
    assert check.prompt_tokens and check.prompt_tokens > 5
    assert check.first_token_s and check.first_token_s > 0
    assert check.tokens_per_s and check.tokens_per_s > 0
