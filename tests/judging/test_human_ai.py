"""Human vs AI judges on the same debates."""

from __future__ import annotations

import pytest
from django.test import Client

from arena import services
from judging import human_ai
from judging.models import JudgeProfile, Verdict


def _verdict(debate, *, judge=None, ai=None, p_a: float) -> Verdict:  # type: ignore[no-untyped-def]
    gold = debate.question.correct_index
    return Verdict.objects.create(
        debate=debate, kind=Verdict.Kind.AI if ai else Verdict.Kind.HUMAN, judge=judge, ai_judge=ai, shown_first=0,
        p_a=p_a, p_b=1 - p_a, reason="r", correct=(p_a > 0.5) == (gold == 0),
    )


@pytest.mark.django_db
def test_it_compares_humans_and_ai_on_the_same_debates(alice, bob, charlie, make_debate) -> None:  # type: ignore[no-untyped-def]
    ai = JudgeProfile.objects.create(name="ai")
    first = make_debate(seed=1)
    second = make_debate(seed=2)
    alone = make_debate(seed=3)
    gold = first.question.correct_index
    right, wrong = (0.8, 0.2) if gold == 0 else (0.2, 0.8)
    services.assign_judge(first, bob)
    _verdict(first, judge=bob, p_a=right)
    _verdict(first, ai=ai, p_a=right)
    _verdict(second, judge=charlie, p_a=wrong)
    _verdict(second, judge=bob, p_a=wrong)  # bob's second verdict on the question: flagged, left out by default
    _verdict(second, ai=ai, p_a=right)
    _verdict(alone, ai=ai, p_a=right)  # no human verdict: not compared

    result = human_ai.compare()
    (row,) = result.protocols
    assert (row.protocol, row.debates, row.human_n, row.human_correct, row.ai_n, row.ai_correct) == ("debate", 2, 2, 1, 2, 2)
    assert (row.pairs, row.agreeing_pairs) == (2, 1)
    assert [d.debate_id for d in result.disagreements] == [second.pk]
    assert human_ai.compare(include_flagged=True).protocols[0].human_n == 3

    client = Client()
    client.force_login(alice)
    page = client.get("/studies/human-vs-ai/").content.decode()
    assert 'data-protocol="debate"' in page
