"""The live runner on a scripted backend: order, resumption, leases, failures and the stream."""

from __future__ import annotations

import json

import pytest

from arena_event_capture import collect_events, reconstruct

from arena import services, worker_loop
from arena.engine.protocol import Limits
from arena.models import Debate, Turn
from arena.runner import run_debate
from debaters.backends import forget_backends, get_backend
from debaters.models import DebaterProfile

pytestmark = pytest.mark.django_db(transaction=True)

SPEECH = "I argue <quote>There was a thump.</quote> and <quote>the moon is made of cheese</quote> so I win."


@pytest.fixture(autouse=True)
def _fresh_backends():
    forget_backends()
    yield
    forget_backends()


def _profile(name: str, **options: object) -> DebaterProfile:
    return DebaterProfile.objects.create(name=name, backend="scripted", model="script", options={"text": SPEECH, **options})


def _debate(question, profile_a, profile_b=None, rounds: int = 2) -> Debate:  # type: ignore[no-untyped-def]
    return services.create_debate(
        question=question,
        debater_a=profile_a,
        debater_b=profile_b or profile_a,
        limits=Limits(rounds=rounds, max_tokens=64, word_limit=60, context_tokens=200),
        enqueue=False,
        seed=7,
    )


def test_it_runs_every_turn_in_protocol_order_and_checks_quotes(question) -> None:  # type: ignore[no-untyped-def]
    debate = _debate(question, _profile("s1"))
    outcome = worker_loop.run(run_debate(debate.pk, "owner-1"))
    assert outcome.status == "finished"
    debate.refresh_from_db()
    assert debate.status == Debate.Status.FINISHED
    turns = list(debate.turns.order_by("index"))
    assert [(t.index, t.round, t.side) for t in turns] == [(0, 1, 0), (1, 1, 1), (2, 2, 0), (3, 2, 1)]
    assert all(t.text == SPEECH for t in turns)
    verified = [q["verified"] for q in turns[0].quotes]
    assert verified == [True, False]
    assert len(turns[0].prompt_hash) == 64


def test_it_hides_round_one_from_the_other_opener_and_shows_later_rounds_everything(question) -> None:  # type: ignore[no-untyped-def]
    profile = _profile("s2", texts=["OPENING-A", "OPENING-B", "REBUTTAL-A", "REBUTTAL-B"])
    debate = _debate(question, profile)
    worker_loop.run(run_debate(debate.pk, "owner-1"))
    turns = {t.index: t for t in debate.turns.all()}
    first_two = [turns[0].prompt[-1]["content"], turns[1].prompt[-1]["content"]]
    for prompt in first_two:
        assert "OPENING" not in prompt
    later = turns[3].prompt[-1]["content"]
    for text in (turns[0].text, turns[1].text, turns[2].text):
        assert text in later
    assert question.source_text[:40] not in json.dumps([t.text for t in turns.values()])


def test_it_resumes_from_committed_turns_without_repeating_them(question) -> None:  # type: ignore[no-untyped-def]
    profile = _profile("s3")
    debate = _debate(question, profile)
    worker_loop.run(run_debate(debate.pk, "owner-1"))
    # Simulate a crash after round 1: drop the later turns and put the debate back to running.
    Turn.objects.filter(debate=debate, index__gte=2).delete()
    Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.RUNNING, lease_expires=None, lease_owner="dead")
    api = get_backend(profile.backend_spec())
    before = len(api.calls)  # type: ignore[attr-defined]
    outcome = worker_loop.run(run_debate(debate.pk, "owner-2"))
    assert outcome.status == "finished"
    assert outcome.turns_written == 2
    assert len(api.calls) - before == 2  # type: ignore[attr-defined]
    assert sorted(debate.turns.values_list("index", flat=True)) == [0, 1, 2, 3]


def test_it_leaves_a_debate_held_by_a_live_lease_alone(question) -> None:  # type: ignore[no-untyped-def]
    debate = _debate(question, _profile("s4"))
    assert services.claim_debate(debate.pk, "someone-else")
    outcome = worker_loop.run(run_debate(debate.pk, "owner-1"))
    assert outcome.status == "held-elsewhere"
    assert outcome.retry_after is not None and outcome.retry_after > 0
    assert debate.turns.count() == 0


def test_it_does_nothing_for_a_finished_debate(question) -> None:  # type: ignore[no-untyped-def]
    debate = _debate(question, _profile("s5"), rounds=1)
    worker_loop.run(run_debate(debate.pk, "owner-1"))
    outcome = worker_loop.run(run_debate(debate.pk, "owner-2"))
    assert outcome.status == "not-claimable"
    assert debate.turns.count() == 2


def test_it_marks_the_debate_failed_with_the_reason_when_the_backend_refuses(question) -> None:  # type: ignore[no-untyped-def]
    debate = _debate(question, _profile("s6", fail="permanent"))
    outcome = worker_loop.run(run_debate(debate.pk, "owner-1"))
    assert outcome.status == "failed"
    debate.refresh_from_db()
    assert debate.status == Debate.Status.FAILED
    assert "scripted permanent failure" in debate.error


def test_it_regenerates_a_turn_whose_stream_broke_and_retracts_the_partial_text(question) -> None:  # type: ignore[no-untyped-def]
    debate = _debate(question, _profile("s7", fail_after_words=3), rounds=1)
    events = collect_events(debate.pk, lambda: worker_loop.run(run_debate(debate.pk, "owner-1")))
    debate.refresh_from_db()
    assert debate.status == Debate.Status.FINISHED
    assert all(t.text == SPEECH for t in debate.turns.all())
    resets = [e for e in events if e["type"] == "turn_reset"]
    assert len(resets) == 1
    # What a client reconstructs from the events equals the stored turns.
    assert reconstruct(events) == {t.index: t.text for t in debate.turns.all()}


def test_it_streams_deltas_with_sequence_numbers_that_rebuild_the_stored_text(question) -> None:  # type: ignore[no-untyped-def]
    debate = _debate(question, _profile("s8", delay_s=0.002))
    events = collect_events(debate.pk, lambda: worker_loop.run(run_debate(debate.pk, "owner-1")))
    for turn in {e["turn"] for e in events if e["type"] == "delta"}:
        seqs = [e["seq"] for e in events if e["type"] == "delta" and e["turn"] == turn]
        assert seqs == list(range(1, len(seqs) + 1))
    assert reconstruct(events) == {t.index: t.text for t in debate.turns.all()}
    assert events[-1] == {"type": "status", "status": "finished", "detail": ""}

