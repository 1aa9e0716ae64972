"""Tournament definitions: validation errors, expansion (both sides × both orders), idempotent creation,
and pause / resume / cancel on the stored state."""

from __future__ import annotations

import pytest

from arena import tournaments
from arena.models import Debate, QuestionSet, Tournament
from arena.tournaments import TournamentConfigError, TournamentStateError, parse_yaml, plan, validate
from debaters.models import DebaterProfile
from judging.models import JudgeProfile

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(question):  # type: ignore[no-untyped-def]
    from arena.models import Question

    second = Question.objects.create(
        question_set=question.question_set,
        external_id="q2",
        question="Who?",
        answers=["Ann", "Bob"],
        correct_index=1,
        source_title="T",
        source_text="Ann met Bob. Bob won.",
    )
    for name in ("d1", "d2", "d3"):
        DebaterProfile.objects.create(name=name, backend="scripted", model="script")
    JudgeProfile.objects.create(name="j1", backend="scripted", model="script")
    return question, second


def _definition(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "t",
        "questions": {"set": "test-set"},
        "debaters": ["d1", "d2"],
        "protocols": ["debate"],
        "judges": ["j1"],
        "limits": {"rounds": 1, "max_tokens": 12, "word_limit": 20, "context_tokens": 120},
    }
    base.update(overrides)
    return base


def _problems(data: dict[str, object]) -> list[str]:
    with pytest.raises(TournamentConfigError) as info:
        validate(data)
    return info.value.problems


def test_it_accepts_a_valid_definition(setup) -> None:  # type: ignore[no-untyped-def]
    spec = validate(_definition())
    assert [d.name for d in spec.debaters] == ["d1", "d2"]
    assert len(spec.questions) == 2
    assert spec.limits.rounds == 1 and spec.limits.context_tokens == 120


def test_it_names_an_unknown_debater_judge_and_protocol_at_once(setup) -> None:  # type: ignore[no-untyped-def]
    problems = _problems(_definition(debaters=["d1", "ghost"], judges=["nobody"], protocols=["debate", "shouting"]))
    text = "\n".join(problems)
    assert "unknown debater profile 'ghost'" in text
    assert "unknown judge profile 'nobody'" in text
    assert "unknown protocol 'shouting'" in text
    assert "known: " in text and "debate" in text.rsplit("known: ", 1)[1]


def test_it_rejects_an_empty_question_selection(setup) -> None:  # type: ignore[no-untyped-def]
    QuestionSet.objects.create(name="empty-set")
    assert any("question selection is empty" in p for p in _problems(_definition(questions={"set": "empty-set"})))
    assert any("unknown question set 'nope'" in p for p in _problems(_definition(questions="nope")))
    assert any("has no question(s) zzz" in p for p in _problems(_definition(questions={"set": "test-set", "ids": ["zzz"]})))


def test_it_rejects_impossible_limits(setup) -> None:  # type: ignore[no-untyped-def]
    assert any("rounds must be between 1 and 10" in p for p in _problems(_definition(limits={"rounds": 0})))
    assert any("context_tokens must be at least 50" in p for p in _problems(_definition(limits={"context_tokens": 3})))
    assert any("unknown key(s) round" in p for p in _problems(_definition(limits={"round": 2})))
    assert any("more than max_debates" in p for p in _problems(_definition(max_debates=3)))


def test_it_rejects_typos_and_a_single_debater_without_self_play(setup) -> None:  # type: ignore[no-untyped-def]
    assert any("unknown key(s) debator" in p for p in _problems({**_definition(), "debator": ["d1"]}))
    assert any("at least two debaters" in p for p in _problems(_definition(debaters=["d1"])))
    validate(_definition(debaters=["d1"], self_play=True))


def test_an_imported_debater_cannot_be_run(setup) -> None:  # type: ignore[no-untyped-def]
    DebaterProfile.objects.create(name="nyu-someone", backend=tournaments.IMPORTED_BACKEND, model="someone")
    assert any("cannot be run" in p for p in _problems(_definition(debaters=["d1", "nyu-someone"])))


def test_the_example_definition_is_valid_yaml() -> None:
    data = parse_yaml(tournaments.EXAMPLE)
    assert set(data) <= tournaments.KNOWN_KEYS


def test_yaml_errors_name_the_line() -> None:
    with pytest.raises(TournamentConfigError) as info:
        parse_yaml("name: t\ndebaters: [d1, d2\n")
    assert "line" in info.value.problems[0]
    with pytest.raises(TournamentConfigError):
        parse_yaml("- just\n- a list\n")


def test_it_plays_every_pairing_with_both_sides_and_both_orders(setup) -> None:  # type: ignore[no-untyped-def]
    spec = validate(_definition(debaters=["d1", "d2", "d3"]))
    planned = plan(spec)
    # 3 pairs × 2 side assignments × 2 orders × 2 questions
    assert len(planned) == 3 * 2 * 2 * 2
    assert len({p.key for p in planned}) == len(planned)
    for question in spec.questions:
        mine = [p for p in planned if p.question == question]
        for x, y in (("d1", "d2"), ("d1", "d3"), ("d2", "d3")):
            cells = {(p.debater_a.name, p.debater_b.name, p.shown_first) for p in mine if {p.debater_a.name, p.debater_b.name} == {x, y}}
            assert cells == {(x, y, 0), (x, y, 1), (y, x, 0), (y, x, 1)}
    assert all(p.settings["shown_first"] == p.shown_first for p in planned)
    # Each debater argues the right answer as often as the wrong one.
    right = {name: 0 for name in ("d1", "d2", "d3")}
    for p in planned:
        right[(p.debater_a if p.question.correct_index == 0 else p.debater_b).name] += 1
    assert len(set(right.values())) == 1


def test_self_play_adds_one_side_assignment_per_debater(setup) -> None:  # type: ignore[no-untyped-def]
    planned = plan(validate(_definition(self_play=True)))
    # per question: 2 cross side assignments + 2 self-play debates, each in 2 orders
    assert len(planned) == (2 + 2) * 2 * 2
    selfs = [p for p in planned if p.debater_a == p.debater_b]
    assert len(selfs) == 2 * 2 * 2


def test_one_speaker_and_no_speaker_protocols_expand_by_side_and_order(setup) -> None:  # type: ignore[no-untyped-def]
    planned = plan(validate(_definition(protocols=["consultancy", "naive"])))
    consult = [p for p in planned if p.protocol == "consultancy"]
    # 2 debaters × 2 assigned sides × 2 orders × 2 questions; the consultant is both FKs
    assert len(consult) == 16
    assert all(p.debater_a == p.debater_b for p in consult)
    assert {(p.debater_a.name, p.settings["consultant_side"], p.shown_first) for p in consult if p.question == planned[0].question} == {
        (d, s, o) for d in ("d1", "d2") for s in (0, 1) for o in (0, 1)
    }
    naive = [p for p in planned if p.protocol == "naive"]
    assert len(naive) == 2 * 2


def test_protocol_settings_are_checked_and_reserved_ones_refused(setup) -> None:  # type: ignore[no-untyped-def]
    assert any("settings for debate" in p for p in _problems(_definition(settings={"scoring": "vibes"})))
    assert any("set by the tournament" in p for p in _problems(_definition(settings={"shown_first": 1})))
    spec = validate(_definition(settings={"scoring": "quadratic"}))
    assert all(p.settings["scoring"] == "quadratic" for p in plan(spec))


def test_seeds_are_reproducible_and_distinct(setup) -> None:  # type: ignore[no-untyped-def]
    first = {p.key: p.seed for p in plan(validate(_definition(seed=5)))}
    again = {p.key: p.seed for p in plan(validate(_definition(seed=5)))}
    other = {p.key: p.seed for p in plan(validate(_definition(seed=6)))}
    assert first == again
    assert first != other
    assert len(set(first.values())) == len(first)


def test_creation_is_idempotent(setup) -> None:  # type: ignore[no-untyped-def]
    spec = validate(_definition())
    tournament = tournaments.create_tournament(spec)
    assert tournament.debates.count() == 8
    assert tournaments.ensure_debates(tournament) == 0
    assert tournament.debates.count() == 8
    # Even inserting the same keys again directly is a no-op (the unique constraint).
    Debate.objects.bulk_create([Debate(**{f.attname: getattr(d, f.attname) for f in Debate._meta.concrete_fields if f.attname != "id"}) for d in tournament.debates.all()], ignore_conflicts=True)
    assert tournament.debates.count() == 8
    debate = tournament.debates.order_by("pk").first()
    assert debate.settings["shown_first"] in (0, 1) and debate.settings["rounds"] == 1
    assert tournament.config["questions"]["ids"] == [q.external_id for q in spec.questions]


def test_pause_resume_cancel_follow_the_state_machine(setup) -> None:  # type: ignore[no-untyped-def]
    tournament = tournaments.create_tournament(validate(_definition()))
    with pytest.raises(TournamentStateError):
        tournaments.pause(tournament.pk)
    tournaments.start(tournament.pk, enqueue=False)
    running = tournament.debates.order_by("pk").first()
    Debate.objects.filter(pk=running.pk).update(status=Debate.Status.RUNNING, lease_owner="w1")
    tournaments.pause(tournament.pk)
    tournament.refresh_from_db()
    assert tournament.status == Tournament.Status.PAUSED
    running.refresh_from_db()
    # A paused tournament's running debate goes back to the queue, its lease taken away.
    assert running.status == Debate.Status.QUEUED and running.lease_owner == ""
    assert tournament.stats["active_s"] >= 0 and "resumed_at" not in tournament.stats
    tournaments.resume(tournament.pk, enqueue=False)
    tournaments.cancel(tournament.pk)
    tournament.refresh_from_db()
    assert tournament.status == Tournament.Status.CANCELLED
    assert set(tournament.debates.values_list("status", flat=True)) == {Debate.Status.CANCELLED}
    with pytest.raises(TournamentStateError):
        tournaments.resume(tournament.pk)


def test_progress_counts_debates_turns_and_verdicts(setup) -> None:  # type: ignore[no-untyped-def]
    tournament = tournaments.create_tournament(validate(_definition()))
    progress = tournaments.progress(tournament)
    assert progress.total == 8 and progress.queued == 8
    assert progress.turns_total == 8 * 2
    assert progress.verdicts_expected == 8
    assert progress.fraction == 0.0 and progress.eta_s is None
