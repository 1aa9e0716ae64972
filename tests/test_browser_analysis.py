"""Issue 15 in a browser: analysis tables sort on a click, plots show hover values and links from
inside the page, and Cancel on a tournament looks dangerous."""

from __future__ import annotations

import os

import pytest

from arena.models import Tournament
from tests.test_browser_researcher import page  # noqa: F401 - the Playwright page fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def _sign_in(page, server) -> None:  # type: ignore[no-untyped-def]
    from arena_test_support import PASSWORD

    page.goto(f"{server.url}/accounts/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("#sign-in")
    page.wait_for_url(f"{server.url}/debates/")


def test_tables_sort_and_plots_hover_and_link(page, daphne_server, alice, question) -> None:  # type: ignore[no-untyped-def]
    from tests.judging.test_analysis import _simulate

    tournament = _simulate(question, 200)
    _sign_in(page, daphne_server)
    page.goto(f"{daphne_server.url}/analysis/?tournament={tournament.pk}&rounds=10")  # type: ignore[attr-defined]
    names = "#ratings-table tbody tr td:nth-child(2)"
    assert page.locator(names).all_inner_texts() == ["strong", "good", "fair", "weak"]  # type: ignore[attr-defined]
    page.click("#ratings-table th:has-text('Elo')")  # type: ignore[attr-defined]
    assert page.locator(names).all_inner_texts() == ["weak", "fair", "good", "strong"]  # type: ignore[attr-defined]
    page.click("#ratings-table th:has-text('Elo')")  # type: ignore[attr-defined]
    assert page.locator(names).all_inner_texts() == ["strong", "good", "fair", "weak"]  # type: ignore[attr-defined]
    # The plot is a live SVG document in the page: its points have titles and links to the debates.
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => { const d = document.querySelector('object.plot').contentDocument; return d && d.querySelector('title'); }"
    )
    title, href = page.evaluate(  # type: ignore[attr-defined]
        "() => { const d = document.querySelector('object.plot').contentDocument;"
        " const a = d.getElementsByTagNameNS('http://www.w3.org/2000/svg', 'a')[0];"
        " return [d.querySelector('g[id^=tip] title').textContent, a ? a.getAttributeNS('http://www.w3.org/1999/xlink', 'href') : d.documentElement.outerHTML.slice(0, 3000)]; }"
    )
    assert "Elo" in title and href.startswith(f"/debates/?tournament={tournament.pk}&debater="), href


def test_cancel_looks_dangerous(page, daphne_server, alice) -> None:  # type: ignore[no-untyped-def]
    tournament = Tournament.objects.create(name="t", config={}, status=Tournament.Status.RUNNING)
    _sign_in(page, daphne_server)
    page.goto(f"{daphne_server.url}/tournaments/{tournament.pk}/")  # type: ignore[attr-defined]
    colour = page.eval_on_selector("#t-cancel", "b => getComputedStyle(b).backgroundColor")  # type: ignore[attr-defined]
    pause = page.eval_on_selector("#t-pause", "b => getComputedStyle(b).backgroundColor")  # type: ignore[attr-defined]
    assert colour == "rgb(185, 28, 28)" and pause != colour
