"""Every protocol end to end on the embedded model (tiny limits), through the lockstep runner."""

from __future__ import annotations

import pytest

from arena import services, worker_loop
from arena.engine.protocol import ProtocolSettings, draw_consultant_side
from arena.models import Debate, JudgeQuestion
from arena.runner import run_debates

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PROTOCOLS = ["debate", "interactive", "consultancy", "open-debate", "open-consultancy", "naive", "expert"]


def test_it_runs_every_protocol_on_the_embedded_model(question, profile) -> None:  # type: ignore[no-untyped-def]
    debates: dict[str, Debate] = {}
    for name in PROTOCOLS:
        # Interactive needs a second round for the question; one round is enough everywhere else.
        rounds = 2 if name == "interactive" else 1
        settings = ProtocolSettings(rounds=rounds, max_tokens=12, word_limit=60, context_tokens=120)
        debates[name] = services.create_debate(
            question=question,
            debater_a=profile,
            debater_b=profile,
            limits=settings,
            protocol=name,
            enqueue=False,
            seed=101,
        )

    # One lockstep run: the backend sees the speeches of all seven debates as batches.
    outcomes = worker_loop.run(run_debates([d.pk for d in debates.values()], "e2e-protocols"))

    for name, debate in debates.items():
        debate.refresh_from_db()
        assert outcomes[debate.pk].status == "finished", (name, debate.error)
        assert debate.status == Debate.Status.FINISHED, name
    turns = {name: list(d.turns.order_by("index")) for name, d in debates.items()}
    assert all(t.text.strip() for ts in turns.values() for t in ts), "every speech has text"
    assert all(len(t.prompt_hash) == 64 and "concession" in t.meta for ts in turns.values() for t in ts)

    # The debater drawn to speak first (Debate.first_side, from the seed) speaks first in every round.
    for name in ("debate", "interactive"):
        first = debates[name].first_side
        assert [t.side for t in turns[name]] == [first, 1 - first] * debates[name].rounds, name

    side = draw_consultant_side(debates["consultancy"].seed)
    assert debates["consultancy"].settings["consultant_side"] == side
    assert [(t.round, t.side) for t in turns["consultancy"]] == [(1, side)]
    assert "You are a consultant" in turns["consultancy"][0].prompt[0]["content"]

    for name in ("open-debate", "open-consultancy"):
        choice = debates[name].settings["open_choice"]
        assert (
            choice["side"] in (0, 1)
            and abs(sum(choice["p"]) - 1) < 1e-6
            and choice["method"].startswith("choice_probs")
        )
    assert [t.side for t in turns["open-consultancy"]] == [debates["open-consultancy"].settings["open_choice"]["side"]]
    assert sorted(t.side for t in turns["open-debate"]) == [0, 1]

    assert turns["naive"] == [] and turns["expert"] == []

    asked = JudgeQuestion.objects.get(debate=debates["interactive"])
    assert asked.after_round == 1 and asked.ai_judge and asked.text
    second_round = [t for t in turns["interactive"] if t.round == 2]
    assert len(second_round) == 2
    for turn in second_round:
        last_user = [m for m in turn.prompt if m["role"] == "user"][-1]
        assert asked.text in last_user["content"]
