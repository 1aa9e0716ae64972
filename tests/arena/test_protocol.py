"""The debate protocol as a pure schedule: no database, no model."""

from __future__ import annotations

import pytest

from arena.engine.protocol import (
    DebateProtocol,
    Limits,
    Protocol,
    ProtocolError,
    Slot,
    draw_first_side,
    make_protocol,
)


def _protocol(rounds: int) -> DebateProtocol:
    return DebateProtocol(limits=Limits(rounds=rounds))


@pytest.mark.parametrize("rounds", [1, 2, 3, 4])
def test_it_schedules_two_speeches_per_round(rounds: int) -> None:
    protocol = _protocol(rounds)

    slots = protocol.slots()

    assert protocol.total_turns() == 2 * rounds
    assert [s.index for s in slots] == list(range(2 * rounds))
    assert [(s.round, s.side) for s in slots] == [(r, side) for r in range(1, rounds + 1) for side in (0, 1)]


@pytest.mark.parametrize("rounds", [1, 2, 3, 4])
def test_it_runs_round_one_as_one_simultaneous_step_where_neither_sees_the_other(rounds: int) -> None:
    first = _protocol(rounds).steps()[0]

    assert first == [Slot(0, 1, 0, ()), Slot(1, 1, 1, ())]


@pytest.mark.parametrize("rounds", [2, 3, 4])
def test_it_runs_later_rounds_one_speech_a_step_each_seeing_every_earlier_speech(rounds: int) -> None:
    later = _protocol(rounds).steps()[1:]

    assert len(later) == 2 * (rounds - 1)
    for offset, step in enumerate(later):
        index = 2 + offset
        assert len(step) == 1
        slot = step[0]
        assert slot.index == index
        assert slot.round == 2 + offset // 2
        assert slot.side == offset % 2
        assert slot.visible == tuple(range(index))


def test_it_never_lets_a_speech_see_itself_or_a_later_one() -> None:
    for slot in _protocol(4).slots():
        assert all(v < slot.index for v in slot.visible)


def test_it_has_one_step_for_a_one_round_debate() -> None:
    assert len(_protocol(1).steps()) == 1


def test_it_returns_every_step_when_nothing_is_committed() -> None:
    protocol = _protocol(3)

    assert protocol.pending_steps([]) == protocol.steps()


def test_it_returns_no_steps_when_everything_is_committed() -> None:
    assert _protocol(3).pending_steps(range(6)) == []


@pytest.mark.parametrize("committed, missing", [(0, 1), (1, 0)])
def test_it_keeps_only_the_missing_half_of_a_partly_committed_first_step(committed: int, missing: int) -> None:
    pending = _protocol(2).pending_steps([committed])

    assert [[s.index for s in step] for step in pending] == [[missing], [2], [3]]


def test_it_resumes_after_the_last_committed_sequential_turn() -> None:
    pending = _protocol(3).pending_steps([0, 1, 2])

    assert [[s.index for s in step] for step in pending] == [[3], [4], [5]]
    assert pending[0][0].visible == (0, 1, 2)


def test_it_accepts_committed_indices_in_any_order_and_with_duplicates() -> None:
    assert [[s.index for s in st] for st in _protocol(2).pending_steps([2, 0, 1, 0])] == [[3]]


@pytest.mark.parametrize(
    "done",
    [
        [2],  # round 2 spoke before either opening
        [0, 2],  # round 2 spoke before the second opening
        [0, 1, 3],  # side 1 of round 2 spoke before side 0
        [0, 1, 2, 5],  # round 3 side 1 before round 3 side 0
        [1, 4],
    ],
)
def test_it_refuses_out_of_order_commits(done: list[int]) -> None:
    with pytest.raises(ProtocolError):
        _protocol(3).pending_steps(done)


def test_it_accepts_valid_limits() -> None:
    Limits(rounds=1, max_tokens=8, word_limit=5, context_tokens=50).validate()
    Limits(rounds=10, max_tokens=8192, word_limit=5000, context_tokens=None).validate()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"rounds": 0}, "rounds"),
        ({"rounds": 11}, "rounds"),
        ({"rounds": -1}, "rounds"),
        ({"max_tokens": 7}, "max_tokens"),
        ({"max_tokens": 8193}, "max_tokens"),
        ({"word_limit": 4}, "word_limit"),
        ({"word_limit": 5001}, "word_limit"),
        ({"context_tokens": 49}, "context_tokens"),
        ({"context_tokens": 0}, "context_tokens"),
    ],
)
def test_it_refuses_limits_out_of_range(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(ProtocolError, match=field):
        Limits(**kwargs).validate()
    with pytest.raises(ProtocolError, match=field):
        Limits.from_settings(kwargs)


@pytest.mark.parametrize(
    "settings, field",
    [
        ({"rounds": "2"}, "rounds"),
        ({"rounds": 2.0}, "rounds"),
        ({"rounds": True}, "rounds"),
        ({"rounds": None}, "rounds"),
        ({"max_tokens": "160"}, "max_tokens"),
        ({"max_tokens": 160.5}, "max_tokens"),
        ({"word_limit": [150]}, "word_limit"),
        ({"word_limit": False}, "word_limit"),
        ({"context_tokens": "1500"}, "context_tokens"),
        ({"context_tokens": 1500.0}, "context_tokens"),
        ({"context_tokens": True}, "context_tokens"),
    ],
)
def test_it_refuses_settings_that_are_not_integers(settings: dict[str, object], field: str) -> None:
    with pytest.raises(ProtocolError, match=field):
        Limits.from_settings(settings)


def test_it_reads_settings_back_from_its_own_output() -> None:
    limits = Limits(rounds=3, max_tokens=64, word_limit=80, context_tokens=None)

    assert Limits.from_settings(limits.to_settings()) == limits


def test_it_fills_missing_settings_with_defaults() -> None:
    assert Limits.from_settings({}) == Limits()


def test_it_makes_a_debate_protocol_by_name() -> None:
    protocol = make_protocol("debate", {"rounds": 3})

    assert isinstance(protocol, DebateProtocol)
    assert protocol.limits.rounds == 3
    assert protocol.total_turns() == 6
    assert protocol.judge_sees_source() is False


def test_it_refuses_an_unknown_protocol_and_names_the_known_ones() -> None:
    with pytest.raises(ProtocolError, match=r"unknown protocol 'mystery'.*debate"):
        make_protocol("mystery", {"rounds": 2})


def test_it_validates_limits_when_making_a_protocol() -> None:
    with pytest.raises(ProtocolError, match="rounds"):
        make_protocol("debate", {"rounds": 0})


# --- Speaking order: the debate's first_side, not the stored answer order ------------------------

ORDERED = ["debate", "interactive", "open-debate"]


def _ordered(name: str, rounds: int, first_side: int) -> Protocol:
    return make_protocol(name, {"rounds": rounds, "open_choice": {"side": 0}}, seed=5, first_side=first_side)


@pytest.mark.parametrize("name", ORDERED)
@pytest.mark.parametrize("rounds", [1, 2, 4])
def test_with_first_side_1_the_debater_for_answer_1_speaks_first_in_every_round(name: str, rounds: int) -> None:
    slots = _ordered(name, rounds, 1).slots()

    assert [(s.index, s.round, s.side) for s in slots] == [
        (2 * (r - 1) + k, r, side) for r in range(1, rounds + 1) for k, side in enumerate((1, 0))
    ]
    for rnd in range(1, rounds + 1):
        first = min((s for s in slots if s.round == rnd), key=lambda s: s.index)
        assert first.side == 1


@pytest.mark.parametrize("name", ORDERED)
def test_first_side_changes_only_who_speaks_first_not_what_anyone_sees(name: str) -> None:
    zero, one = _ordered(name, 3, 0).steps(), _ordered(name, 3, 1).steps()

    assert one[0] == [Slot(0, 1, 1, ()), Slot(1, 1, 0, ())]  # round 1 stays simultaneous
    assert [[(s.index, s.round, s.visible) for s in step] for step in zero] == [
        [(s.index, s.round, s.visible) for s in step] for step in one
    ]
    assert [[1 - s.side for s in step] for step in zero] == [[s.side for s in step] for step in one]
    assert _ordered(name, 3, 1).question_rounds() == _ordered(name, 3, 0).question_rounds()


def test_first_side_defaults_to_answer_0_the_order_of_debates_created_before_it() -> None:
    assert make_protocol("debate", {"rounds": 2}).slots() == _ordered("debate", 2, 0).slots()
    assert [s.side for s in make_protocol("debate", {"rounds": 2}).slots()] == [0, 1, 0, 1]


@pytest.mark.parametrize("name", ["consultancy", "open-consultancy"])
def test_a_consultancy_has_one_speaker_whatever_first_side_says(name: str) -> None:
    settings = {"rounds": 3, "consultant_side": 0, "open_choice": {"side": 0}}

    assert make_protocol(name, settings, first_side=1).slots() == make_protocol(name, settings, first_side=0).slots()


@pytest.mark.parametrize("bad", [2, -1, True])
def test_it_refuses_a_first_side_that_is_not_an_answer(bad: int) -> None:
    with pytest.raises(ProtocolError, match="first_side must be 0 or 1"):
        make_protocol("debate", {"rounds": 2}, first_side=bad)


def test_the_first_side_draw_is_fixed_by_the_seed_and_takes_both_values() -> None:
    draws = [draw_first_side(seed) for seed in range(400)]

    assert draws == [draw_first_side(seed) for seed in range(400)]
    assert 150 < sum(draws) < 250  # about half: uniform over the two answers
