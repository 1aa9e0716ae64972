"""Constitution versions: immutable once used, edited into new versions, diffed, researchers only."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from arena.constitution import (
    DEFAULT_RULES,
    ConstitutionError,
    default_constitution,
    diff,
    ensure_editable,
    new_version,
    parse_principles_text,
    render_text,
)
from arena.models import Constitution

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def _edit(base: Constitution, **changes: object) -> Constitution:
    fields: dict[str, object] = {"preamble": base.preamble, "principles": base.principles, "rules": base.rules}
    fields.update(changes)
    return new_version(base, **fields)  # type: ignore[arg-type]


# --- The service --------------------------------------------------------------------------------


def test_it_saves_an_edit_as_the_next_version_and_leaves_the_used_one_untouched(make_debate) -> None:  # type: ignore[no-untyped-def]
    debate = make_debate()
    v1 = debate.constitution
    before = (v1.preamble, v1.principles, v1.rules, v1.content_hash())

    v2 = _edit(v1, rules={**v1.rules, "word_limit": 90})

    v1.refresh_from_db()
    assert (v1.preamble, v1.principles, v1.rules, v1.content_hash()) == before
    assert (v2.name, v2.version, v2.rules["word_limit"]) == (v1.name, v1.version + 1, 90)
    assert v2.pk != v1.pk and not v2.is_used()
    debate.refresh_from_db()
    assert debate.constitution_id == v1.pk


def test_it_numbers_after_the_latest_version_whichever_version_was_edited() -> None:
    v1 = default_constitution()
    v2 = _edit(v1, preamble="Second.")

    v3 = _edit(v1, preamble="Third, edited from the first.")

    assert (v2.version, v3.version) == (2, 3)


def test_it_starts_a_new_name_at_version_one() -> None:
    base = default_constitution()

    fork = new_version(base, name="strict-quotes", preamble=base.preamble, principles=base.principles, rules=base.rules)

    assert (fork.name, fork.version) == ("strict-quotes", 1)


def test_it_refuses_an_edit_that_changes_nothing() -> None:
    base = default_constitution()

    with pytest.raises(ConstitutionError, match="nothing changed"):
        _edit(base)
    assert Constitution.objects.count() == 1


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"principles": []}, "at least one principle"),
        ({"principles": [{"id": "Bad Id", "text": "x"}]}, "lower-case"),
        ({"principles": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}, "twice"),
        ({"principles": [{"id": "a", "text": "  "}]}, "no text"),
        ({"rules": {**DEFAULT_RULES, "quote_budget": 3}}, "unknown rules"),
        ({"rules": {**DEFAULT_RULES, "over_length": "shout"}}, "over_length"),
        ({"rules": [1, 2]}, "JSON object"),
    ],
)
def test_it_refuses_an_invalid_version_and_saves_nothing(changes: dict[str, object], message: str) -> None:
    base = default_constitution()

    with pytest.raises(ConstitutionError, match=message):
        _edit(base, **changes)
    assert Constitution.objects.count() == 1


def test_it_says_a_used_version_may_not_change_in_place(make_debate) -> None:  # type: ignore[no-untyped-def]
    unused = _edit(default_constitution(), preamble="Not used yet.")
    ensure_editable(unused)

    used = make_debate().constitution

    with pytest.raises(ConstitutionError, match="used by a debate"):
        ensure_editable(used)


def test_it_reads_principles_written_one_per_line() -> None:
    assert parse_principles_text("quote-exactly: Quote word for word.\n\nno-attacks:  Be civil. ") == [
        {"id": "quote-exactly", "text": "Quote word for word."},
        {"id": "no-attacks", "text": "Be civil."},
    ]
    with pytest.raises(ConstitutionError, match="line 2"):
        parse_principles_text("a: fine\nno colon here")


def test_it_diffs_the_rendered_text_line_by_line() -> None:
    v1 = default_constitution()
    principles = [p for p in v1.principles if p["id"] != "no-attacks"] + [{"id": "cite-lines", "text": "Cite lines."}]
    v2 = _edit(v1, principles=principles, rules={**v1.rules, "word_limit": 90})

    lines = diff(v1, v2)

    added = {line.text for line in lines if line.kind == "add"}
    removed = {line.text for line in lines if line.kind == "del"}
    assert "[cite-lines] Cite lines." in added and "word_limit: 90" in added
    assert any(t.startswith("[no-attacks]") for t in removed) and "word_limit: 150" in removed
    assert diff(v1, v1) == [] and "## Rules" in render_text(v1)


# --- The pages ----------------------------------------------------------------------------------


def test_it_lists_versions_with_the_debates_that_used_them(alice, make_debate) -> None:  # type: ignore[no-untyped-def]
    debate = make_debate()
    _edit(debate.constitution, preamble="Changed.")

    listing = _client(alice).get("/constitutions/")
    detail = _client(alice).get(f"/constitutions/{debate.constitution_id}/")

    assert listing.status_code == 200
    body = listing.content.decode()
    assert "v1" in body and "v2" in body and "(frozen)" in body
    assert detail.status_code == 200
    assert f'href="/debates/{debate.pk}/"' in detail.content.decode()
    assert 'id="frozen"' in detail.content.decode()


def test_it_saves_the_edit_page_as_a_new_version(alice) -> None:  # type: ignore[no-untyped-def]
    base = default_constitution()
    rules = {**base.rules, "quote_budget_words_per_speech": 25}

    response = _client(alice).post(
        f"/constitutions/{base.pk}/edit/",
        {
            "name": base.name,
            "preamble": "A new preamble.",
            "principles": "quote-verbatim: Quote exactly.\nengage: Answer the other side.",
            "rules": json.dumps(rules),
        },
    )

    created = Constitution.objects.get(name=base.name, version=2)
    assert response.status_code == 302 and response["Location"] == f"/constitutions/{created.pk}/"
    assert created.created_by == alice
    assert created.principles == [
        {"id": "quote-verbatim", "text": "Quote exactly."},
        {"id": "engage", "text": "Answer the other side."},
    ]
    assert created.rules["quote_budget_words_per_speech"] == 25
    base.refresh_from_db()
    assert base.preamble != "A new preamble."


def test_it_keeps_what_was_typed_when_the_edit_is_invalid(alice) -> None:  # type: ignore[no-untyped-def]
    base = default_constitution()

    response = _client(alice).post(
        f"/constitutions/{base.pk}/edit/",
        {"name": base.name, "preamble": "Kept text.", "principles": "a: b", "rules": "{not json"},
    )

    assert response.status_code == 400
    assert "not valid JSON" in response.content.decode()
    assert "Kept text." in response.content.decode() and "{not json" in response.content.decode()
    assert Constitution.objects.count() == 1


def test_it_shows_the_diff_page_with_model_text_escaped(alice) -> None:  # type: ignore[no-untyped-def]
    v1 = default_constitution()
    v2 = _edit(v1, principles=[*v1.principles, {"id": "xss", "text": "<script>alert(1)</script>"}])

    response = _client(alice).get(f"/constitutions/diff/?a={v1.pk}&b={v2.pk}")

    body = response.content.decode()
    assert response.status_code == 200
    assert '<span class="line add">[xss] &lt;script&gt;alert(1)&lt;/script&gt;</span>' in body
    assert "<script>alert(1)</script>" not in body


def test_it_answers_a_diff_without_two_versions_with_a_clear_error(alice) -> None:  # type: ignore[no-untyped-def]
    default_constitution()

    assert _client(alice).get("/constitutions/diff/").status_code == 200
    bad = _client(alice).get("/constitutions/diff/?a=1&b=x")
    assert bad.status_code == 400 and "choose two versions" in bad.content.decode()
    assert _client(alice).get("/constitutions/diff/?a=999998&b=999999").status_code == 404


@pytest.mark.parametrize(
    "path", ["/constitutions/", "/constitutions/{id}/", "/constitutions/{id}/edit/", "/constitutions/diff/"]
)
def test_it_keeps_judges_and_visitors_out(bob, client: Client, path: str) -> None:  # type: ignore[no-untyped-def]
    url = path.format(id=default_constitution().pk)

    assert _client(bob).get(url).status_code == 403
    assert client.get(url).status_code == 302


def test_it_refuses_a_judges_edit(bob) -> None:  # type: ignore[no-untyped-def]
    base = default_constitution()

    response = _client(bob).post(
        f"/constitutions/{base.pk}/edit/", {"name": "x", "preamble": "", "principles": "a: b", "rules": "{}"}
    )

    assert response.status_code == 403
    assert Constitution.objects.count() == 1


def test_it_requires_a_csrf_token_to_save(alice) -> None:  # type: ignore[no-untyped-def]
    base = default_constitution()
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    response = client.post(
        f"/constitutions/{base.pk}/edit/", {"name": "x", "preamble": "", "principles": "a: b", "rules": "{}"}
    )

    assert response.status_code == 403
    assert Constitution.objects.count() == 1


def test_its_documentation_names_every_default_principle_and_rule() -> None:
    from pathlib import Path

    from arena.constitution import DEFAULT_PRINCIPLES
    from debaters.referee import RULE_DEFAULTS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "constitution.md").read_text()

    assert all(f"`{p['id']}`" in doc and p["text"].split()[0] in doc for p in DEFAULT_PRINCIPLES)
    assert all(f"`{key}`" in doc for key in RULE_DEFAULTS)
