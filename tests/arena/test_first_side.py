"""The speaking order is drawn per debate (``Debate.first_side``) so it does not reveal which answer
is stored first: creation draws it, the runner follows it, check_record holds turns to it, exports
record it, and a judge's transcript order says nothing about the stored order."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from arena import services, tournaments, worker_loop
from arena.engine.protocol import Limits, draw_first_side, make_protocol
from arena.models import Debate, Turn
from arena.runner import run_debate
from arena.tournaments import validate
from debaters.backends import forget_backends
from debaters.models import DebaterProfile
from judging.analysis import load_rows, verdict_table
from judging.exports import ExportRequest, run_export
from judging.judge_view import JudgeView, display_ranks
from judging.models import Assignment
from judging.record import check_record
from judging.services import submit_human_verdict

SPEECH = "I argue <quote>There was a thump.</quote> so my answer holds."
LIMITS = Limits(rounds=2, max_tokens=24, word_limit=60, context_tokens=120)


@pytest.fixture(autouse=True)
def _fresh_backends():  # type: ignore[no-untyped-def]
    forget_backends()
    yield
    forget_backends()


def _create(question, profile, seed: int | None, protocol: str = "debate") -> Debate:  # type: ignore[no-untyped-def]
    return services.create_debate(
        question=question, debater_a=profile, debater_b=profile, limits=LIMITS, protocol=protocol, enqueue=False,
        seed=seed,
    )  # fmt: skip


def _seed_with_first_side(first_side: int) -> int:
    return next(seed for seed in range(100) if draw_first_side(seed) == first_side)


@pytest.mark.django_db
def test_creation_draws_first_side_from_the_seed_and_both_answers_come_first(question, profile) -> None:  # type: ignore[no-untyped-def]
    debates = [_create(question, profile, seed) for seed in range(60)]

    created = Debate.objects.filter(pk__in=[d.pk for d in debates]).order_by("seed")
    stored = list(created.values_list("seed", "first_side"))
    assert stored == [(seed, draw_first_side(seed)) for seed in range(60)]
    assert {side for _, side in stored} == {0, 1}
    assert 15 <= sum(side for _, side in stored) <= 45
    assert _create(question, profile, 41).first_side == _create(question, profile, 41).first_side


@pytest.mark.django_db
def test_creation_without_a_seed_still_draws_both_speaking_orders(question, profile) -> None:  # type: ignore[no-untyped-def]
    debates = [_create(question, profile, None) for _ in range(60)]

    assert {d.first_side for d in debates} == {0, 1}
    assert all(d.first_side == draw_first_side(d.seed) for d in debates)


@pytest.mark.django_db
def test_a_tournament_draws_each_debates_speaking_order_from_its_seed(question) -> None:  # type: ignore[no-untyped-def]
    for name in ("s1", "s2", "s3"):
        DebaterProfile.objects.create(name=name, backend="scripted", model=name, options={"text": SPEECH})
    spec = validate(
        {
            "name": "orders",
            "questions": {"set": question.question_set.name},
            "debaters": ["s1", "s2", "s3"],
            "protocols": ["debate", "interactive"],
            "limits": {"rounds": 2, "max_tokens": 16, "word_limit": 20, "context_tokens": 120},
        }
    )
    tournament = tournaments.create_tournament(spec)

    debates = list(tournament.debates.all())
    assert len(debates) == 24
    assert all(d.first_side == draw_first_side(d.seed) for d in debates)
    # Speaking order and the judges' answer order ("both orders") are drawn independently.
    assert {(d.first_side, d.settings["shown_first"]) for d in debates} == {(0, 0), (0, 1), (1, 0), (1, 1)}


@pytest.mark.django_db(transaction=True)
def test_the_runner_lets_answer_1_speak_first_in_every_round_when_drawn(question) -> None:  # type: ignore[no-untyped-def]
    profile = DebaterProfile.objects.create(
        name="s-order", backend="scripted", model="script", options={"texts": ["ONE", "TWO", "THREE", "FOUR"]}
    )
    debate = _create(question, profile, _seed_with_first_side(1))
    assert debate.first_side == 1

    assert worker_loop.run(run_debate(debate.pk, "owner-1")).status == "finished"

    turns = list(debate.turns.order_by("index"))
    assert [(t.index, t.round, t.side) for t in turns] == [(0, 1, 1), (1, 1, 0), (2, 2, 1), (3, 2, 0)]
    # Round 2's second speaker (answer 0) saw the rebuttal of answer 1 that came before it.
    assert turns[2].text in turns[3].prompt[-1]["content"]
    assert check_record([debate.pk]) == []


@pytest.mark.django_db
def test_check_record_holds_turns_to_the_drawn_speaking_order(question, profile) -> None:  # type: ignore[no-untyped-def]
    debate = _create(question, profile, _seed_with_first_side(1))
    protocol = make_protocol(debate.protocol, debate.settings, seed=debate.seed)  # the old order: answer 0 first
    now = timezone.now()
    for slot in protocol.slots():
        Turn.objects.create(
            debate=debate, index=slot.index, round=slot.round, side=slot.side, text="Speech.", prompt=[],
            prompt_hash="x", started_at=now, finished_at=now,
        )  # fmt: skip

    problems = [str(v) for v in check_record([debate.pk])]

    assert f"debate {debate.pk}: turn 2 is round 2 side 0, its protocol's slot is round 2 side 1 (first_side 1)" in problems
    Debate.objects.filter(pk=debate.pk).update(first_side=0)
    assert check_record([debate.pk]) == []
    Debate.objects.filter(pk=debate.pk).update(first_side=2)
    assert f"debate {debate.pk}: first_side 2 is not 0 or 1" in [str(v) for v in check_record([debate.pk])]


@pytest.mark.parametrize("first_side", [0, 1])
@pytest.mark.parametrize("shown_first", [0, 1])
def test_the_judges_transcript_order_depends_on_the_draws_not_the_stored_order(first_side: int, shown_first: int) -> None:
    protocol = make_protocol("debate", {"rounds": 3}, first_side=first_side)
    view = JudgeView(shown_first, display_ranks(protocol, shown_first))
    by_place = sorted(protocol.slots(), key=lambda s: view.place(s.index))

    letters = [view.letter(s.side) for s in by_place]

    # Round 1 is simultaneous: the judge's A comes first. Later rounds: whoever was drawn to speak first.
    later_first = "A" if first_side == shown_first else "B"
    later_second = "B" if later_first == "A" else "A"
    assert letters == ["A", "B", later_first, later_second, later_first, later_second]


@pytest.mark.django_db
def test_exports_and_verdicts_csv_record_who_spoke_first_apart_from_who_was_shown_first(  # type: ignore[no-untyped-def]
    question, profile, bob, charlie, tmp_path
) -> None:
    debates = {}
    for first_side, judge in ((0, bob), (1, charlie)):  # one judge per debate: a second read of a story is flagged
        debate = services.create_debate(
            question=question, debater_a=profile, debater_b=profile, limits=LIMITS, judges=[judge], enqueue=False,
            seed=_seed_with_first_side(first_side),
        )  # fmt: skip
        now = timezone.now()
        protocol = make_protocol(debate.protocol, debate.settings, seed=debate.seed, first_side=debate.first_side)
        for slot in protocol.slots():
            Turn.objects.create(
                debate=debate, index=slot.index, round=slot.round, side=slot.side, prompt=[], prompt_hash="x",
                text=f"Speech {slot.index} for answer {slot.side + 1}.", started_at=now, finished_at=now,
            )  # fmt: skip
        Debate.objects.filter(pk=debate.pk).update(status=Debate.Status.FINISHED, started_at=now, finished_at=now)
        Assignment.objects.filter(debate=debate).update(shown_first=0)
        submit_human_verdict(Assignment.objects.get(debate=debate), 0.8, 0.2, "The first answer quotes the text.")
        debates[first_side] = debate
    assert check_record([d.pk for d in debates.values()]) == []

    for kind, fmt in (("arguments", "conversational"), ("judgments", "unpaired")):
        result = run_export(ExportRequest(kind=kind, format=fmt, file_format="jsonl"), tmp_path / kind)
        rows = [json.loads(line) for line in result.path.read_text(encoding="utf-8").splitlines()]
        assert {r["debate_id"]: (r["first_side"], r["shown_first"]) for r in rows} == {
            debates[0].pk: (0, 0),
            debates[1].pk: (1, 0),
        }
    # The judgments prompt follows the speaking order: in round 2 answer 2 (the judge's B) speaks first.
    judged = {r["debate_id"]: r["prompt"][-1]["content"] for r in rows}
    text = judged[debates[1].pk]
    assert text.index("Speech 2 for answer 2.") < text.index("Speech 3 for answer 1.")

    header, body = verdict_table(load_rows())
    assert {line[header.index("debate_id")]: line[header.index("first_side")] for line in body} == {
        debates[0].pk: 0,
        debates[1].pk: 1,
    }
