"""Question sets in the browser: upload with the command's validation, browse, search, see debated questions."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from arena_test_support import signed_in

from arena.importing import ImportFailed, import_questions
from arena.models import Question, QuestionSet

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def _row(ext: str, question: str = "", **overrides: object) -> str:
    row: dict[str, object] = {
        "id": ext,
        "question": question or f"What happens in story {ext}?",
        "answers": ["The hero wins", "The hero loses"],
        "correct_index": 0,
        "source": {"title": f"Story {ext}", "text": f"Once upon a time, in {ext}, the hero won.", "origin": "test"},
        "license": "CC-BY-4.0",
    }
    row.update(overrides)
    return json.dumps(row)


def _upload(lines: list[str], name: str = "my-set.jsonl") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, "".join(line + "\n" for line in lines).encode(), content_type="application/jsonl")


def test_it_imports_an_uploaded_file_into_a_named_set(alice) -> None:
    client = signed_in(alice)
    response = client.post(
        "/questions/", {"file": _upload([_row("a"), _row("b")]), "set_name": "pilot", "description": "two questions"}
    )

    qset = QuestionSet.objects.get(name="pilot")
    assert response.status_code == 302 and response["Location"] == f"/questions/sets/{qset.pk}/"
    assert sorted(qset.questions.values_list("external_id", flat=True)) == ["a", "b"]
    page = client.get(response["Location"]).content.decode()
    assert "my-set.jsonl: 2 question(s) created, 0 updated" in page


def test_it_names_the_set_after_the_file_when_no_name_is_given(alice) -> None:
    signed_in(alice).post("/questions/", {"file": _upload([_row("a")], name="spring-study.jsonl")})

    assert QuestionSet.objects.filter(name="spring-study").exists()


def test_it_lists_every_bad_line_as_the_command_does_and_imports_nothing(alice, tmp_path) -> None:
    lines = [_row("a"), "{not json", _row("b", correct_index=2), _row("a")]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(ImportFailed) as command_error:
        import_questions(path, "bad")

    response = signed_in(alice).post("/questions/", {"file": _upload(lines), "set_name": "bad"})

    assert response.status_code == 400
    assert response.context["problems"] == command_error.value.problems
    body = response.content.decode()
    assert "3 bad line(s) in my-set.jsonl; nothing was imported." in body
    for number, _ in command_error.value.problems:
        assert f"line {number}:" in body
    assert not QuestionSet.objects.filter(name="bad").exists() and not Question.objects.exists()


def test_it_says_so_when_the_file_holds_no_questions(alice) -> None:
    response = signed_in(alice).post("/questions/", {"file": _upload(["", "  "]), "set_name": "empty"})

    assert response.status_code == 400
    assert "the file holds no questions" in response.content.decode()


def test_it_searches_a_set_and_shows_which_questions_have_debates(alice, make_debate, question) -> None:
    make_debate()
    qset = question.question_set
    Question.objects.create(
        question_set=qset, external_id="other", question="Why did the lighthouse keeper leave?",
        answers=["Storm", "Money"], correct_index=1, source_title="The Lighthouse", source_text="A keeper left.",
    )
    client = signed_in(alice)

    everything = client.get(f"/questions/sets/{qset.pk}/")
    search = client.get(f"/questions/sets/{qset.pk}/", {"q": "lighthouse"})
    debated = client.get(f"/questions/sets/{qset.pk}/", {"debated": "1"})

    assert [q.external_id for q in everything.context["page"]] == [question.external_id, "other"]
    assert [q.external_id for q in search.context["page"]] == ["other"]
    assert [(q.external_id, q.debate_count) for q in debated.context["page"]] == [(question.external_id, 1)]
    listing = client.get("/questions/").context["sets"]
    assert [(s.name, s.question_count, s.debated_count) for s in listing] == [(qset.name, 2, 1)]


def test_it_lists_the_debates_of_a_question(alice, make_debate, question) -> None:
    debate = make_debate()

    body = signed_in(alice).get(f"/questions/{question.pk}/").content.decode()

    assert f'href="/debates/{debate.pk}/"' in body


def test_it_escapes_question_text(alice, question) -> None:
    Question.objects.filter(pk=question.pk).update(question="<script>alert(1)</script>")

    body = signed_in(alice).get(f"/questions/sets/{question.question_set_id}/").content.decode()

    assert "<script>alert(1)</script>" not in body and "&lt;script&gt;" in body


@pytest.mark.parametrize("path", ["/questions/", "/questions/sets/1/", "/questions/1/"])
def test_it_forbids_judges(bob, path: str) -> None:
    assert signed_in(bob).get(path).status_code == 403


def test_it_refuses_an_upload_from_a_judge_or_without_the_csrf_token(alice, bob) -> None:
    forbidden = signed_in(bob).post("/questions/", {"file": _upload([_row("a")]), "set_name": "judge-set"})
    no_token = Client(enforce_csrf_checks=True)
    no_token.force_login(alice)
    refused = no_token.post("/questions/", {"file": _upload([_row("a")]), "set_name": "no-token"})

    assert (forbidden.status_code, refused.status_code) == (403, 403)
    assert not QuestionSet.objects.exists()
