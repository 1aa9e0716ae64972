"""Human judging at scale in Chromium: a person joins through an invitation and judges with "Next
debate" (offline and live), an interactive question's deadline passes and the debate goes on, and
a researcher reads the judge-quality page and excludes a flagged judge."""

from __future__ import annotations

import os

import pytest
from django.utils import timezone

from arena import services
from arena.engine.protocol import Limits, ProtocolSettings
from arena.models import Debate, Turn
from debaters.models import DebaterProfile
from judging import studies
from judging.models import Assignment, Study, Verdict

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Playwright's sync API runs an event loop in this thread; the ORM calls here are plain sync calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from arena_test_support import PASSWORD  # noqa: E402

NEW_PASSWORD = "a long new judge password 7"


def _sign_in(page, base_url: str, username: str, landing: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("#sign-in")
    page.wait_for_url(f"{base_url}{landing}")


def _finished(question, profile) -> Debate:  # type: ignore[no-untyped-def]
    debate = services.create_debate(
        question=question, debater_a=profile, debater_b=profile, enqueue=False, seed=4,
        limits=Limits(rounds=1, max_tokens=24, word_limit=60, context_tokens=200),
    )
    now = timezone.now()
    for side in (0, 1):
        Turn.objects.create(debate=debate, index=side, round=1, side=side, text=f"Speech for answer {side + 1}.",
                            prompt=[], prompt_hash="x", started_at=now, finished_at=now)
    Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.FINISHED, started_at=now, finished_at=now)
    return debate


def test_an_invited_person_signs_up_and_judges_with_next_debate(  # type: ignore[no-untyped-def]
    browser, daphne_server, alice, question, profile
) -> None:
    from conftest_paths import ARTIFACTS

    debate = _finished(question, profile)
    study = studies.create_study(name="offline-study", created_by=alice, debates=[debate], mode=Study.Mode.OFFLINE)
    researcher = browser.new_page()  # type: ignore[attr-defined]
    _sign_in(researcher, daphne_server.url, "alice", "/debates/")
    researcher.goto(f"{daphne_server.url}/studies/judges/")
    researcher.fill("#invite-form input[name=note]", "for dana")
    researcher.select_option("#invite-form select[name=study]", str(study.pk))
    researcher.click("#invite")
    link = researcher.locator("#invitation-link").inner_text()
    assert link.startswith(f"{daphne_server.url}/join/")

    judge = browser.new_context().new_page()  # type: ignore[attr-defined]
    judge.goto(link)
    judge.fill("input[name=username]", "dana")
    judge.fill("input[name=password]", NEW_PASSWORD)
    judge.fill("input[name=password_again]", NEW_PASSWORD)
    judge.click("#join")
    judge.wait_for_url(f"{daphne_server.url}/judge/")
    assert "your study" in judge.locator(f"li[data-study='{study.pk}']").inner_text()
    judge.click(f"#next-{study.pk}")
    judge.wait_for_url(f"{daphne_server.url}/judge/debates/{debate.pk}/")
    judge.wait_for_function("document.querySelectorAll('article.turn').length === 2", timeout=30_000)
    judge.fill("#p-first", "0.8")
    judge.fill("#reason", "The first speech was the more specific of the two.")
    judge.click("#submit-verdict")
    judge.wait_for_selector("#reveal")
    judge.goto(f"{daphne_server.url}/judge/")
    assert judge.locator("#my-score").inner_text().startswith("1 verdict")
    # Nothing else in the study for dana: "Next debate" says so.
    judge.click(f"#next-{study.pk}")
    judge.wait_for_selector("#queue-notice")
    assert "nothing in this study is waiting for you" in judge.locator("#queue-notice").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    judge.screenshot(path=str(ARTIFACTS / "judge-queue-study.png"), full_page=True)

    # The link worked once.
    again = browser.new_context().new_page()  # type: ignore[attr-defined]
    again.goto(link)
    assert "already used" in again.locator("#join-error").inner_text()
    verdict = Verdict.objects.get(debate=debate)
    assert verdict.judge.username == "dana" and verdict.slot.entry.study == study  # type: ignore[union-attr]


def test_a_researcher_sees_a_guessing_judge_flagged_and_excludes_them(  # type: ignore[no-untyped-def]
    browser, daphne_server, alice, bob, charlie, question, profile
) -> None:
    gold = question.correct_index
    for i in range(12):
        debate = services.create_debate(
            question=question, debater_a=profile, debater_b=profile, enqueue=False, seed=i,
            limits=Limits(rounds=1, max_tokens=24, word_limit=60),
        )
        wrong = 0.2 if gold == 0 else 0.8
        Verdict.objects.create(debate=debate, judge=charlie, shown_first=0, p_a=wrong, p_b=1 - wrong, reason="r",
                               correct=False, time_spent_s=20.0 + i)
        if i < 2:
            Verdict.objects.create(debate=debate, judge=bob, shown_first=0, p_a=1 - wrong, p_b=wrong, reason="r", correct=True)
    page = browser.new_page(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    _sign_in(page, daphne_server.url, "alice", "/debates/")
    page.goto(f"{daphne_server.url}/studies/judges/")
    row = page.locator("tr[data-judge='charlie']")
    assert "flagged" in (row.get_attribute("class") or "")
    assert "flagged" in row.locator(".e-below").inner_text()
    assert "flagged" not in (page.locator("tr[data-judge='bob']").get_attribute("class") or "")
    row.locator("button.exclude").click()
    page.wait_for_load_state()
    assert "excluded" in page.locator("tr[data-judge='charlie']").inner_text()


@pytest.mark.slow
def test_next_debate_live_and_an_interactive_question_that_nobody_asks_in_time(  # type: ignore[no-untyped-def]
    browser, daphne_server, celery_worker_proc, alice, bob, question
) -> None:
    page = browser.new_page(viewport={"width": 1100, "height": 1400})  # type: ignore[attr-defined]
    _sign_in(page, daphne_server.url, "bob", "/judge/")
    # Created once the worker is up, and not queued: it starts when the judge is watching.
    profile = DebaterProfile.objects.create(
        name="live-script", backend="scripted", model="script",
        options={"text": "I argue <quote>There was a thump.</quote> for my answer.", "delay_s": 0.01},
    )
    debate = services.create_debate(
        question=question, debater_a=profile, debater_b=profile, protocol="interactive", enqueue=False, seed=8,
        limits=ProtocolSettings(rounds=2, max_tokens=64, word_limit=60, context_tokens=200),
    )
    study = studies.create_study(
        name="live-study", created_by=alice, debates=[debate], mode=Study.Mode.LIVE, question_deadline_s=5
    )
    page.reload()
    page.click(f"#next-{study.pk}")
    page.wait_for_url(f"{daphne_server.url}/judge/debates/{debate.pk}/")
    assert Assignment.objects.filter(debate=debate, judge=bob).exists()
    services.enqueue_debate(debate.pk)  # the debate starts while the judge watches

    page.wait_for_selector("#question-card:not([hidden])", timeout=60_000)
    assert "5 seconds" in page.locator("#question-deadline").inner_text()
    assert "without a question" in page.locator("#question-deadline").inner_text()
    # Nobody asks: the deadline passes and round 2 streams in without a question.
    page.wait_for_function("document.getElementById('debate-status').textContent === 'finished'", timeout=90_000)
    page.wait_for_function("document.querySelectorAll('article.turn').length === 4", timeout=10_000)
    debate.refresh_from_db()
    assert debate.settings["question_fallbacks"]["1"]["used"] == "none"
    assert not debate.judge_questions.exists()
    for turn in debate.turns.filter(round=2):
        assert "The judge asked" not in turn.prompt[-1]["content"]
    page.fill("#p-first", "0.6")
    page.fill("#reason", "Neither debater was asked anything; both quoted the thump.")
    page.click("#submit-verdict")
    page.wait_for_selector("#reveal")


def test_a_researcher_records_a_story_a_judge_read(  # type: ignore[no-untyped-def]
    browser, daphne_server, alice, charlie, question
) -> None:
    from judging.models import StoryExposure

    page = browser.new_page()  # type: ignore[attr-defined]
    _sign_in(page, daphne_server.url, "alice", "/debates/")
    page.goto(f"{daphne_server.url}/studies/judges/")
    page.click("#stories-charlie")
    page.wait_for_url(f"{daphne_server.url}/studies/judges/{charlie.pk}/stories/")
    page.fill("#story-form input[name=story]", question.source_title.lower())
    page.select_option("#story-form select[name=role]", "expert")
    page.click("#record-story")
    page.wait_for_selector("#messages")
    assert f"recorded: charlie read '{question.source_title}' as expert" in page.inner_text("#messages")
    assert page.locator(f'#exposures tr[data-story="{question.source_title}"]').count() == 1
    page.fill("#story-form input[name=story]", "No Such Story")
    page.click("#record-story")
    assert "no question in the arena comes from a story titled" in page.inner_text("#story-error")
    assert list(StoryExposure.objects.values_list("story", "role")) == [(question.source_title, "expert")]
