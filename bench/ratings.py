"""Benchmark judging.ratings against choix on synthetic tournaments.

For each player count: simulate verdicts under a Bradley–Terry model with N(0, 1)
log-strengths, then time aggregation, the point fit, the bootstrap, and
choix.ilsr_pairwise_dense on the same count matrix, and compare the two fits.

    .venv/bin/python bench/ratings.py --verdicts 1000000 --players 50 1000 --rounds 100
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

# choix solves dense linear systems every iteration; multi-threaded OpenBLAS on a small
# shared box spins and made it 3–8× slower and erratic. One thread is the fair setting
# for both libraries; export the variables yourself to compare otherwise.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import choix  # noqa: E402
import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402
from scipy.stats import kendalltau, spearmanr  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from judging.ratings import (  # noqa: E402
    aggregate_pairwise,
    bootstrap_bradley_terry,
    fit_bradley_terry,
)

T = TypeVar("T")
TARGET_S = 5.0


@dataclass(frozen=True)
class Row:
    """Timings (seconds) and agreement figures for one player count."""

    players: int
    verdicts: int
    aggregate_s: float
    fit_s: float
    bootstrap_s: float
    choix_fit_s: float
    choix_bootstrap_s: float
    same_ranking: bool
    spearman: float
    kendall: float
    max_abs_diff: float
    max_abs_diff_mle: float
    truth_spearman: float
    mean_ci_width: float


def _timed(fn: Callable[[], T], repeat: int) -> tuple[T, float]:
    """Return fn()'s last result and its best wall time over ``repeat`` runs (the box is shared)."""
    best = float("inf")
    result: T | None = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    assert result is not None
    return result, best


def _simulate(
    n_players: int, n_verdicts: int, rng: np.random.Generator
) -> tuple[NDArray[np.float64], NDArray[np.intp], NDArray[np.intp]]:
    """Return (true log-strengths, winners, losers) of verdicts on uniformly random distinct pairs."""
    truth = rng.normal(size=n_players)
    a = rng.integers(0, n_players, n_verdicts)
    b = (a + rng.integers(1, n_players, n_verdicts)) % n_players
    a_wins = rng.random(n_verdicts) < 1.0 / (1.0 + np.exp(truth[b] - truth[a]))
    return truth, np.where(a_wins, a, b), np.where(a_wins, b, a)


def _choix_bootstrap(
    winners: NDArray[np.intp], losers: NDArray[np.intp], n_players: int, rounds: int, start: NDArray[np.float64]
) -> float:
    """Return the seconds choix needs for ``rounds`` warm-started refits of record resamples (resampling untimed)."""
    rng = np.random.default_rng(0)
    elapsed = 0.0
    for _ in range(rounds):
        picks = rng.integers(0, winners.shape[0], winners.shape[0])
        wins = aggregate_pairwise(winners[picks], losers[picks], n_players)
        started = time.perf_counter()
        choix.ilsr_pairwise_dense(wins, alpha=0.0, initial_params=start, max_iter=1000, tol=1e-8)
        elapsed += time.perf_counter() - started
    return elapsed


def _run(n_players: int, args: argparse.Namespace) -> Row:
    """Simulate one tournament and measure everything reported for it."""
    rng = np.random.default_rng(args.seed + n_players)
    truth, winners, losers = _simulate(n_players, args.verdicts, rng)

    wins, aggregate_s = _timed(lambda: aggregate_pairwise(winners, losers, n_players), args.repeat)
    ours, fit_s = _timed(lambda: fit_bradley_terry(wins), args.repeat)
    boot, bootstrap_s = _timed(
        lambda: bootstrap_bradley_terry(winners, losers, n_players, rounds=args.rounds, seed=args.seed), args.repeat
    )
    theirs_raw, choix_fit_s = _timed(
        lambda: choix.ilsr_pairwise_dense(wins, alpha=0.0, max_iter=1000, tol=1e-8), args.repeat
    )
    theirs = theirs_raw - theirs_raw.mean()
    mle = fit_bradley_terry(wins, prior=0.0)

    choix_bootstrap_s = float("nan")
    if args.choix_rounds > 0:
        measured = _choix_bootstrap(winners, losers, n_players, args.choix_rounds, theirs_raw)
        choix_bootstrap_s = measured * args.rounds / args.choix_rounds

    return Row(
        players=n_players,
        verdicts=args.verdicts,
        aggregate_s=aggregate_s,
        fit_s=fit_s,
        bootstrap_s=bootstrap_s,
        choix_fit_s=choix_fit_s,
        choix_bootstrap_s=choix_bootstrap_s,
        same_ranking=bool(np.array_equal(np.argsort(ours), np.argsort(theirs))),
        spearman=float(spearmanr(ours, theirs).statistic),
        kendall=float(kendalltau(ours, theirs).statistic),
        max_abs_diff=float(np.max(np.abs(ours - theirs))),
        max_abs_diff_mle=float(np.max(np.abs(mle - theirs))),
        truth_spearman=float(spearmanr(ours, truth).statistic),
        mean_ci_width=float(np.mean(boot.upper - boot.lower)),
    )


def _print_report(rows: list[Row], args: argparse.Namespace) -> None:
    """Print the timing table, the agreement table and the verdict against the target."""
    threads = os.environ["OPENBLAS_NUM_THREADS"]
    print(f"\n{args.verdicts:,} verdicts, {args.rounds} bootstrap rounds, best of {args.repeat} run(s), "
          f"OPENBLAS_NUM_THREADS={threads}\n")
    header = f"{'players':>8} | {'aggregate':>9} | {'fit':>8} | {'bootstrap':>9} | {'fit+boot':>8} || " \
             f"{'choix fit':>9} | {'choix boot*':>11} | {'fit ratio':>9} | {'boot ratio':>10}"
    ms = 1000.0
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.players:>8} | {r.aggregate_s * ms:>7.1f}ms | {r.fit_s * ms:>6.1f}ms | {r.bootstrap_s:>8.2f}s | "
            f"{r.fit_s + r.bootstrap_s:>7.2f}s || {r.choix_fit_s * ms:>7.1f}ms | {r.choix_bootstrap_s:>10.2f}s | "
            f"{r.choix_fit_s / r.fit_s:>8.1f}× | {r.choix_bootstrap_s / r.bootstrap_s:>9.1f}×"
        )
    print(f"* choix bootstrap: {args.choix_rounds} warm-started refits on the same resamples, scaled to "
          f"{args.rounds} rounds (resampling time excluded). Ratios are choix time / ours.\n")

    header = f"{'players':>8} | {'same ranking':>12} | {'Spearman':>8} | {'Kendall':>8} | " \
             f"{'max|Δ| prior 0.1':>16} | {'max|Δ| prior 0':>14} | {'ρ vs truth':>10} | {'mean 95% CI':>11}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.players:>8} | {'yes' if r.same_ranking else 'no':>12} | {r.spearman:>8.5f} | {r.kendall:>8.5f} | "
            f"{r.max_abs_diff:>16.2e} | {r.max_abs_diff_mle:>14.2e} | {r.truth_spearman:>10.4f} | "
            f"{r.mean_ci_width:>11.4f}"
        )
    print("Δ: mean-centred log-strengths, ours − choix (alpha=0). prior 0.1 is the default fit; prior 0 is our "
          "plain MLE.\n")

    for r in rows:
        total = r.fit_s + r.bootstrap_s
        status = "OK" if total <= TARGET_S else "OVER"
        print(f"{r.players:>5} players: fit + bootstrap = {total:.2f}s (target ≤ {TARGET_S:.0f}s) {status}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verdicts", type=int, default=1_000_000, help="synthetic verdicts per tournament")
    parser.add_argument("--players", type=int, nargs="+", default=[50, 1000], help="debater counts to run")
    parser.add_argument("--rounds", type=int, default=100, help="bootstrap rounds")
    parser.add_argument("--choix-rounds", type=int, default=5, help="choix refits timed for the bootstrap estimate")
    parser.add_argument("--repeat", type=int, default=1, help="runs per timing; the best is reported")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.verdicts < 1 or args.rounds < 1 or args.repeat < 1 or min(args.players) < 2:
        parser.error("--verdicts, --rounds and --repeat must be >= 1 and every --players value >= 2")

    rows = [_run(n, args) for n in args.players]
    _print_report(rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
