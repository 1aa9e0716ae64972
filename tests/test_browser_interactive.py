"""A human judge in an interactive debate, in Chromium: the question typed between rounds reaches
both debaters' prompts, and their answers stream in. Scripted debaters keep it fast; the debate
runs on a real Celery worker and the page is served by Daphne."""

from __future__ import annotations

import os
import re

import pytest

from arena import services
from arena.engine.protocol import ProtocolSettings
from arena.models import Debate, JudgeQuestion
from debaters.models import DebaterProfile

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Playwright's sync API runs an event loop in this thread; the ORM calls here are plain sync calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

QUESTION = "<i>Which</i> night did the thump happen?"


def test_a_judge_asks_between_rounds_and_both_debaters_answer(  # type: ignore[no-untyped-def]
    browser, daphne_server, celery_worker_proc, bob, question
) -> None:
    from arena_test_support import PASSWORD
    from conftest_paths import ARTIFACTS

    speech = "I argue <quote>There was a thump.</quote> and the text supports my answer."
    profile = DebaterProfile.objects.create(
        name="interactive-script", backend="scripted", model="script", options={"text": speech, "delay_s": 0.01}
    )
    debate = services.create_debate(
        question=question,
        debater_a=profile,
        debater_b=profile,
        protocol="interactive",
        judges=[bob],
        seed=9,
        limits=ProtocolSettings(rounds=2, max_tokens=64, word_limit=60, context_tokens=200),
    )
    page = browser.new_page(viewport={"width": 1100, "height": 1500})  # type: ignore[attr-defined]
    page.goto(f"{daphne_server.url}/accounts/login/")
    page.fill("input[name=username]", "bob")
    page.fill("input[name=password]", PASSWORD)
    page.click("#sign-in")
    page.wait_for_url(f"{daphne_server.url}/judge/")
    page.goto(f"{daphne_server.url}/judge/debates/{debate.pk}/")

    # Round 1 streams in, then the debate waits and the page asks the judge for a question.
    page.wait_for_selector("#question-card:not([hidden])", timeout=60_000)
    page.wait_for_function("document.querySelectorAll('article.turn:not(.streaming)').length === 2", timeout=30_000)
    assert page.locator("#debate-status").inner_text() == "waiting"
    assert page.locator("#submit-verdict").is_disabled()
    assert debate.turns.count() == 2

    page.fill("#judge-question", QUESTION)
    page.click("#ask-question")
    page.wait_for_function("document.getElementById('debate-status').textContent === 'finished'", timeout=60_000)
    page.wait_for_function("document.querySelectorAll('article.turn').length === 4", timeout=10_000)

    # The question sits between the rounds, as text; round 2 streamed after it.
    shown = page.locator(".judge-question .body")
    assert shown.inner_text() == QUESTION
    assert shown.locator("i").count() == 0
    order = page.eval_on_selector_all("#transcript > *", "els => els.map(e => e.dataset.turn)")
    assert order == ["0", "1", "1.5", "2", "3"]
    assert page.locator("#question-card").is_hidden()

    asked = JudgeQuestion.objects.get(debate=debate)
    assert (asked.after_round, asked.text, asked.asked_by) == (1, QUESTION, bob)
    round_two = list(Debate.objects.get(pk=debate.pk).turns.filter(round=2))
    assert len(round_two) == 2 and {t.side for t in round_two} == {0, 1}
    for turn in round_two:
        assert f'The judge asked: "{QUESTION}"' in turn.prompt[-1]["content"]
    streamed = [page.locator(f"article.turn[data-turn='{t.index}'] .body").inner_text().strip() for t in round_two]
    # A committed speech is shown as segments: quote tags become marked spans.
    assert streamed == [re.sub(r"</?quote>", "", t.text).strip() for t in round_two]
    assert page.locator(f"article.turn[data-turn='{round_two[0].index}'] .quote.verified").count() == 1

    page.fill("#p-first", "0.7")
    page.fill("#reason", "Both debaters answered my question with the same verified quote.")
    page.click("#submit-verdict")
    page.wait_for_selector("#reveal")
    assert page.locator("#score").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "judge-interactive.png"), full_page=True)
