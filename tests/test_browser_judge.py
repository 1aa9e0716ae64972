"""A judge in a real browser: Chromium driven by Playwright against Daphne and a Celery worker."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from arena import services
from arena.engine.protocol import Limits
from arena.models import Debate
from debaters.models import DebaterProfile

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Playwright's sync API runs an event loop in this thread; the ORM calls here are plain sync calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from arena_test_support import CHROMIUM_ARGS  # noqa: E402


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _sign_in(page, base_url: str, username: str) -> None:  # type: ignore[no-untyped-def]
    from arena_test_support import PASSWORD

    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("#sign-in")
    page.wait_for_url(f"{base_url}/judge/")


@pytest.mark.slow
def test_it_lets_a_judge_watch_a_debate_stream_and_give_a_verdict(
    browser, daphne_server, celery_worker_proc, bob, question, profile  # type: ignore[no-untyped-def]
) -> None:
    from conftest_paths import ARTIFACTS

    debate = services.create_debate(
        question=question,
        debater_a=profile,
        debater_b=profile,
        limits=Limits(rounds=1, max_tokens=48, word_limit=60, context_tokens=300),
        judges=[bob],
        seed=3,
    )
    page = browser.new_page(viewport={"width": 1100, "height": 1400})  # type: ignore[attr-defined]
    _sign_in(page, daphne_server.url, "bob")
    page.click(f"a[href='/judge/debates/{debate.pk}/']")
    page.wait_for_selector("article.turn.streaming", timeout=120_000)
    page.wait_for_function("document.getElementById('debate-status').textContent === 'finished'", timeout=300_000)
    assert page.locator("article.turn").count() == 2
    streamed = [page.locator(f"article.turn[data-turn='{i}'] .body").inner_text() for i in (0, 1)]
    stored = [t.text for t in Debate.objects.get(pk=debate.pk).turns.order_by("index")]
    assert [s.strip() for s in streamed] == [s.strip() for s in stored]
    assert question.answers[question.correct_index] in page.content()  # both answers are shown...
    assert page.locator("#reveal").count() == 0  # ...but not which is right
    page.fill("#p-first", "0.7")
    assert page.input_value("#p-second") == "0.30"
    page.fill("#reason", "The first answer's quotes were verified and specific.")
    page.click("#submit-verdict")
    page.wait_for_selector("#reveal")
    assert page.locator("#gold-answer").inner_text().endswith(question.answers[question.correct_index])
    assert page.locator("#log-score").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "judge-page.png"), full_page=True)
    verdict = debate.verdicts.get()
    assert verdict.judge == bob
    assert abs(verdict.p_a + verdict.p_b - 1) < 1e-9


def test_it_shows_model_output_as_text_never_as_markup(browser, daphne_server, bob, question) -> None:  # type: ignore[no-untyped-def]
    hostile = 'Look: <script>window.pwned=1</script><img src=x onerror="window.pwned=2"> <b>bold</b>'
    profile = DebaterProfile.objects.create(name="hostile", backend="scripted", model="script", options={"text": hostile})
    from arena import worker_loop
    from arena.runner import run_debate

    debate = services.create_debate(
        question=question, debater_a=profile, debater_b=profile,
        limits=Limits(rounds=1, max_tokens=64, word_limit=60, context_tokens=200), judges=[bob], enqueue=False,
    )
    worker_loop.run(run_debate(debate.pk, "test-owner"))
    page = browser.new_page()  # type: ignore[attr-defined]
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    _sign_in(page, daphne_server.url, "bob")
    page.goto(f"{daphne_server.url}/judge/debates/{debate.pk}/")
    page.wait_for_function("document.querySelectorAll('article.turn').length === 2")
    body = page.locator("article.turn[data-turn='0'] .body")
    assert body.inner_text().strip() == hostile
    assert body.locator("script, img, b").count() == 0
    assert page.evaluate("window.pwned") is None
    assert dialogs == []
