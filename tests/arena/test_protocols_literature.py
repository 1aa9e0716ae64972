"""The protocols of the literature and their judging rules, as pure code: no database, no model."""

from __future__ import annotations

import math

import pytest

from arena.engine.protocol import (
    PROTOCOLS,
    ConsultancyProtocol,
    DebateProtocol,
    ExpertJudgeProtocol,
    InteractiveDebateProtocol,
    JudgingRules,
    Limits,
    NaiveJudgeProtocol,
    OpenConsultancyProtocol,
    OpenDebateProtocol,
    ProtocolError,
    ProtocolSettings,
    Slot,
    draw_consultant_side,
    make_protocol,
    raw_score,
)

ALL = ["debate", "interactive", "consultancy", "open-debate", "open-consultancy", "naive", "expert"]


def test_it_offers_every_protocol_of_the_literature_by_name() -> None:
    assert sorted(PROTOCOLS) == sorted(ALL)


# --- Consultancy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("side", [0, 1])
def test_it_gives_a_consultancy_one_speaker_per_round_who_sees_its_own_earlier_speeches(side: int) -> None:
    protocol = make_protocol("consultancy", {"rounds": 3, "consultant_side": side})

    assert protocol.steps() == [[Slot(0, 1, side, ())], [Slot(1, 2, side, (0,))], [Slot(2, 3, side, (0, 1))]]
    assert protocol.total_turns() == 3
    assert protocol.speaking_sides() == (side,)


def test_it_draws_the_consultants_side_from_the_seed_the_same_way_every_time() -> None:
    draws = [draw_consultant_side(seed) for seed in range(200)]

    assert draws == [draw_consultant_side(seed) for seed in range(200)]
    assert 60 < sum(draws) < 140, "both sides are drawn, about as often"


def test_it_uses_the_drawn_side_when_the_settings_record_none() -> None:
    seed = 12345
    protocol = make_protocol("consultancy", {"rounds": 1}, seed=seed)

    assert isinstance(protocol, ConsultancyProtocol)
    assert protocol.side == draw_consultant_side(seed)


def test_it_prefers_the_recorded_side_to_the_seed() -> None:
    seed = next(s for s in range(100) if draw_consultant_side(s) == 0)

    assert make_protocol("consultancy", {"consultant_side": 1}, seed=seed).side == 1  # type: ignore[attr-defined]


def test_it_counts_a_consultancys_speeches_before_its_side_is_known_but_will_not_schedule_them() -> None:
    protocol = make_protocol("consultancy", {"rounds": 2})

    assert protocol.total_turns() == 2
    with pytest.raises(ProtocolError, match="not been assigned"):
        protocol.pending_steps([])


@pytest.mark.parametrize("bad", [2, -1, True, "0"])
def test_it_refuses_a_consultant_side_that_is_not_an_answer(bad: object) -> None:
    with pytest.raises(ProtocolError, match="consultant_side"):
        make_protocol("consultancy", {"consultant_side": bad})


# --- Interactive debate -------------------------------------------------------------------------


def test_it_schedules_an_interactive_debate_like_a_debate() -> None:
    limits = Limits(rounds=3)

    assert InteractiveDebateProtocol(limits=limits).steps() == DebateProtocol(limits=limits).steps()


def test_it_asks_for_a_judge_question_before_every_round_but_the_first() -> None:
    protocol = make_protocol("interactive", {"rounds": 3})
    steps = protocol.steps()

    assert protocol.interactive
    assert protocol.question_rounds() == (1, 2)
    assert [protocol.question_before(step) for step in steps] == [None, 1, 1, 2, 2]


def test_it_never_asks_for_a_question_in_a_plain_debate_or_a_one_round_interactive_one() -> None:
    debate = make_protocol("debate", {"rounds": 3})
    single = make_protocol("interactive", {"rounds": 1})

    assert all(debate.question_before(step) is None for step in debate.steps())
    assert all(single.question_before(step) is None for step in single.steps())


# --- Open protocols -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["open-debate", "open-consultancy"])
def test_it_lets_nobody_speak_in_an_open_protocol_before_the_choice_is_recorded(name: str) -> None:
    protocol = make_protocol(name, {"rounds": 2})

    assert protocol.open_choice and protocol.needs_choice()
    assert protocol.total_turns() == (4 if name == "open-debate" else 2)
    with pytest.raises(ProtocolError, match="chosen"):
        protocol.pending_steps([])


def test_it_runs_an_open_debate_as_a_debate_once_the_choice_is_recorded() -> None:
    protocol = make_protocol("open-debate", {"rounds": 2, "open_choice": {"side": 1, "p": [0.3, 0.7]}})

    assert isinstance(protocol, OpenDebateProtocol)
    assert not protocol.needs_choice()
    assert protocol.pending_steps([]) == DebateProtocol(limits=Limits(rounds=2)).steps()


@pytest.mark.parametrize("side", [0, 1])
def test_it_gives_the_open_consultant_the_answer_it_chose(side: int) -> None:
    protocol = make_protocol("open-consultancy", {"rounds": 2, "open_choice": {"side": side}}, seed=1)

    assert isinstance(protocol, OpenConsultancyProtocol)
    assert [s.side for s in protocol.slots()] == [side, side]


def test_it_refuses_a_recorded_choice_that_is_not_an_answer() -> None:
    with pytest.raises(ProtocolError, match="open_choice"):
        make_protocol("open-debate", {"open_choice": {"side": 3}})


# --- What the judge sees -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["naive", "expert"])
def test_it_lets_nobody_speak_for_a_naive_or_expert_judge(name: str) -> None:
    protocol = make_protocol(name, {})

    assert protocol.steps() == [] and protocol.pending_steps([]) == []
    assert protocol.total_turns() == 0 and protocol.required_turns() == 0
    assert protocol.speaking_sides() == ()
    assert not protocol.judge_sees_transcript()


def test_it_shows_the_source_to_the_expert_judge_and_to_nobody_else() -> None:
    sees = {
        name: make_protocol(name, {"consultant_side": 0, "open_choice": {"side": 0}}).judge_sees_source()
        for name in ALL
    }

    assert sees == {name: name == "expert" for name in ALL}
    assert isinstance(make_protocol("expert", {}), ExpertJudgeProtocol)
    assert isinstance(make_protocol("naive", {}), NaiveJudgeProtocol)


@pytest.mark.parametrize("name", ["debate", "interactive", "consultancy", "open-debate", "open-consultancy"])
def test_it_never_lets_a_speech_see_itself_or_a_later_one(name: str) -> None:
    protocol = make_protocol(name, {"rounds": 4, "consultant_side": 1, "open_choice": {"side": 0}})

    for slot in protocol.slots():
        assert all(v < slot.index for v in slot.visible)


# --- Judging rules ------------------------------------------------------------------------------


def test_it_wants_the_whole_debate_before_a_verdict_unless_told_otherwise() -> None:
    assert make_protocol("debate", {"rounds": 3}).required_turns() == 6
    assert make_protocol("debate", {"rounds": 3, "min_turns": 2}).required_turns() == 2
    assert make_protocol("debate", {"rounds": 1, "min_turns": 9}).required_turns() == 2


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"scoring": "brier"}, "scoring"),
        ({"scoring": 3}, "scoring"),
        ({"turn_penalty": -0.1}, "turn_penalty"),
        ({"turn_penalty": 2}, "turn_penalty"),
        ({"turn_penalty": "0.05"}, "turn_penalty"),
        ({"turn_penalty": float("nan")}, "turn_penalty"),
        ({"min_turns": -1}, "min_turns"),
        ({"min_turns": 1.5}, "min_turns"),
        ({"allow_even": "yes"}, "allow_even"),
    ],
)
def test_it_refuses_malformed_judging_rules(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        make_protocol("debate", settings)


@pytest.mark.parametrize(
    "rule, best, coin, worst",
    [("log", 0.0, -1.0, math.log2(1e-9)), ("quadratic", 1.0, 0.5, -1.0), ("spherical", 1.0, 1 / math.sqrt(2), 0.0)],
)
def test_it_scores_certainty_a_coin_flip_and_a_confident_mistake(
    rule: str, best: float, coin: float, worst: float
) -> None:
    assert raw_score(rule, 1.0, 0.0) == pytest.approx(best)
    assert raw_score(rule, 0.5, 0.5) == pytest.approx(coin)
    assert raw_score(rule, 0.0, 1.0) == pytest.approx(worst)


@pytest.mark.parametrize("rule", ["log", "quadratic", "spherical"])
@pytest.mark.parametrize("belief", [0.2, 0.55, 0.9])
def test_its_scoring_rules_are_proper_a_judge_does_best_by_reporting_what_they_believe(
    rule: str, belief: float
) -> None:
    def expected(report: float) -> float:
        return belief * raw_score(rule, report, 1 - report) + (1 - belief) * raw_score(rule, 1 - report, report)

    grid = [i / 100 for i in range(1, 100)]
    best = max(grid, key=expected)

    assert best == pytest.approx(belief, abs=0.011)


# (numContinues, final probability of the correct answer, judgeReward) from the NYU release's
# metadata (Michael et al. 2023): their reward is our log score with the default per-round penalty.
NYU = [(4, 0.99, -0.2144995696951151), (12, 0.4000000000000001, -1.9219280948873623), (6, 0.8, -0.6219280948873623)]


@pytest.mark.parametrize("continues, p, reward", NYU)
def test_it_reproduces_the_nyu_studys_judge_reward(continues: int, p: float, reward: float) -> None:
    rules = JudgingRules()

    assert rules.score(p, 1 - p, rounds_seen=continues + 1) == pytest.approx(reward, abs=1e-12)


def test_it_takes_the_penalty_per_round_after_the_first_under_every_rule() -> None:
    for rule in ("log", "quadratic", "spherical"):
        rules = JudgingRules(scoring=rule, turn_penalty=0.1)
        assert rules.score(0.8, 0.2, rounds_seen=1) == pytest.approx(raw_score(rule, 0.8, 0.2))
        assert rules.score(0.8, 0.2, rounds_seen=3) == pytest.approx(raw_score(rule, 0.8, 0.2) - 0.2)
        assert rules.score(0.8, 0.2, rounds_seen=0) == pytest.approx(raw_score(rule, 0.8, 0.2))


def test_it_describes_the_rule_and_the_penalty_for_the_judge() -> None:
    assert "log\u2082" in JudgingRules().describe() and "0.05" in JudgingRules().describe()
    assert "Spherical" in JudgingRules(scoring="spherical", turn_penalty=0).describe()
    assert "minus" not in JudgingRules(scoring="quadratic", turn_penalty=0).describe()


# --- Settings -----------------------------------------------------------------------------------


def test_it_reads_protocol_settings_back_from_its_own_output() -> None:
    settings = ProtocolSettings(
        rounds=3,
        max_tokens=64,
        word_limit=80,
        context_tokens=None,
        rules=JudgingRules(min_turns=2, allow_even=True, scoring="spherical", turn_penalty=0.0),
        consultant_side=1,
        critique_rounds=(2, 0),
        best_of_n=(1, 4),
        judge_profile="panel-1",
    )

    assert ProtocolSettings.from_settings(settings.to_settings()) == settings


def test_its_settings_are_limits_so_they_go_wherever_limits_go() -> None:
    settings = ProtocolSettings(rounds=3, critique_rounds=(1, 1))

    assert isinstance(settings, Limits)
    assert Limits.from_settings(settings.to_settings()) == Limits(rounds=3)
    assert settings.core() == Limits(rounds=3)


def test_it_accepts_one_number_for_both_debaters() -> None:
    settings = ProtocolSettings.from_settings({"critique_rounds": 2, "best_of_n": 3})

    assert settings.critique_rounds == (2, 2) and settings.best_of_n == (3, 3)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"critique_rounds": 5}, "critique_rounds"),
        ({"critique_rounds": [1, -1]}, "critique_rounds"),
        ({"critique_rounds": [1, 2, 3]}, "critique_rounds"),
        ({"best_of_n": 0}, "best_of_n"),
        ({"best_of_n": [1, 9]}, "best_of_n"),
        ({"best_of_n": True}, "best_of_n"),
        ({"judge_profile": 7}, "judge_profile"),
    ],
)
def test_it_refuses_out_of_range_debater_options(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        ProtocolSettings.from_settings(settings)
