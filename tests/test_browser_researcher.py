"""A researcher starts a debate from the browser; it is queued to Celery, never run in the request."""

from __future__ import annotations

import os

import pytest

from arena.models import Debate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def page(chromium_page):  # type: ignore[no-untyped-def]
    return chromium_page


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
