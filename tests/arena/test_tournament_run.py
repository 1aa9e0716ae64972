"""Running tournaments in process on the scripted backend: chunks, AI judging, pause/resume/cancel,
re-running a chunk after a crash, and finishing."""

from __future__ import annotations

import threading
import time

import pytest

from arena import tournaments, worker_loop
from arena.models import Debate, Tournament, Turn
from arena.tournaments import validate
from debaters.backends import forget_backends
from debaters.models import DebaterProfile
from judging.models import JudgeProfile, Verdict

pytestmark = pytest.mark.django_db(transaction=True)

SPEECH = "I argue <quote>There was a thump.</quote> so my answer holds."


@pytest.fixture(autouse=True)
def _fresh_backends():  # type: ignore[no-untyped-def]
    forget_backends()
    yield
    forget_backends()


def _tournament(question, *, delay_s: float = 0.0, rounds: int = 1, chunk_size: int = 8) -> Tournament:  # type: ignore[no-untyped-def]
    for name in ("s1", "s2"):
        DebaterProfile.objects.create(name=name, backend="scripted", model=name, options={"text": SPEECH, "delay_s": delay_s})
    JudgeProfile.objects.create(name="uniform", backend="scripted", model="judge")
    spec = validate(
        {
            "name": "run",
            "questions": {"set": question.question_set.name},
            "debaters": ["s1", "s2"],
            "judges": ["uniform"],
            "limits": {"rounds": rounds, "max_tokens": 16, "word_limit": 20, "context_tokens": 120},
            "chunk_size": chunk_size,
        }
    )
    return tournaments.create_tournament(spec)


def test_it_runs_every_debate_once_and_judges_each_with_the_panel(question) -> None:  # type: ignore[no-untyped-def]
    tournament = _tournament(question, rounds=2, chunk_size=3)
    turns_seen: list[int] = []
    status = worker_loop.run(tournaments.run_inline(tournament.pk, "inline-1", on_turn=lambda d, n: turns_seen.append(d)))
    assert status == Tournament.Status.FINISHED
    debates = list(tournament.debates.all())
    assert len(debates) == 4 and all(d.status == Debate.Status.FINISHED for d in debates)
    assert Turn.objects.filter(debate__tournament=tournament).count() == 4 * 4
    assert len(turns_seen) == 16
    verdicts = Verdict.objects.filter(debate__tournament=tournament)
    assert verdicts.count() == 4
    assert {v.shown_first for v in verdicts} == {0, 1}
    assert all(v.shown_first == v.debate.settings["shown_first"] for v in verdicts)
    progress = tournaments.progress(Tournament.objects.get(pk=tournament.pk))
    assert progress.finished == 4 and progress.verdicts == 4 and progress.fraction == 1.0
    assert progress.completion_tokens > 0


def test_running_a_chunk_again_repeats_nothing(question) -> None:  # type: ignore[no-untyped-def]
    tournament = _tournament(question)
    tournaments.start(tournament.pk, enqueue=False)
    ids = list(tournament.debates.values_list("pk", flat=True))
    first = worker_loop.run(tournaments.run_chunk(tournament.pk, ids, "worker-a"))
    assert set(first.outcomes.values()) == {"finished"} and first.verdicts == 4
    turns = list(Turn.objects.filter(debate__tournament=tournament).values_list("pk", flat=True))
    # A redelivered task (its worker died after finishing) runs the same chunk again.
    again = worker_loop.run(tournaments.run_chunk(tournament.pk, ids, "worker-b"))
    assert set(again.outcomes.values()) == {"not-claimable"} and again.verdicts == 0
    assert list(Turn.objects.filter(debate__tournament=tournament).values_list("pk", flat=True)) == turns
    assert Verdict.objects.filter(debate__tournament=tournament).count() == 4
    assert tournaments.maybe_finish(tournament.pk)
    assert not tournaments.maybe_finish(tournament.pk)


def test_a_debate_held_by_a_live_worker_is_left_for_later(question) -> None:  # type: ignore[no-untyped-def]
    from arena import services

    tournament = _tournament(question)
    tournaments.start(tournament.pk, enqueue=False)
    ids = list(tournament.debates.order_by("pk").values_list("pk", flat=True))
    assert services.claim_debate(ids[0], "someone-else")
    result = worker_loop.run(tournaments.run_chunk(tournament.pk, ids, "worker-a"))
    assert result.retry == [ids[0]] and result.retry_after > 0
    assert not tournaments.maybe_finish(tournament.pk)


def test_pause_stops_the_chunk_and_resume_finishes_without_duplicates(question) -> None:  # type: ignore[no-untyped-def]
    tournament = _tournament(question, delay_s=0.05, rounds=2)
    result: dict[str, str] = {}
    runner = threading.Thread(
        target=lambda: result.setdefault("status", worker_loop.run(tournaments.run_inline(tournament.pk, "inline-p")))
    )
    runner.start()
    deadline = time.monotonic() + 30
    while not Turn.objects.filter(debate__tournament=tournament).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    tournaments.pause(tournament.pk)
    runner.join(30)
    assert result["status"] == Tournament.Status.PAUSED
    assert not Debate.objects.filter(tournament=tournament, status=Debate.Status.RUNNING).exists()
    kept = Turn.objects.filter(debate__tournament=tournament).count()
    assert 0 < kept < 16
    status = worker_loop.run(tournaments.run_inline(tournament.pk, "inline-r"))
    assert status == Tournament.Status.FINISHED
    # Every speech exists exactly once (the unique (debate, index) constraint would refuse a second).
    assert Turn.objects.filter(debate__tournament=tournament).count() == 16
    assert Verdict.objects.filter(debate__tournament=tournament).count() == 4
    assert Tournament.objects.get(pk=tournament.pk).stats["active_s"] > 0


def test_cancel_stops_for_good(question) -> None:  # type: ignore[no-untyped-def]
    tournament = _tournament(question, delay_s=0.05, rounds=2)
    result: dict[str, str] = {}
    runner = threading.Thread(
        target=lambda: result.setdefault("status", worker_loop.run(tournaments.run_inline(tournament.pk, "inline-c")))
    )
    runner.start()
    deadline = time.monotonic() + 30
    while not Turn.objects.filter(debate__tournament=tournament).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    tournaments.cancel(tournament.pk)
    runner.join(30)
    assert result["status"] == Tournament.Status.CANCELLED
    assert set(Debate.objects.filter(tournament=tournament).values_list("status", flat=True)) == {Debate.Status.CANCELLED}
    progress = tournaments.progress(Tournament.objects.get(pk=tournament.pk))
    assert progress.cancelled == 4 and progress.eta_s is None


def test_a_judge_that_cannot_score_is_recorded_and_does_not_block_the_end(question) -> None:  # type: ignore[no-untyped-def]
    tournament = _tournament(question)
    # The judge's backend is gone (a permanent error); the debaters use their own profiles.
    JudgeProfile.objects.filter(name="uniform").update(backend="uninstalled")
    status = worker_loop.run(tournaments.run_inline(tournament.pk, "inline-j"))
    tournament.refresh_from_db()
    assert status == Tournament.Status.FINISHED
    assert len(tournament.stats["judge_errors"]) == 4
    assert "unknown backend 'uninstalled'" in next(iter(tournament.stats["judge_errors"].values()))
    assert not Verdict.objects.filter(debate__tournament=tournament).exists()


def test_every_protocol_runs_to_verdicts_in_a_tournament(question) -> None:  # type: ignore[no-untyped-def]
    # Interactive debates pause for the judge's question (an AI panel asks through its model);
    # open protocols let the debater choose its answer first; single-speaker ones have one side.
    for name in ("s1", "s2"):
        DebaterProfile.objects.create(name=name, backend="scripted", model=name, options={"text": SPEECH})
    JudgeProfile.objects.create(name="uniform", backend="scripted", model="judge")
    protocols = ["debate", "interactive", "consultancy", "open-debate", "open-consultancy", "naive", "expert"]
    spec = validate(
        {
            "name": "all protocols",
            "questions": {"set": question.question_set.name},
            "debaters": ["s1", "s2"],
            "protocols": protocols,
            "judges": ["uniform"],
            "limits": {"rounds": 2, "max_tokens": 16, "word_limit": 20, "context_tokens": 120},
        }
    )
    tournament = tournaments.create_tournament(spec)
    status = worker_loop.run(tournaments.run_inline(tournament.pk, "inline-all"))
    assert status == Tournament.Status.FINISHED
    debates = list(tournament.debates.all())
    assert {d.protocol for d in debates} == set(protocols)
    unfinished = {d.pk: (d.protocol, d.status, d.error) for d in debates if d.status != Debate.Status.FINISHED}
    assert not unfinished
    judged = set(Verdict.objects.filter(debate__tournament=tournament).values_list("debate_id", flat=True))
    assert judged == {d.pk for d in debates}
    interactive = [d for d in debates if d.protocol == "interactive"]
    assert interactive and all(d.judge_questions.exists() for d in interactive)
