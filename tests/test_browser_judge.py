"""A judge in a real browser: Chromium driven by Playwright against Daphne and a Celery worker."""

from __future__ import annotations

import os
import re

import pytest

from arena import services
from arena.engine.protocol import Limits
from arena.models import Debate
from debaters.models import DebaterProfile

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Playwright's sync API runs an event loop in this thread; the ORM calls here are plain sync calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


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
    # The judge's transcript is in their own order (tests/judging/test_record_rules.py).
    from judging.judge_view import judge_view
    from judging.models import Assignment

    view = judge_view(debate, Assignment.objects.get(debate=debate, judge=bob).shown_first)
    stored = [t.text for t in sorted(Debate.objects.get(pk=debate.pk).turns.all(), key=lambda t: view.place(t.index))]
    # Quotes are shown as marked spans, without their tags.
    untagged = [re.sub(r"<\s*/?\s*quote\s*>", "", text, flags=re.IGNORECASE) for text in stored]
    assert [s.strip() for s in streamed] == [s.strip() for s in untagged]
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


def test_the_judge_page_speaks_in_the_judges_own_letters_and_opens_the_verdict_live(
    chromium_page, daphne_server, bob, question, profile  # type: ignore[no-untyped-def]
) -> None:
    """A judge shown answer 2 first: the opening round shows their A (stored side 1) first, nothing
    on the page names a stored side, a speech cut at its token limit is marked, and "the debate is
    not over yet" goes away when the debate ends, without a reload."""
    from django.utils import timezone

    from arena import worker_loop
    from arena.models import Turn
    from arena.streaming import DebateStream
    from judging.models import Assignment

    debate = services.create_debate(
        question=question, debater_a=profile, debater_b=profile,
        limits=Limits(rounds=1, max_tokens=24, word_limit=60, context_tokens=200), judges=[bob], enqueue=False,
    )  # fmt: skip
    Assignment.objects.filter(debate=debate, judge=bob).update(shown_first=1)
    now = timezone.now()
    # Round 1's two slots are indexed in the debate's drawn speaking order (answer first_side first).
    for side, text, finish in ((0, "For the first stored answer.", "stop"), (1, "For the second stored answer, and", "length")):
        Turn.objects.create(
            debate=debate, index=side ^ debate.first_side, round=1, side=side, text=text, prompt=[], prompt_hash="x",
            finish_reason=finish, started_at=now, finished_at=now,
        )  # fmt: skip
    Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.RUNNING, started_at=now)

    page = chromium_page
    _sign_in(page, daphne_server.url, "bob")
    page.goto(f"{daphne_server.url}/judge/debates/{debate.pk}/")
    page.wait_for_function("document.querySelectorAll('article.turn').length === 2")

    first, second = page.locator("article.turn").nth(0), page.locator("article.turn").nth(1)
    assert "Debater for A" in first.locator("header").inner_text()
    assert first.locator(".body").inner_text().strip() == "For the second stored answer, and"
    assert first.locator(".badge-cut").count() == 1 and second.locator(".badge-cut").count() == 0
    assert "Debater for B" in second.locator("header").inner_text()
    assert "answer-a" in (first.get_attribute("class") or "")
    html = page.content()
    assert "side-0" not in html and "side-1" not in html
    assert "not over yet" in page.locator("#verdict-closed").inner_text()
    assert page.locator("#submit-verdict").is_disabled()

    Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.FINISHED, finished_at=timezone.now())
    worker_loop.run(DebateStream(debate.pk).status("finished"))

    page.wait_for_selector("#verdict-closed", state="detached", timeout=20_000)
    assert page.locator("#submit-verdict").is_enabled()


def test_the_page_rebuilds_a_speech_from_batched_events_after_the_server_fell_behind(
    chromium_page, daphne_server, bob, question, profile  # type: ignore[no-untyped-def]
) -> None:
    """The web process stops (SIGSTOP) while the worker keeps publishing; when it runs again it
    sends what queued up as ``batch`` frames. The page applies their events in order, a reset
    among them included, and shows exactly the speech the deltas make."""
    import json
    import signal

    from django.utils import timezone

    from arena import worker_loop
    from arena.streaming import DebateStream

    debate = services.create_debate(
        question=question, debater_a=profile, debater_b=profile,
        limits=Limits(rounds=1, max_tokens=24, word_limit=60, context_tokens=200), judges=[bob], enqueue=False,
    )  # fmt: skip
    Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.RUNNING, started_at=timezone.now())
    frames: list[str] = []
    page = chromium_page
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))))
    _sign_in(page, daphne_server.url, "bob")
    page.goto(f"{daphne_server.url}/judge/debates/{debate.pk}/")
    page.wait_for_function("document.body.dataset.ws === 'open'")
    while not frames:  # the snapshot
        page.wait_for_timeout(50)

    void = [f"void{i} " for i in range(20)]
    kept = [f"kept{i} " for i in range(60)]
    stream = DebateStream(debate.pk, flush_ms=0)

    async def publish() -> None:
        await stream.start_turn(0, 1, 0)
        for chunk in void:
            await stream.push(0, chunk)
        await stream.reset_turn(0, "the model server failed")
        for chunk in kept:
            await stream.push(0, chunk)

    os.kill(daphne_server.proc.pid, signal.SIGSTOP)
    try:
        worker_loop.run(publish())
    finally:
        os.kill(daphne_server.proc.pid, signal.SIGCONT)

    body = page.locator("article.turn .body")
    page.wait_for_function("document.querySelector('article.turn .body')?.textContent.includes('kept59')")
    assert body.inner_text().strip() == "".join(kept).strip()
    assert page.locator("article.turn").count() == 1
    batches = [json.loads(f) for f in frames if f.startswith('{"type": "batch"')]
    assert batches, "what queued up while the server was stopped came in batch frames"
    assert sum(len(b["events"]) for b in batches) > len(batches)
