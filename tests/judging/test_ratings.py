"""Behaviour of the pure-numpy ratings and judge statistics (no database)."""

from __future__ import annotations

import math
import time

import choix
import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.stats import binomtest, spearmanr

from judging.ratings import (
    accuracy_with_interval,
    aggregate_pairwise,
    bootstrap_bradley_terry,
    brier_score,
    elo_scale,
    expected_calibration_error,
    fit_bradley_terry,
    log_score,
    position_bias,
    rank_by_intervals,
    reliability_diagram,
    wilson_interval,
)

TRUE_EIGHT = np.array([0.9, -1.2, 0.3, 1.6, -0.4, 0.0, -2.0, 0.8])


def _simulate(
    strengths: NDArray[np.float64], n_matches: int, rng: np.random.Generator
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Draw (winners, losers) of uniformly random distinct pairs under the Bradley–Terry model."""
    n = strengths.shape[0]
    a = rng.integers(0, n, n_matches)
    b = (a + rng.integers(1, n, n_matches)) % n
    a_wins = rng.random(n_matches) < 1.0 / (1.0 + np.exp(strengths[b] - strengths[a]))
    return np.where(a_wins, a, b), np.where(a_wins, b, a)


def _centred(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return x - x.mean()


# --- aggregation ------------------------------------------------------------------------


def test_it_aggregates_win_counts_into_a_matrix() -> None:
    wins = aggregate_pairwise(np.array([0, 0, 1, 2, 0]), np.array([1, 1, 0, 0, 2]), 3)

    assert wins.dtype == np.float64
    assert wins.tolist() == [[0.0, 2.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]


def test_it_aggregates_fractional_weights() -> None:
    wins = aggregate_pairwise([0, 1, 0], [1, 0, 1], 2, weights=[0.75, 0.25, 0.5])

    assert wins.tolist() == [[0.0, 1.25], [0.25, 0.0]]


def test_it_aggregates_a_million_records_quickly() -> None:
    rng = np.random.default_rng(1)
    winners, losers = _simulate(rng.normal(size=1000), 1_000_000, rng)

    started = time.perf_counter()
    wins = aggregate_pairwise(winners, losers, 1000)
    elapsed = time.perf_counter() - started

    assert wins.sum() == 1_000_000
    assert wins[winners[0], losers[0]] == np.count_nonzero((winners == winners[0]) & (losers == losers[0]))
    # Typically ~10 ms; the bound only catches a per-record Python loop.
    assert elapsed < 2.0


def test_it_rejects_invalid_records() -> None:
    with pytest.raises(ValueError, match="same player"):
        aggregate_pairwise([0, 1], [0, 2], 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        aggregate_pairwise([0, 3], [1, 2], 3)
    with pytest.raises(ValueError, match="integer"):
        aggregate_pairwise([0.0], [1.0], 3)
    with pytest.raises(ValueError, match="non-negative"):
        aggregate_pairwise([0], [1], 3, weights=[-0.5])
    with pytest.raises(ValueError, match="length"):
        aggregate_pairwise([0, 1], [1, 0], 3, weights=[1.0])


# --- Bradley–Terry fit ------------------------------------------------------------------


def test_it_recovers_known_strengths_from_simulated_matches() -> None:
    rng = np.random.default_rng(2)
    winners, losers = _simulate(TRUE_EIGHT, 200_000, rng)

    strengths = fit_bradley_terry(aggregate_pairwise(winners, losers, 8))

    assert strengths.mean() == pytest.approx(0.0, abs=1e-12)
    assert np.array_equal(np.argsort(strengths), np.argsort(TRUE_EIGHT))
    assert spearmanr(strengths, TRUE_EIGHT).statistic == pytest.approx(1.0)
    # Each player has ~50k games, so the standard error is ~0.01.
    assert np.max(np.abs(strengths - _centred(TRUE_EIGHT))) < 0.05


def test_it_agrees_with_choix_on_the_same_counts() -> None:
    rng = np.random.default_rng(3)
    truth = rng.normal(size=20)
    wins = aggregate_pairwise(*_simulate(truth, 50_000, rng), 20)

    reference = _centred(choix.ilsr_pairwise_dense(wins, alpha=0.0, max_iter=1000, tol=1e-12))
    mle = fit_bradley_terry(wins, prior=0.0, tol=1e-12)
    regularised = fit_bradley_terry(wins)

    assert np.max(np.abs(mle - reference)) < 1e-6
    assert np.array_equal(np.argsort(regularised), np.argsort(reference))
    # 0.1 virtual games against a reference barely moves players with ~5k real games each.
    assert np.max(np.abs(regularised - reference)) < 5e-3


def test_it_gives_finite_strengths_to_players_without_games_or_losses() -> None:
    # Player 3 never plays; player 0 never loses; player 4 never wins.
    winners = np.array([0, 0, 0, 1, 2, 1, 2, 1, 2])
    losers = np.array([1, 2, 4, 2, 1, 4, 4, 4, 1])

    strengths = fit_bradley_terry(aggregate_pairwise(winners, losers, 5))

    assert np.all(np.isfinite(strengths))
    assert strengths[0] == strengths.max()
    assert strengths[4] == strengths.min()
    assert strengths[4] < strengths[3] < strengths[0]


def test_it_keeps_disconnected_groups_finite_and_ordered_within_each_group() -> None:
    wins = np.zeros((4, 4))
    wins[0, 1], wins[1, 0] = 30.0, 10.0
    wins[2, 3], wins[3, 2] = 5.0, 15.0

    strengths = fit_bradley_terry(wins)

    assert np.all(np.isfinite(strengths))
    assert strengths[0] > strengths[1]
    assert strengths[3] > strengths[2]


def _with_reference_player(wins: NDArray[np.float64], prior: float) -> NDArray[np.float64]:
    """Append the fictitious reference player that the prior stands for, as real games."""
    n = wins.shape[0]
    augmented = np.zeros((n + 1, n + 1))
    augmented[:n, :n] = wins
    augmented[:n, n] = prior
    augmented[n, :n] = prior
    return augmented


@pytest.mark.parametrize("case", ["undefeated-with-a-million-wins", "sparse-300-games-100-players"])
def test_it_equals_the_mle_with_the_prior_as_games_against_a_reference_player(case: str) -> None:
    rng = np.random.default_rng(16)
    if case == "undefeated-with-a-million-wins":
        wins = np.zeros((5, 5))
        wins[0, 1:] = 1e6
        wins[1, 2] = wins[2, 1] = 5.0
        wins[3, 4] = 2.0
    else:
        wins = aggregate_pairwise(*_simulate(rng.normal(size=100), 300, rng), 100)

    strengths = fit_bradley_terry(wins, prior=0.1)

    reference = choix.ilsr_pairwise_dense(_with_reference_player(wins, 0.1), max_iter=10_000, tol=1e-11)[:-1]
    assert np.max(np.abs(strengths - _centred(reference))) < 1e-6


def test_it_converges_when_groups_meet_only_once_and_the_prior_is_weak() -> None:
    wins = np.zeros((6, 6))
    wins[0, 1] = wins[1, 2] = wins[2, 0] = 3.0
    wins[3, 4] = wins[4, 5] = wins[5, 3] = 1.0
    wins[0, 3] = 1.0

    strengths = fit_bradley_terry(wins, prior=1e-6)

    assert np.all(np.isfinite(strengths))
    # Only the 10⁻⁶ virtual games stop the winning group from drifting off to infinity.
    assert np.min(strengths[:3]) - np.max(strengths[3:]) > 10.0


def test_it_refuses_the_plain_mle_when_it_does_not_exist() -> None:
    wins = np.array([[0.0, 3.0], [0.0, 0.0]])

    with pytest.raises(ValueError, match="at least one win and one loss"):
        fit_bradley_terry(wins, prior=0.0)
    with pytest.raises(ValueError, match="zero diagonal"):
        fit_bradley_terry(np.eye(2))
    with pytest.raises(ValueError, match="square"):
        fit_bradley_terry(np.zeros((2, 3)))


def test_it_handles_trivial_tournaments() -> None:
    assert fit_bradley_terry(np.zeros((0, 0))).shape == (0,)
    assert fit_bradley_terry(np.zeros((1, 1))).tolist() == [0.0]
    assert fit_bradley_terry(np.zeros((3, 3))).tolist() == [0.0, 0.0, 0.0]


def test_it_fits_a_thousand_players_from_a_dense_matrix_quickly() -> None:
    rng = np.random.default_rng(4)
    truth = rng.normal(size=1000)
    wins = aggregate_pairwise(*_simulate(truth, 1_000_000, rng), 1000)

    started = time.perf_counter()
    strengths = fit_bradley_terry(wins)
    elapsed = time.perf_counter() - started

    assert spearmanr(strengths, truth).statistic > 0.97
    # Typically ~0.05 s on 2 cores; the generous bound tolerates a busy machine.
    assert elapsed < 2.0


def test_it_warm_starts_to_the_same_fixed_point() -> None:
    rng = np.random.default_rng(5)
    wins = aggregate_pairwise(*_simulate(TRUE_EIGHT, 5_000, rng), 8)

    cold = fit_bradley_terry(wins, tol=1e-12)
    warm = fit_bradley_terry(wins, tol=1e-12, initial=TRUE_EIGHT)

    assert np.max(np.abs(cold - warm)) < 1e-9


# --- bootstrap --------------------------------------------------------------------------


def test_it_bootstraps_intervals_that_cover_the_truth_and_shrink_with_more_data() -> None:
    rng = np.random.default_rng(6)
    small = bootstrap_bradley_terry(*_simulate(TRUE_EIGHT, 4_000, rng), 8, rounds=200, seed=1)
    large = bootstrap_bradley_terry(*_simulate(TRUE_EIGHT, 64_000, rng), 8, rounds=200, seed=1)

    truth = _centred(TRUE_EIGHT)
    for result in (small, large):
        assert result.samples.shape == (200, 8)
        assert np.all(result.lower <= result.strengths) and np.all(result.strengths <= result.upper)
        assert np.count_nonzero((result.lower <= truth) & (truth <= result.upper)) >= 6
    # 16× the data: intervals ~4× narrower.
    ratio = np.mean(large.upper - large.lower) / np.mean(small.upper - small.lower)
    assert 0.15 < ratio < 0.4


@pytest.mark.parametrize(
    ("n_players", "n_matches"),
    [(6, 3_000), (40, 3_000)],
    ids=["few-distinct-pairs-multinomial", "mostly-distinct-records-index-resampling"],
)
def test_it_bootstraps_the_spread_of_the_estimator(n_players: int, n_matches: int) -> None:
    rng = np.random.default_rng(7)
    truth = np.linspace(-1.0, 1.0, n_players)
    repeated = np.array(
        [fit_bradley_terry(aggregate_pairwise(*_simulate(truth, n_matches, rng), n_players)) for _ in range(200)]
    )
    sampling_sd = repeated.std(axis=0, ddof=1)

    result = bootstrap_bradley_terry(*_simulate(truth, n_matches, rng), n_players, rounds=200, seed=3)
    bootstrap_sd = result.samples.std(axis=0, ddof=1)

    assert np.mean(bootstrap_sd / sampling_sd) == pytest.approx(1.0, abs=0.15)


def test_it_bootstraps_reproducibly_and_treats_unit_weights_as_unweighted() -> None:
    rng = np.random.default_rng(8)
    winners, losers = _simulate(TRUE_EIGHT, 2_000, rng)

    first = bootstrap_bradley_terry(winners, losers, 8, rounds=20, seed=11)
    again = bootstrap_bradley_terry(winners, losers, 8, rounds=20, seed=11)
    weighted = bootstrap_bradley_terry(winners, losers, 8, rounds=20, seed=11, weights=np.ones(winners.shape[0]))
    other_seed = bootstrap_bradley_terry(winners, losers, 8, rounds=20, seed=12)

    assert np.array_equal(first.samples, again.samples)
    assert np.allclose(first.samples, weighted.samples, atol=1e-9)
    assert not np.allclose(first.samples, other_seed.samples)


def test_it_bootstraps_fractional_weights() -> None:
    rng = np.random.default_rng(9)
    winners, losers = _simulate(TRUE_EIGHT, 4_000, rng)
    # A judge's probability for the winner: continuous, so nearly every record is distinct.
    weights = rng.uniform(0.5, 1.0, winners.shape[0])

    result = bootstrap_bradley_terry(winners, losers, 8, rounds=50, weights=weights, ci=0.9)

    assert result.ci == 0.9
    assert np.allclose(result.lower, np.percentile(result.samples, 5, axis=0))
    assert np.allclose(result.upper, np.percentile(result.samples, 95, axis=0))
    assert np.allclose(result.strengths, fit_bradley_terry(aggregate_pairwise(winners, losers, 8, weights)))
    assert np.all(result.lower < result.strengths) and np.all(result.strengths < result.upper)
    assert np.array_equal(np.argsort(result.strengths), np.argsort(TRUE_EIGHT))


def test_it_bootstraps_repeated_fractional_weights_like_plain_record_resampling() -> None:
    rng = np.random.default_rng(15)
    winners, losers = _simulate(TRUE_EIGHT, 20_000, rng)
    # Judges answering on a coarse scale: few distinct (winner, loser, weight) records.
    weights = rng.choice([0.6, 0.8, 1.0], winners.shape[0])
    naive = []
    for _ in range(200):
        picks = rng.integers(0, winners.shape[0], winners.shape[0])
        naive.append(fit_bradley_terry(aggregate_pairwise(winners[picks], losers[picks], 8, weights[picks])))

    result = bootstrap_bradley_terry(winners, losers, 8, rounds=200, weights=weights, seed=4)

    naive_sd = np.std(naive, axis=0, ddof=1)
    assert np.mean(result.samples.std(axis=0, ddof=1) / naive_sd) == pytest.approx(1.0, abs=0.15)
    assert np.allclose(result.samples.mean(axis=0), np.mean(naive, axis=0), atol=4 * naive_sd.max() / math.sqrt(200))


def test_it_bootstraps_no_records_to_a_degenerate_interval() -> None:
    result = bootstrap_bradley_terry(np.array([], dtype=int), np.array([], dtype=int), 3, rounds=5)

    assert result.strengths.tolist() == [0.0, 0.0, 0.0]
    assert result.lower.tolist() == result.upper.tolist() == [0.0, 0.0, 0.0]


# --- display scale and ranks ------------------------------------------------------------


def test_it_maps_strengths_to_an_elo_like_scale() -> None:
    elo = elo_scale(np.array([-math.log(10.0) / 2, 0.0, math.log(10.0) / 2]))

    assert elo.tolist() == pytest.approx([800.0, 1000.0, 1200.0])
    assert np.diff(elo_scale(np.array([0.0, 1.0]))) == pytest.approx(400.0 / math.log(10.0))
    assert elo_scale(np.array([-0.3, 0.3]), base=1500.0).mean() == pytest.approx(1500.0)


def test_it_ranks_by_non_overlapping_intervals() -> None:
    lower = np.array([3.0, 2.5, 0.0, 1.0, -1.0, 2.0])
    upper = np.array([5.0, 4.0, 2.0, 2.6, 0.5, 2.5])

    ranks = rank_by_intervals(lower, upper)

    # Touching bounds (player 5's upper 2.5 vs player 1's lower 2.5) are not "strictly above".
    assert ranks.tolist() == [1, 1, 3, 2, 5, 2]


def test_it_ranks_bootstrap_results_consistently_with_strengths() -> None:
    rng = np.random.default_rng(10)
    result = bootstrap_bradley_terry(*_simulate(TRUE_EIGHT, 50_000, rng), 8, rounds=100)

    ranks = rank_by_intervals(result.lower, result.upper)

    assert ranks[np.argmax(result.strengths)] == 1
    assert np.all(np.diff(ranks[np.argsort(-result.strengths)]) >= 0)


# --- accuracy, calibration, scores, bias ------------------------------------------------


@pytest.mark.parametrize(("successes", "n"), [(8, 10), (0, 10), (10, 10), (50, 100), (1, 3)])
def test_it_computes_wilson_intervals(successes: int, n: int) -> None:
    expected = binomtest(successes, n).proportion_ci(0.95, method="wilson")

    assert wilson_interval(successes, n) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_it_computes_known_wilson_values() -> None:
    assert wilson_interval(8, 10) == pytest.approx((0.490162, 0.943318), abs=1e-6)
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.277533, abs=1e-6))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low90, high90 = wilson_interval(8, 10, ci=0.9)
    assert 0.490162 < low90 < high90 < 0.943318


def test_it_reports_accuracy_with_an_interval() -> None:
    accuracy, low, high, n = accuracy_with_interval(np.array([True] * 8 + [False] * 2))

    assert (accuracy, n) == (0.8, 10)
    assert (low, high) == pytest.approx((0.490162, 0.943318), abs=1e-6)
    empty = accuracy_with_interval(np.array([], dtype=bool))
    assert math.isnan(empty[0]) and empty[1:] == (0.0, 1.0, 0)


def test_it_computes_brier_scores() -> None:
    assert brier_score(np.array([1.0, 1.0])) == 0.0
    assert brier_score(np.array([0.5])) == 0.25
    assert brier_score(np.array([0.0])) == 1.0
    assert brier_score(np.array([1.0, 0.5, 0.0, 0.8])) == pytest.approx((0 + 0.25 + 1 + 0.04) / 4)
    assert math.isnan(brier_score(np.array([])))
    with pytest.raises(ValueError):
        brier_score(np.array([1.2]))


def test_it_computes_log_scores() -> None:
    assert log_score(1.0) == 0.0
    assert log_score(0.5) == -1.0
    assert log_score(0.25) == -2.0
    assert log_score(math.e ** -1, base=math.e) == pytest.approx(-1.0)
    assert log_score(0.0) == -math.inf
    assert log_score(np.array([1.0, 0.5, 0.125])).tolist() == [0.0, -1.0, -3.0]


def test_it_finds_no_calibration_error_for_calibrated_judges() -> None:
    rng = np.random.default_rng(11)
    confidence = rng.uniform(0.5, 1.0, 200_000)
    correct = rng.random(200_000) < confidence

    assert expected_calibration_error(confidence, correct) < 0.01


def test_it_measures_overconfidence() -> None:
    rng = np.random.default_rng(12)
    confidence = rng.uniform(0.5, 1.0, 200_000)
    # Right only half as far above chance as claimed: ECE = E[(c - 0.5) / 2] = 0.125.
    correct = rng.random(200_000) < 0.5 + (confidence - 0.5) / 2

    assert expected_calibration_error(confidence, correct) == pytest.approx(0.125, abs=0.01)


def test_it_builds_a_reliability_diagram() -> None:
    confidence = np.array([0.5, 0.55, 0.6, 0.7, 0.72, 1.0, 1.0])
    correct = np.array([False, True, True, True, True, True, False])

    bins = reliability_diagram(confidence, correct, n_bins=5)

    assert [b.lower for b in bins] == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9])
    assert [b.upper for b in bins] == pytest.approx([0.6, 0.7, 0.8, 0.9, 1.0])
    # Each bin includes its lower edge; the last one also includes 1.
    assert [b.count for b in bins] == [2, 1, 2, 0, 2]
    assert (bins[0].mean_confidence, bins[0].accuracy) == (pytest.approx(0.525), 0.5)
    assert (bins[1].mean_confidence, bins[1].accuracy) == (0.6, 1.0)
    assert (bins[2].mean_confidence, bins[2].accuracy) == (pytest.approx(0.71), 1.0)
    assert (bins[4].mean_confidence, bins[4].accuracy) == (1.0, 0.5)
    assert math.isnan(bins[3].accuracy) and math.isnan(bins[3].mean_confidence)
    expected_ece = (2 * abs(0.5 - 0.525) + abs(1.0 - 0.6) + 2 * abs(1.0 - 0.71) + 2 * abs(0.5 - 1.0)) / 7
    assert expected_calibration_error(confidence, correct, n_bins=5) == pytest.approx(expected_ece)


def test_it_rejects_confidences_below_one_half_and_non_boolean_outcomes() -> None:
    with pytest.raises(ValueError, match=">= 0.5"):
        expected_calibration_error(np.array([0.4]), np.array([True]))
    with pytest.raises(ValueError, match="booleans"):
        expected_calibration_error(np.array([0.7]), np.array([0.7]))
    assert accuracy_with_interval(np.array([1, 0, 1, 1]))[0] == 0.75


def test_it_measures_position_bias_from_probabilities() -> None:
    rng = np.random.default_rng(13)
    favouring_first = np.clip(rng.normal(0.56, 0.2, 5_000), 0.0, 1.0)
    unbiased = np.clip(rng.normal(0.5, 0.2, 5_000), 0.0, 1.0)

    biased = position_bias(favouring_first)
    fair = position_bias(unbiased)

    assert biased.n == 5_000
    assert biased.bias == pytest.approx(0.06, abs=0.01)
    assert 0.0 < biased.lower < biased.bias < biased.upper
    assert fair.lower < 0.0 < fair.upper


def test_it_measures_position_bias_of_hard_verdicts_with_a_wilson_interval() -> None:
    picks_first = np.array([1.0] * 70 + [0.0] * 30)

    result = position_bias(picks_first)

    low, high = wilson_interval(70, 100)
    assert result.bias == pytest.approx(0.2)
    assert (result.lower, result.upper) == pytest.approx((low - 0.5, high - 0.5))


def test_it_measures_position_bias_on_swapped_pairs() -> None:
    rng = np.random.default_rng(14)
    # Each debate has its own difficulty; shown first, any answer gains 0.05.
    merit = rng.uniform(0.1, 0.9, 2_000)
    first = np.clip(merit + 0.05 + rng.normal(0, 0.02, 2_000), 0, 1)
    swapped = np.clip(1.0 - merit + 0.05 + rng.normal(0, 0.02, 2_000), 0, 1)

    paired = position_bias(first, swapped)
    unpaired = position_bias(np.concatenate([first, swapped]))

    assert paired.n == 2_000
    assert paired.bias == pytest.approx(0.05, abs=0.002)
    # Per pair: 0.05 + noise with sd 0.02/√2, so the 95% half-width is 1.96·0.0141/√2000.
    assert (paired.upper - paired.lower) / 2 == pytest.approx(1.96 * 0.02 / math.sqrt(2) / math.sqrt(2_000), rel=0.1)
    # Pairing removes the per-debate difficulty from the variance.
    assert paired.upper - paired.lower < (unpaired.upper - unpaired.lower) / 5
