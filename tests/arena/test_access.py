"""Who may see what: logins, roles, assignments, secrets kept from judges, and escaping."""

from __future__ import annotations

import html
import json
import re

import pytest
from django.test import Client
from django.urls import reverse

from arena.models import Debate, Question, Turn
from judging.models import Assignment

pytestmark = pytest.mark.django_db

XSS = "<script>alert(1)</script>"
ESCAPED_XSS = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings) -> None:  # type: ignore[no-untyped-def]
    """The users of conftest hash a password each; the default PBKDF2 costs ~0.5 s a user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def _source_slice(question: Question) -> str:
    """A distinctive 200-character piece from the middle of the story."""
    text = question.source_text
    middle = len(text) // 2
    return text[middle : middle + 200]


def _leaks(body: str, secret: str) -> bool:
    """Whether ``secret`` is in ``body`` as plain text, HTML-escaped, or JSON-escaped."""
    variants = {secret, html.escape(secret), html.escape(secret, quote=False), json.dumps(secret)[1:-1]}
    variants.add(json.dumps(secret)[1:-1].replace("<", "\\u003C").replace(">", "\\u003E").replace("&", "\\u0026"))
    unescaped = html.unescape(body)
    return any(v in body for v in variants) or secret in unescaped


def _without_tokens(body: str) -> str:
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", body)


# --- Logins and roles ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/debates/", "/judge/"])
def test_it_sends_anonymous_visitors_to_the_login_page(client: Client, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={path}"


def test_it_sends_anonymous_visitors_of_a_debate_to_the_login_page(client: Client, finished_debate: Debate) -> None:
    for path in (f"/judge/debates/{finished_debate.pk}/", f"/debates/{finished_debate.pk}/"):
        response = client.get(path)

        assert response.status_code == 302
        assert response["Location"].startswith(f"{reverse('login')}?next=")


def test_it_takes_no_verdict_from_an_anonymous_post(client: Client, finished_debate: Debate) -> None:
    response = client.post(
        f"/judge/debates/{finished_debate.pk}/", {"p_first": "0.8", "p_second": "0.2", "reason": "x" * 20}
    )

    assert response.status_code == 302
    assert not finished_debate.verdicts.exists()


def test_it_hides_another_judges_debate_from_a_judge(  # type: ignore[no-untyped-def]
    charlie, finished_debate: Debate,
) -> None:
    response = _client(charlie).get(f"/judge/debates/{finished_debate.pk}/")

    assert response.status_code == 404


def test_it_takes_no_verdict_from_a_judge_not_assigned(  # type: ignore[no-untyped-def]
    charlie, finished_debate: Debate,
) -> None:
    response = _client(charlie).post(
        f"/judge/debates/{finished_debate.pk}/", {"p_first": "0.8", "p_second": "0.2", "reason": "x" * 20}
    )

    assert response.status_code == 404
    assert not finished_debate.verdicts.exists()


def test_it_answers_a_missing_debate_and_someone_elses_the_same_way(  # type: ignore[no-untyped-def]
    charlie, finished_debate: Debate,
) -> None:
    client = _client(charlie)

    assert client.get(f"/judge/debates/{finished_debate.pk}/").status_code == 404
    assert client.get(f"/judge/debates/{finished_debate.pk + 1000}/").status_code == 404


def test_it_leaves_another_judges_debate_out_of_a_judges_queue(  # type: ignore[no-untyped-def]
    charlie, finished_debate: Debate,
) -> None:
    response = _client(charlie).get("/judge/")

    assert response.status_code == 200
    assert f"/judge/debates/{finished_debate.pk}/" not in response.content.decode()


def test_it_lists_an_assigned_debate_in_the_judges_queue(  # type: ignore[no-untyped-def]
    bob, finished_debate: Debate,
) -> None:
    response = _client(bob).get("/judge/")

    assert f"/judge/debates/{finished_debate.pk}/" in response.content.decode()


@pytest.mark.parametrize("path", ["/debates/", "/debates/{id}/"])
def test_it_forbids_researcher_pages_to_a_judge(  # type: ignore[no-untyped-def]
    bob, finished_debate: Debate, path: str,
) -> None:
    response = _client(bob).get(path.format(id=finished_debate.pk))

    assert response.status_code == 403


def test_it_forbids_a_judge_to_retry_a_debate(bob, finished_debate: Debate) -> None:  # type: ignore[no-untyped-def]
    Debate.objects.filter(pk=finished_debate.pk).update(status=Debate.Status.FAILED)

    response = _client(bob).post(f"/debates/{finished_debate.pk}/retry/")

    assert response.status_code == 403
    assert Debate.objects.get(pk=finished_debate.pk).status == Debate.Status.FAILED


def test_it_forbids_starting_a_debate_to_a_judge(bob, question: Question) -> None:  # type: ignore[no-untyped-def]
    response = _client(bob).post("/debates/", {"question": question.pk})

    assert response.status_code == 403
    assert not Debate.objects.exists()


def test_it_forbids_judge_pages_to_a_researcher_who_is_not_a_judge(  # type: ignore[no-untyped-def]
    alice, finished_debate: Debate,
) -> None:
    client = _client(alice)

    assert client.get("/judge/").status_code == 403
    assert client.get(f"/judge/debates/{finished_debate.pk}/").status_code == 403


def test_it_shows_a_researcher_the_gold_answer_and_the_source(  # type: ignore[no-untyped-def]
    alice, finished_debate: Debate,
) -> None:
    """The leak tests below would prove nothing if these were never rendered anywhere."""
    body = _client(alice).get(f"/debates/{finished_debate.pk}/").content.decode()

    assert "(gold)" in body
    assert _leaks(body, _source_slice(finished_debate.question))


# --- Secrets kept from judges before their verdict ----------------------------------------------


@pytest.mark.parametrize("path", ["/judge/", "/judge/debates/{id}/"])
def test_it_never_shows_a_judge_the_source_text(  # type: ignore[no-untyped-def]
    bob, finished_debate: Debate, path: str,
) -> None:
    body = _client(bob).get(path.format(id=finished_debate.pk)).content.decode()

    assert not _leaks(body, _source_slice(finished_debate.question))
    assert not _leaks(body, finished_debate.question.source_text[:200])


@pytest.mark.parametrize("path", ["/judge/", "/judge/debates/{id}/"])
def test_it_does_not_mark_the_gold_answer_for_a_judge_before_the_verdict(  # type: ignore[no-untyped-def]
    bob, finished_debate: Debate, path: str,
) -> None:
    body = _client(bob).get(path.format(id=finished_debate.pk)).content.decode()

    lowered = body.lower()
    assert "gold" not in lowered
    assert "correct_index" not in lowered and "correctindex" not in lowered
    assert 'id="reveal"' not in body


def test_it_does_not_name_the_source_to_a_judge_before_the_verdict(  # type: ignore[no-untyped-def]
    bob, finished_debate: Debate,
) -> None:
    title = finished_debate.question.source_title
    client = _client(bob)

    for path in ("/judge/", f"/judge/debates/{finished_debate.pk}/"):
        assert title not in client.get(path).content.decode()


@pytest.mark.parametrize("path", ["/judge/", "/judge/debates/{id}/"])
def test_it_renders_the_same_judge_page_whichever_answer_is_gold(  # type: ignore[no-untyped-def]
    bob, finished_debate: Debate, path: str,
) -> None:
    """Nothing a judge receives before the verdict may depend on which answer is correct."""
    client = _client(bob)
    url = path.format(id=finished_debate.pk)
    question = finished_debate.question
    before = _without_tokens(client.get(url).content.decode())

    Question.objects.filter(pk=question.pk).update(correct_index=1 - question.correct_index)
    after = _without_tokens(client.get(url).content.decode())

    assert before == after


def test_it_sends_the_judge_page_only_the_agreed_client_config(  # type: ignore[no-untyped-def]
    bob, finished_debate: Debate,
) -> None:
    response = _client(bob).get(f"/judge/debates/{finished_debate.pk}/")

    pattern = r'<script id="client-config" type="application/json">(.*?)</script>'
    match = re.search(pattern, response.content.decode(), re.S)
    assert match is not None
    config = json.loads(match.group(1))
    assert set(config) == {
        "debateId", "wsPath", "answerTexts", "speakerNoun", "protocol", "transcript",
        "minTurns", "totalTurns", "interactive", "judgeQuestions",
    }


# --- Order shown to the judge --------------------------------------------------------------------


@pytest.mark.parametrize("shown_first", [0, 1])
def test_it_shows_the_judge_the_answers_in_the_assignments_order(  # type: ignore[no-untyped-def]
    bob, finished_debate: Debate, shown_first: int,
) -> None:
    Assignment.objects.filter(debate=finished_debate, judge=bob).update(shown_first=shown_first)
    answers = finished_debate.question.answers

    response = _client(bob).get(f"/judge/debates/{finished_debate.pk}/")

    body = response.content.decode()
    first, second = answers[shown_first], answers[1 - shown_first]
    assert f'<span class="tag answer-a">A</span> {html.escape(first)}</li>' in body
    assert f'<span class="tag answer-b">B</span> {html.escape(second)}</li>' in body
    assert body.index(html.escape(first)) < body.index(html.escape(second))
    # Nothing on the page says which answer is stored first (that would leak a positional gold).
    assert "side-0" not in body and "side-1" not in body and "sideLabels" not in body
    assert response.context["client_config"]["answerTexts"] == {"A": first, "B": second}


# --- Escaping ------------------------------------------------------------------------------------


@pytest.fixture
def hostile_debate(finished_debate: Debate) -> Debate:
    """A debate whose turn, prompt, answers and error all carry a script tag."""
    Turn.objects.filter(debate=finished_debate, index=0).update(
        text=f"My case {XSS} rests.", prompt=[{"role": "user", "content": f"Opponent said: {XSS}"}]
    )
    question = finished_debate.question
    Question.objects.filter(pk=question.pk).update(
        answers=[f"{question.answers[0]} {XSS}", question.answers[1]], question=f"Which? {XSS}"
    )
    Debate.objects.filter(pk=finished_debate.pk).update(error=f"worker said {XSS}")
    finished_debate.refresh_from_db()
    return finished_debate


def test_it_escapes_script_tags_on_the_researcher_page(  # type: ignore[no-untyped-def]
    alice, hostile_debate: Debate,
) -> None:
    body = _client(alice).get(f"/debates/{hostile_debate.pk}/").content.decode()

    assert XSS not in body
    assert f"Opponent said: {ESCAPED_XSS}" in body
    assert f"worker said {ESCAPED_XSS}" in body


def test_it_escapes_script_tags_on_the_judge_page(bob, hostile_debate: Debate) -> None:  # type: ignore[no-untyped-def]
    body = _client(bob).get(f"/judge/debates/{hostile_debate.pk}/").content.decode()

    assert XSS not in body
    assert f"Which? {ESCAPED_XSS}" in body
    assert "\\u003Cscript\\u003Ealert(1)\\u003C/script\\u003E" in body  # the answer inside json_script


def test_it_escapes_script_tags_in_the_judges_queue(  # type: ignore[no-untyped-def]
    bob, hostile_debate: Debate,
) -> None:
    body = _client(bob).get("/judge/").content.decode()

    assert XSS not in body
    assert "&lt;script&gt;" in body


def test_it_escapes_script_tags_in_a_verdict_reason_and_its_reveal(  # type: ignore[no-untyped-def]
    alice, bob, hostile_debate: Debate,
) -> None:
    judge = _client(bob)
    url = f"/judge/debates/{hostile_debate.pk}/"
    judge.post(url, {"p_first": "0.8", "p_second": "0.2", "reason": f"Convincing. {XSS}"})
    assert hostile_debate.verdicts.count() == 1

    researcher_page = _client(alice).get(f"/debates/{hostile_debate.pk}/").content.decode()
    for body in (judge.get(url).content.decode(), researcher_page):
        assert XSS not in body
        assert f"Convincing. {ESCAPED_XSS}" in body
