"""A researcher starts a debate from the browser; it is queued to Celery, never run in the request."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from arena.models import Debate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def page(daphne_server) -> Iterator[object]:  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    from arena_test_support import CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        yield browser.new_page()
        browser.close()
        # Queries in the test ran while Playwright's event loop was set, in a context of their own
        # with its own connection: close it, or the test database cannot be dropped at the end.
        from django.db import connections

        connections.close_all()


def test_it_lets_a_researcher_start_a_debate_that_is_queued(page, daphne_server, alice, bob, question, profile) -> None:  # type: ignore[no-untyped-def]
    from arena_test_support import PASSWORD

    page.goto(f"{daphne_server.url}/accounts/login/")  # type: ignore[attr-defined]
    page.fill("input[name=username]", "alice")  # type: ignore[attr-defined]
    page.fill("input[name=password]", PASSWORD)  # type: ignore[attr-defined]
    page.click("#sign-in")  # type: ignore[attr-defined]
    page.wait_for_url(f"{daphne_server.url}/debates/")  # type: ignore[attr-defined]
    # No judge is pre-selected, and the question is found with the picker's search.
    assert not page.is_checked(f"input[name=judges][value='{bob.pk}']")  # type: ignore[attr-defined]
    page.fill("#question-search", question.question.split()[0] + " " + question.source_title)  # type: ignore[attr-defined]
    page.click(f"#question-results button[data-id='{question.pk}']")  # type: ignore[attr-defined]
    assert question.question in page.locator("#question-chosen").inner_text()  # type: ignore[attr-defined]
    page.select_option("select[name=debater_a]", str(profile.pk))  # type: ignore[attr-defined]
    page.select_option("select[name=debater_b]", str(profile.pk))  # type: ignore[attr-defined]
    page.check(f"input[name=judges][value='{bob.pk}']")  # type: ignore[attr-defined]
    page.click(".more-settings summary")  # type: ignore[attr-defined]
    page.fill("input[name=rounds]", "3")  # type: ignore[attr-defined]
    page.click("#start-debate")  # type: ignore[attr-defined]
    page.wait_for_url(f"{daphne_server.url}/debates/*/")  # type: ignore[attr-defined]
    debate = Debate.objects.get()
    assert page.url.endswith(f"/debates/{debate.pk}/")  # type: ignore[attr-defined]
    # No worker runs in this test: the request only queued it.
    assert debate.status == Debate.Status.QUEUED
    assert debate.turns.count() == 0
    assert debate.rounds == 3
    assert list(debate.assignments.values_list("judge__username", flat=True)) == ["bob"]
    page.wait_for_function("document.body.dataset.ws === 'open'")  # type: ignore[attr-defined]
    assert page.locator("#debate-status").inner_text() == "queued"  # type: ignore[attr-defined]
