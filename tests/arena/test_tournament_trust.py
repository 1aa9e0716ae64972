"""Issue 15 on the tournament pages: the form picks a constitution version and questions by set,
filter or list, counts debates and verdicts before anything starts, speaks in its own labels; the
page shows the definition as YAML, keeps its debate table live, and its ETA does not grow while
the bar waits for AI verdicts."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml
from django.utils import timezone

from arena import tournaments
from arena.constitution import default_constitution
from arena.models import Constitution, Debate, Question, Tournament, Turn
from debaters.models import DebaterProfile
from judging.models import JudgeProfile
from tests.arena.test_tournament_pages import profiles  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db


def _fields(question, **extra):  # type: ignore[no-untyped-def]
    p1, p2 = DebaterProfile.objects.filter(name__in=["p1", "p2"]).order_by("name")
    return {
        "name": "form", "question_set": question.question_set.pk, "debaters": [p1.pk, p2.pk], "protocols": ["debate"],
        "judges": [JudgeProfile.objects.get(name="pj").pk],
        "rounds": 1, "max_tokens": 12, "word_limit": 20, "context_tokens": 120, "seed": 0, "chunk_size": 4, **extra,
    }


def _more_questions(question: Question) -> None:
    for i, text in enumerate(["Who rowed out at dawn?", "Where was the lamp?", "Who rowed back?"]):
        Question.objects.create(question_set=question.question_set, external_id=f"extra-{i}", question=text,
                                answers=["A", "B"], correct_index=0, source_title="T", source_text="A story.")


def test_the_form_counts_debates_and_verdicts_before_creating_anything(client, alice, profiles, question) -> None:  # type: ignore[no-untyped-def]
    _more_questions(question)
    client.force_login(alice)
    response = client.post("/tournaments/", _fields(question, question_match="rowed", preview="1"))
    html = response.content.decode()
    assert response.status_code == 200 and not Tournament.objects.exists()
    # 2 questions match; one pair, both sides, both orders: 4 debates per question; one judge each.
    assert "<strong>8 debates</strong>" in html and "<strong>8 AI verdicts</strong>" in html and "on 2 questions" in html


def test_questions_by_list_and_a_constitution_version(client, alice, profiles, question) -> None:  # type: ignore[no-untyped-def]
    _more_questions(question)
    base = default_constitution()
    older = Constitution.objects.create(name="house-rules", version=1, principles=base.principles, rules=base.rules)
    Constitution.objects.create(name="house-rules", version=2, principles=base.principles, rules=base.rules)
    client.force_login(alice)
    response = client.post("/tournaments/", _fields(question, question_ids="extra-2, extra-0", constitution=older.pk))
    assert response.status_code == 302
    tournament = Tournament.objects.get(name="form")
    assert tournament.config["questions"]["ids"] == ["extra-2", "extra-0"]
    assert set(tournament.debates.values_list("constitution_id", flat=True)) == {older.pk}
    page = client.get(f"/tournaments/{tournament.pk}/").content.decode()
    shown = page[page.index('id="t-definition">') + len('id="t-definition">') : page.index("</pre>", page.index('id="t-definition"'))]
    assert yaml.safe_load(shown.replace("&#x27;", "'").replace("&quot;", '"'))["constitution"] == "house-rules@1"


def test_the_self_play_error_names_the_checkbox(client, alice, profiles, question) -> None:  # type: ignore[no-untyped-def]
    client.force_login(alice)
    fields = _fields(question)
    fields["debaters"] = fields["debaters"][:1]
    html = client.post("/tournaments/", fields).content.decode()
    assert "tick &quot;Self-play too&quot;" in html and "self_play: true" not in html
    yaml_html = client.post("/tournaments/", {"definition": "name: y\nquestions: {set: test-set}\ndebaters: [p1]\n"}).content.decode()
    assert "self_play: true" in yaml_html


def _running(question: Question) -> Tournament:
    spec = tournaments.validate({"name": "live", "questions": {"set": question.question_set.name}, "debaters": ["p1", "p2"],
                                 "judges": ["pj"], "limits": {"rounds": 1, "max_tokens": 12, "word_limit": 20, "context_tokens": 120}})
    tournament = tournaments.create_tournament(spec)
    tournaments.start(tournament.pk, enqueue=False)
    return tournament


def test_the_debate_table_is_live(client, alice, profiles, question) -> None:  # type: ignore[no-untyped-def]
    tournament = _running(question)
    client.force_login(alice)
    debate = tournament.debates.order_by("pk").first()
    Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.CANCELLED)
    data = client.get(f"/tournaments/{tournament.pk}/progress.json", {"page": 1}).json()
    assert data["debates"][str(debate.pk)] == "cancelled"
    assert len(data["debates"]) == tournament.debates.count()
    page = client.get(f"/tournaments/{tournament.pk}/").content.decode()
    assert f'data-debate="{debate.pk}"' in page and f"?page=1" in page


def test_the_eta_does_not_grow_while_waiting_for_verdicts(alice, profiles, question, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    tournament = _running(question)
    start = timezone.now()
    Tournament.objects.filter(pk=tournament.pk).update(stats={"active_s": 0.0, "resumed_at": start.isoformat()})
    # Every speech lands in the first 40 s; then the bar waits for the 4 AI verdicts.
    for i, debate in enumerate(tournament.debates.order_by("pk")):
        for side in (0, 1):  # round 1's slots are indexed in the debate's drawn speaking order
            Turn.objects.create(debate=debate, index=side ^ debate.first_side, round=1, side=side, text="x",
                                prompt_hash="", started_at=start,
                                finished_at=start + timedelta(seconds=10 * i + 5 * side + 5))
    tournament.refresh_from_db()
    etas = []
    for seconds in (40, 60, 120):
        monkeypatch.setattr(timezone, "now", lambda s=seconds: start + timedelta(seconds=s))
        etas.append(tournaments.progress(tournament).eta_s)
    # At 40 s: 8 of 12 units done in 40 s, 4 to go: 20 s. Waiting then counts down, never up.
    assert etas[0] == pytest.approx(20.0, abs=0.5)
    assert etas[1] == pytest.approx(0.0, abs=0.5) and etas[2] == 0.0
