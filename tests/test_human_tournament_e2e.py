"""A human-judged tournament on a real Celery worker: the AI panel gives its verdicts as the debates
finish, while two judges fill the tournament's human verdicts with "Next debate" under the
exposure rules, through the real judge pages."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from arena import tournaments
from arena.models import Question, Tournament
from debaters.models import DebaterProfile
from judging import studies
from judging.models import JudgeProfile, Study, StudySlot, Verdict

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SPEECH = "I argue <quote>There was a thump.</quote> so my answer holds."


def test_two_judges_fill_a_tournaments_human_verdicts_next_to_its_ai_panel(  # type: ignore[no-untyped-def]
    celery_worker_proc, question, alice, bob, charlie
) -> None:
    # Two questions on two stories; one self-play debater: each question gives two debates (both orders).
    Question.objects.create(
        question_set=question.question_set, external_id="other-story", question="What colour was the door?",
        answers=["Red", "Blue"], correct_index=1, source_title="Another story", source_text="The door was blue.",
    )
    DebaterProfile.objects.create(name="solo", backend="scripted", model="solo", options={"text": SPEECH, "delay_s": 0.02})
    JudgeProfile.objects.create(name="panel", backend="scripted", model="judge")
    spec = tournaments.validate({
        "name": "with-humans",
        "questions": {"set": question.question_set.name},
        "debaters": ["solo"],
        "self_play": True,
        "judges": ["panel"],
        "limits": {"rounds": 1, "max_tokens": 16, "word_limit": 20, "context_tokens": 120},
        "chunk_size": 1,
        "human": {"fraction": 1.0, "verdicts": 1, "mode": "offline"},
    })
    tournament = tournaments.create_tournament(spec)
    study = Study.objects.get(tournament=tournament)
    assert study.mode == Study.Mode.OFFLINE and study.verdicts_per_debate == 1
    researcher = Client()
    researcher.force_login(alice)
    page = researcher.get(f"/tournaments/{tournament.pk}/").content.decode()
    assert f'href="/studies/{study.pk}/" class="human-study"' in page
    tournaments.start(tournament.pk)

    clients = {}
    for judge in (bob, charlie):
        clients[judge.username] = Client()
        clients[judge.username].force_login(judge)
    deadline = time.monotonic() + 180
    # The judges ask for work while the tournament runs: offline, a debate joins the study when it finishes.
    while Verdict.objects.filter(kind=Verdict.Kind.HUMAN).count() < 4:
        assert time.monotonic() < deadline, "the human verdicts were not filled in time"
        for name, client in clients.items():
            response = client.post(f"/judge/studies/{study.pk}/next/")
            assert response.status_code == 302
            location = response["Location"]
            if not location.startswith("/judge/debates/"):
                continue
            page = client.get(location)
            assert page.status_code == 200
            verdict = client.post(location, {"p_first": "0.7", "p_second": "0.3", "reason": f"{name} read both speeches."})
            assert verdict.status_code == 302, verdict.content.decode()[-500:]
        time.sleep(0.5)

    deadline = time.monotonic() + 120
    while Tournament.objects.get(pk=tournament.pk).status != Tournament.Status.FINISHED:
        assert time.monotonic() < deadline, "the tournament did not finish"
        time.sleep(0.5)
    debates = list(tournament.debates.all())
    assert len(debates) == 4
    human = Verdict.objects.filter(kind=Verdict.Kind.HUMAN, debate__tournament=tournament)
    ai = Verdict.objects.filter(kind=Verdict.Kind.AI, debate__tournament=tournament)
    assert ai.count() == 4 and {v.debate_id for v in ai} == {d.pk for d in debates}
    assert human.count() == 4 and {v.debate_id for v in human} == {d.pk for d in debates}
    for judge in (bob, charlie):
        mine = human.filter(judge=judge).select_related("debate__question")
        # Each judge judged each story once: the exposure rules held under the race with the worker.
        assert sorted(v.debate.question.source_title for v in mine) == sorted({question.source_title, "Another story"})
    studies.settle(study)  # what the study page and the next claim do: link verdicts to their slots
    slots = StudySlot.objects.filter(entry__study=study)
    assert slots.count() == 4 and all(s.verdict_id is not None and s.handed_out == 1 for s in slots)
