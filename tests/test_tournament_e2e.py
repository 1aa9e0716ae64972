"""A small tournament on real Celery workers with the embedded model and an AI judge: a worker is
killed mid-tournament (SIGKILL) and a new one finishes it with every debate run exactly once; the
ratings page shows what the stored verdicts imply."""

from __future__ import annotations

import time

import pytest
from conftest_paths import ARTIFACTS
from django.db.models import Count

from arena import tournaments
from arena.importing import SAMPLE_SET, parse_line
from arena.models import Debate, Question, Tournament, Turn
from debaters.models import DebaterProfile
from judging.ai_verdicts import default_judge_profile
from judging.models import Verdict

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# A crashed worker's task comes back after the visibility timeout and its debates' leases expire
# after the lease: both short here so the test does not wait an hour.
FAST_RECOVERY = {"CELERY_VISIBILITY_TIMEOUT": "5", "ARENA_LEASE_SECONDS": "5"}


def _second_question(question: Question) -> Question:
    with SAMPLE_SET.open() as handle:
        handle.readline()
        row = parse_line(handle.readline())
    ext = row.pop("external_id")
    return Question.objects.create(question_set=question.question_set, external_id=ext, **row)


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_a_tournament_survives_a_killed_worker_and_runs_every_debate_once(celery_worker_proc, question, client, alice) -> None:  # type: ignore[no-untyped-def]
    Worker = type(celery_worker_proc)
    from arena.celery import app

    # The fixture's worker has production timeouts: replace it by one that recovers fast.
    celery_worker_proc.stop()
    # Messages left in the queue by an earlier run would name ids of a dropped test database.
    app.control.purge()
    _second_question(question)
    for name, temperature in (("emb-cold", 0.2), ("emb-hot", 1.2)):
        DebaterProfile.objects.create(
            name=name, backend="transformers", model="embedded", options={"device": "cpu"},
            sampling={"temperature": temperature, "top_p": 0.95},
        )
    judge = default_judge_profile()
    spec = tournaments.validate(
        {
            "name": "e2e",
            "questions": {"set": question.question_set.name},
            "debaters": ["emb-cold", "emb-hot"],
            "judges": [judge.name],
            "limits": {"rounds": 1, "max_tokens": 12, "word_limit": 20, "context_tokens": 120},
            # Small chunks on a one-slot worker: the kill lands between finished and unfinished work.
            "chunk_size": 2,
            "seed": 11,
        }
    )
    first = Worker(ARTIFACTS / "celery-tournament-1.log", concurrency=1, extra_env=FAST_RECOVERY)
    second = None
    try:
        tournament = tournaments.create_tournament(spec)
        assert tournament.debates.count() == 8  # 1 pair × 2 questions × 2 sides × 2 orders
        tournaments.start(tournament.pk)  # queues the dispatch task on commit

        def some_work_done() -> bool:
            return Verdict.objects.filter(debate__tournament=tournament).exists()

        _wait(some_work_done, 600, "the first verdict")
        first.kill()
        done_at_kill = Debate.objects.filter(tournament=tournament, status=Debate.Status.FINISHED).count()
        verdicts_at_kill = Verdict.objects.filter(debate__tournament=tournament).count()
        assert verdicts_at_kill < 8, "the tournament finished before the worker could be killed"
        second = Worker(ARTIFACTS / "celery-tournament-2.log", concurrency=2, extra_env=FAST_RECOVERY)

        def finished() -> bool:
            return Tournament.objects.get(pk=tournament.pk).status != Tournament.Status.RUNNING

        _wait(finished, 900, "the tournament to finish on the second worker")
    finally:
        first.stop()
        if second is not None:
            second.stop()
        # A redelivered duplicate may be put back on the queue at shutdown.
        app.control.purge()

    tournament.refresh_from_db()
    assert tournament.status == Tournament.Status.FINISHED, tournament.error
    debates = list(tournament.debates.all())
    assert all(d.status == Debate.Status.FINISHED for d in debates), [(d.pk, d.status, d.error) for d in debates]
    # Every speech exactly once: two openings per debate, no more, no gaps.
    per_debate = dict(Turn.objects.filter(debate__tournament=tournament).values_list("debate").annotate(n=Count("pk")))
    assert per_debate == {d.pk: 2 for d in debates}
    assert set(Turn.objects.filter(debate__tournament=tournament).values_list("index", flat=True)) == {0, 1}
    assert all(t.text.strip() for t in Turn.objects.filter(debate__tournament=tournament))
    # One AI verdict per debate, in the order the debate shows its answers.
    verdicts = list(Verdict.objects.filter(debate__tournament=tournament).select_related("debate__question"))
    assert len(verdicts) == 8 and {v.debate_id for v in verdicts} == {d.pk for d in debates}
    for v in verdicts:
        assert v.kind == Verdict.Kind.AI and v.ai_judge_id == judge.pk
        assert v.shown_first == v.debate.settings["shown_first"]
        assert v.p_a + v.p_b == pytest.approx(1.0)
        assert v.position_bias == pytest.approx((v.meta["by_order"][0][0] - v.meta["by_order"][1][0]) / 2)
    assert done_at_kill <= 8

    # The ratings page shows what the stored verdicts imply.
    wins = {"emb-cold": 0.0, "emb-hot": 0.0}
    for v in verdicts:
        a, b = v.debate.debater_a.name, v.debate.debater_b.name
        if v.p_a > v.p_b:
            wins[a] += 1
        elif v.p_b > v.p_a:
            wins[b] += 1
        else:
            wins[a] += 0.5
            wins[b] += 0.5
    client.force_login(alice)
    html = client.get("/analysis/", {"tournament": tournament.pk, "rounds": 50}).content.decode()
    assert "8 stored verdicts" in html
    table = html[html.index('id="ratings-table"') : html.index("</table>", html.index('id="ratings-table"'))]
    if wins["emb-cold"] != wins["emb-hot"]:
        leader = max(wins, key=wins.__getitem__)
        trailer = min(wins, key=wins.__getitem__)
        assert table.index(f"<td>{leader}</td>") < table.index(f"<td>{trailer}</td>")
    for name, n in wins.items():
        row = table[table.index(f"<td>{name}</td>") :]
        assert f"<td>{n:g}</td></tr>" in row[: row.index("</tr>") + 5]
    correct = sum(v.correct for v in verdicts)
    protocol_table = html[html.index('id="protocol-table"') :]
    assert f"<td>debate</td><td>8</td><td>{correct / 8 * 100:.1f}%</td>" in protocol_table
