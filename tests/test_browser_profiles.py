"""A researcher creates a debater profile in the browser, presses Test, and reads the model's reply."""

from __future__ import annotations

import os

import pytest

from debaters.models import DebaterProfile
from judging.models import ProfileCheck

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def test_it_creates_a_profile_and_tests_it_on_the_embedded_model(chromium_page, daphne_server, celery_worker_proc, alice) -> None:  # type: ignore[no-untyped-def]
    from arena_test_support import PASSWORD

    page = chromium_page
    url = daphne_server.url
    page.goto(f"{url}/accounts/login/")  # type: ignore[attr-defined]
    page.fill("input[name=username]", "alice")  # type: ignore[attr-defined]
    page.fill("input[name=password]", PASSWORD)  # type: ignore[attr-defined]
    page.click("#sign-in")  # type: ignore[attr-defined]
    page.wait_for_url(f"{url}/debates/")  # type: ignore[attr-defined]
    page.click("text=Profiles")  # type: ignore[attr-defined]
    page.click("#new-debaters")  # type: ignore[attr-defined]

    # A bad value first: the form names the field and keeps what was typed.
    page.fill("input[name=name]", "greedy-smollm2")  # type: ignore[attr-defined]
    page.select_option("select[name=backend]", "transformers")  # type: ignore[attr-defined]
    page.fill("input[name=model]", "embedded")  # type: ignore[attr-defined]
    page.fill("textarea[name=other_options]", '{"device": "cpu"}')  # type: ignore[attr-defined]
    page.fill("input[name=api_key_env]", "sk-not-a-variable")  # type: ignore[attr-defined]
    page.fill("input[name=temperature]", "0")  # type: ignore[attr-defined]
    page.fill("input[name=context_tokens]", "800")  # type: ignore[attr-defined]
    page.click("#save-profile")  # type: ignore[attr-defined]
    assert "not the key itself" in page.locator("[data-field=api_key_env]").inner_text()  # type: ignore[attr-defined]
    assert page.input_value("input[name=name]") == "greedy-smollm2"  # type: ignore[attr-defined]

    page.fill("input[name=api_key_env]", "")  # type: ignore[attr-defined]
    page.click("#save-profile")  # type: ignore[attr-defined]
    profile = DebaterProfile.objects.get(name="greedy-smollm2")
    page.wait_for_url(f"{url}/profiles/debaters/{profile.pk}/")  # type: ignore[attr-defined]
    assert profile.sampling == {"temperature": 0.0} and profile.options == {"device": "cpu"}

    page.click("#test-profile")  # type: ignore[attr-defined]
    check = page.locator(".profile-check").first  # type: ignore[attr-defined]
    # The worker loads the model and answers; the page polls until the test is done.
    page.wait_for_selector(".profile-check[data-done='1']", timeout=180_000)  # type: ignore[attr-defined]
    stored = ProfileCheck.objects.get(debater=profile)
    assert stored.status == ProfileCheck.Status.OK, stored.error
    assert check.locator("[data-out=status]").inner_text() == "ok"
    assert check.locator("[data-out=reply]").inner_text().strip() == stored.reply.strip() != ""
    assert check.locator("[data-out=first_token_s]").inner_text().endswith(" s")
    assert float(check.locator("[data-out=tokens_per_s]").inner_text()) > 0
    assert check.locator("[data-out=error]").inner_text() == ""
