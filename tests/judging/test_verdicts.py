"""Human verdicts: the service's rules and the judge page around it."""

from __future__ import annotations

import math

import pytest
from django.test import Client
from django.urls import reverse

from judging.models import Assignment, Verdict
from judging.services import VerdictError, submit_human_verdict

REASON = "The quotes for this answer were verified and on point."


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings) -> None:  # type: ignore[no-untyped-def]
    """The users of conftest hash a password each; the default PBKDF2 costs ~0.5 s a user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def assignment(finished_debate, bob) -> Assignment:  # type: ignore[no-untyped-def]
    return Assignment.objects.get(debate=finished_debate, judge=bob)


def _with_shown_first(assignment: Assignment, shown_first: int) -> Assignment:
    Assignment.objects.filter(pk=assignment.pk).update(shown_first=shown_first)
    assignment.refresh_from_db()
    return assignment


def _url(debate_id: int) -> str:
    return reverse("judge_debate", args=[debate_id])


@pytest.fixture
def bob_client(bob) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(bob)
    return client


# --- The service --------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("p_first, p_second", [(0.7, 0.2), (0.6, 0.6), (1.0, 1.0), (0.0, 0.0), (0.9, 0.1 + 1e-4)])
def test_it_refuses_probabilities_that_do_not_sum_to_one(
    assignment: Assignment, p_first: float, p_second: float,
) -> None:
    with pytest.raises(VerdictError, match="sum to 1"):
        submit_human_verdict(assignment, p_first, p_second, REASON)

    assert Verdict.objects.count() == 0


@pytest.mark.django_db
def test_it_refuses_fifty_fifty(assignment: Assignment) -> None:
    with pytest.raises(VerdictError, match="50/50"):
        submit_human_verdict(assignment, 0.5, 0.5, REASON)

    assert Verdict.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("p_first, p_second", [(1.2, -0.2), (-0.1, 1.1), (math.nan, 0.5), (math.inf, -math.inf)])
def test_it_refuses_probabilities_outside_zero_and_one(assignment: Assignment, p_first: float, p_second: float) -> None:
    with pytest.raises(VerdictError, match="between 0 and 1"):
        submit_human_verdict(assignment, p_first, p_second, REASON)

    assert Verdict.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("reason", ["", "too short", "   short    ", "\n\n\n\n\n\n\n\n\n\n\n\n"])
def test_it_refuses_a_short_reason(assignment: Assignment, reason: str) -> None:
    with pytest.raises(VerdictError, match="reason"):
        submit_human_verdict(assignment, 0.8, 0.2, reason)

    assert Verdict.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["queued", "running", "failed", "cancelled"])
def test_it_refuses_a_verdict_before_the_debate_is_finished(  # type: ignore[no-untyped-def]
    make_debate, bob, status: str,
) -> None:
    from arena.models import Debate

    debate = make_debate(judges=[bob])
    Debate.objects.filter(pk=debate.pk).update(status=status)
    assignment = Assignment.objects.get(debate=debate, judge=bob)

    with pytest.raises(VerdictError, match="not over"):
        submit_human_verdict(assignment, 0.8, 0.2, REASON)

    assert Verdict.objects.count() == 0


@pytest.mark.django_db
def test_it_refuses_a_second_verdict(assignment: Assignment) -> None:
    submit_human_verdict(assignment, 0.8, 0.2, REASON)

    with pytest.raises(VerdictError, match="already judged"):
        submit_human_verdict(assignment, 0.1, 0.9, REASON)

    verdicts = list(Verdict.objects.all())
    assert len(verdicts) == 1
    assert verdicts[0].p_a + verdicts[0].p_b == pytest.approx(1)


@pytest.mark.django_db
def test_it_stores_probabilities_in_canonical_order_when_answer_one_was_shown_first(assignment: Assignment) -> None:
    verdict = submit_human_verdict(_with_shown_first(assignment, 0), 0.8, 0.2, REASON)

    verdict.refresh_from_db()
    assert (verdict.p_a, verdict.p_b, verdict.shown_first) == (0.8, 0.2, 0)


@pytest.mark.django_db
def test_it_stores_probabilities_in_canonical_order_when_answer_two_was_shown_first(assignment: Assignment) -> None:
    verdict = submit_human_verdict(_with_shown_first(assignment, 1), 0.8, 0.2, REASON)

    verdict.refresh_from_db()
    assert (verdict.p_a, verdict.p_b, verdict.shown_first) == (0.2, 0.8, 1)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "shown_first, p_first, expected",
    [(0, 0.8, True), (0, 0.2, False), (1, 0.8, False), (1, 0.2, True)],
)
def test_it_flags_whether_the_judge_favoured_the_gold_answer(
    assignment: Assignment, shown_first: int, p_first: float, expected: bool
) -> None:
    gold = assignment.debate.question.correct_index
    assert gold == 0  # the first sample question; the cases above are written for it

    verdict = submit_human_verdict(_with_shown_first(assignment, shown_first), p_first, 1 - p_first, REASON)

    assert verdict.correct is expected
    assert Verdict.objects.get(pk=verdict.pk).correct is expected


@pytest.mark.django_db
def test_it_records_the_judge_kind_and_the_trimmed_reason(  # type: ignore[no-untyped-def]
    assignment: Assignment, bob,
) -> None:
    verdict = submit_human_verdict(assignment, 0.9, 0.1, f"  {REASON}\n")

    assert (verdict.kind, verdict.judge, verdict.reason) == (Verdict.Kind.HUMAN, bob, REASON)


# --- The judge page ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_page_records_a_verdict_and_redirects_to_itself(bob_client: Client, assignment: Assignment) -> None:
    _with_shown_first(assignment, 1)
    url = _url(assignment.debate_id)

    response = bob_client.post(url, {"p_first": "0.3", "p_second": "0.7", "reason": REASON})

    assert response.status_code == 302
    assert response["Location"] == url
    verdict = Verdict.objects.get()
    assert (verdict.p_a, verdict.p_b) == (0.7, 0.3)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "data, why",
    [
        ({"p_first": "0.6", "p_second": "0.6", "reason": REASON}, "sum to 1"),
        ({"p_first": "0.5", "p_second": "0.5", "reason": REASON}, "50/50"),
        ({"p_first": "1.5", "p_second": "-0.5", "reason": REASON}, "p_first"),
        ({"p_first": "0.8", "p_second": "0.2", "reason": "meh"}, "reason"),
        ({"p_first": "abc", "p_second": "0.2", "reason": REASON}, "p_first"),
    ],
)
def test_the_page_shows_why_a_verdict_was_refused(
    bob_client: Client, assignment: Assignment, data: dict[str, str], why: str
) -> None:
    response = bob_client.post(_url(assignment.debate_id), data)

    assert response.status_code == 400
    assert why in response.context["error"]
    assert b'id="verdict-error"' in response.content
    assert Verdict.objects.count() == 0


@pytest.mark.django_db
def test_the_page_refuses_a_verdict_on_an_unfinished_debate(  # type: ignore[no-untyped-def]
    bob_client: Client, make_debate, bob,
) -> None:
    debate = make_debate(judges=[bob])

    response = bob_client.post(_url(debate.pk), {"p_first": "0.8", "p_second": "0.2", "reason": REASON})

    assert response.status_code == 400
    assert b"the debate is not over yet" in response.content
    assert Verdict.objects.count() == 0


@pytest.mark.django_db
def test_the_page_refuses_a_second_verdict_and_keeps_the_first(bob_client: Client, assignment: Assignment) -> None:
    url = _url(assignment.debate_id)
    bob_client.post(url, {"p_first": "0.8", "p_second": "0.2", "reason": REASON})

    response = bob_client.post(url, {"p_first": "0.1", "p_second": "0.9", "reason": "I changed my mind entirely."})

    assert response.status_code == 400
    assert response.context["error"] == "you have already judged this debate"
    verdicts = list(Verdict.objects.all())
    assert len(verdicts) == 1
    assert verdicts[0].reason == REASON


@pytest.mark.django_db
def test_the_page_shows_the_error_for_a_second_verdict(bob_client: Client, assignment: Assignment) -> None:
    url = _url(assignment.debate_id)
    bob_client.post(url, {"p_first": "0.8", "p_second": "0.2", "reason": REASON})

    response = bob_client.post(url, {"p_first": "0.1", "p_second": "0.9", "reason": "I changed my mind entirely."})

    assert b"you have already judged this debate" in response.content


@pytest.mark.django_db
def test_the_page_rejects_a_post_without_a_csrf_token(  # type: ignore[no-untyped-def]
    bob, assignment: Assignment,
) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)

    response = client.post(_url(assignment.debate_id), {"p_first": "0.8", "p_second": "0.2", "reason": REASON})

    assert response.status_code == 403
    assert Verdict.objects.count() == 0


@pytest.mark.django_db
def test_the_page_accepts_a_post_with_the_csrf_token_from_the_form(  # type: ignore[no-untyped-def]
    bob, assignment: Assignment,
) -> None:
    import re

    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)
    page = client.get(_url(assignment.debate_id)).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]

    response = client.post(
        _url(assignment.debate_id),
        {"p_first": "0.8", "p_second": "0.2", "reason": REASON, "csrfmiddlewaretoken": token},
    )

    assert response.status_code == 302
    assert Verdict.objects.count() == 1


@pytest.mark.django_db
def test_the_page_hides_the_result_before_the_verdict(bob_client: Client, assignment: Assignment) -> None:
    response = bob_client.get(_url(assignment.debate_id))

    assert response.status_code == 200
    assert "reveal" not in response.context
    assert b'id="reveal"' not in response.content
    assert b'id="log-score"' not in response.content
    assert b'id="verdict-form"' in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("shown_first", [0, 1])
def test_the_page_reveals_the_gold_answer_and_log_score_after_the_verdict(
    bob_client: Client, assignment: Assignment, shown_first: int
) -> None:
    _with_shown_first(assignment, shown_first)
    question = assignment.debate.question
    gold = question.correct_index
    gold_label = "A" if shown_first == gold else "B"
    url = _url(assignment.debate_id)
    # Give the gold answer 0.8, whichever position it is shown in.
    p_first = 0.8 if shown_first == gold else 0.2
    bob_client.post(url, {"p_first": str(p_first), "p_second": str(round(1 - p_first, 2)), "reason": REASON})

    response = bob_client.get(url)

    html = response.content.decode()
    assert response.status_code == 200
    assert f'<strong id="gold-answer">{gold_label}: {question.answers[gold]}</strong>' in html
    assert f'<strong id="log-score">{math.log2(0.8):.3f}</strong>' in html
    assert '<strong id="verdict-outcome">right</strong>' in html
    assert question.source_title in html
    assert b'id="verdict-form"' not in response.content


@pytest.mark.django_db
def test_the_page_reveals_a_wrong_verdict_as_wrong(bob_client: Client, assignment: Assignment) -> None:
    _with_shown_first(assignment, 0)
    url = _url(assignment.debate_id)
    bob_client.post(url, {"p_first": "0.1", "p_second": "0.9", "reason": REASON})

    html = bob_client.get(url).content.decode()

    assert '<strong id="verdict-outcome">wrong</strong>' in html
    assert f'<strong id="log-score">{math.log2(0.1):.3f}</strong>' in html


@pytest.mark.django_db
def test_the_page_records_when_the_judge_first_opened_it(bob_client: Client, assignment: Assignment) -> None:
    assert assignment.opened_at is None

    bob_client.get(_url(assignment.debate_id))
    assignment.refresh_from_db()
    first = assignment.opened_at
    bob_client.get(_url(assignment.debate_id))
    assignment.refresh_from_db()

    assert first is not None
    assert assignment.opened_at == first


# --- What a verdict POST costs --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_verdict_post_reads_each_row_once_and_writes_in_one_short_transaction(
    bob_client: Client, assignment: Assignment,
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    bob_client.get(_url(assignment.debate_id))  # the page, as a judge opens it before judging

    with CaptureQueriesContext(connection) as captured:
        response = bob_client.post(_url(assignment.debate_id), {"p_first": "0.8", "p_second": "0.2", "reason": REASON})

    assert response.status_code == 302
    sqls = [q["sql"] for q in captured.captured_queries]
    # Session, user, role, assignment with its debate and question, the judge's earlier verdict, the
    # speeches, the insert and the study link (the test's savepoints around the transaction aside).
    work = [s for s in sqls if "SAVEPOINT" not in s]
    assert len(work) <= 8, "\n".join(work)
    assert sum('"arena_debate"' in s for s in work) == 1  # read with the assignment, not again
    assert sum('FROM "arena_turn"' in s for s in work) == 1  # counted and grouped by round from one read
    assert not any('FROM "auth_user"' in s and "INNER JOIN" not in s for s in work[2:])  # the judge is read once
    assert Verdict.objects.filter(debate_id=assignment.debate_id, judge=assignment.judge).count() == 1


@pytest.mark.django_db
def test_a_verdict_records_the_speeches_and_rounds_the_judge_had_seen(assignment: Assignment) -> None:
    verdict = submit_human_verdict(assignment, 0.8, 0.2, REASON)

    meta = Verdict.objects.get(pk=verdict.pk).meta
    assert (meta["turns_seen"], meta["rounds_seen"]) == (2, 1)  # the fixture's two speeches of round 1


@pytest.mark.django_db
def test_a_debate_handed_in_for_another_assignment_is_not_used(  # type: ignore[no-untyped-def]
    assignment: Assignment, make_debate, bob,
) -> None:
    from arena.models import Debate

    unfinished = make_debate(judges=[bob])
    Debate.objects.filter(pk=unfinished.pk).update(status=Debate.Status.RUNNING)
    other = Assignment.objects.get(debate=unfinished, judge=bob)

    # The finished debate passed in belongs to another assignment: the service reads this one's.
    with pytest.raises(VerdictError, match="not over"):
        submit_human_verdict(other, 0.8, 0.2, REASON, debate=assignment.debate)

    assert Verdict.objects.count() == 0
