"""Judge-quality statistics: pure functions first, then the reader on the record."""

from __future__ import annotations

import math
import random

import pytest

from judging import quality
from judging.quality import JudgeRecord


def test_it_gives_the_wilson_interval() -> None:
    low, high = quality.wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert quality.wilson(0, 0) == (0.0, 1.0)


def test_it_scores_log_brier_and_calibration() -> None:
    records = [JudgeRecord(0.9), JudgeRecord(0.9), JudgeRecord(0.2), JudgeRecord(0.6, time_s=30.0)]
    q = quality.summarise(1, "bob", records)
    assert q.n == 4 and q.correct == 3 and q.accuracy == 0.75
    assert q.log_score == pytest.approx((2 * math.log2(0.9) + math.log2(0.2) + math.log2(0.6)) / 4)
    assert q.brier == pytest.approx((0.01 + 0.01 + 0.64 + 0.16) / 4)
    assert q.median_time_s == 30.0
    # Bins by confidence: 0.9 (two right), 0.8 (one wrong: p_gold 0.2), 0.6 (one right).
    assert [(b.low, b.count, b.accuracy) for b in q.bins] == [(0.6, 1, 1.0), (0.8, 1, 0.0), (0.9, 2, 1.0)]
    assert q.ece == pytest.approx((0.4 + 0.8 + 2 * 0.1) / 4)


def test_a_guessing_judge_is_flagged_and_a_good_one_is_not() -> None:
    rng = random.Random(4)
    guesser = [JudgeRecord(0.7 if rng.random() < 0.5 else 0.3) for _ in range(400)]
    good = [JudgeRecord(0.8 if rng.random() < 0.9 else 0.2) for _ in range(400)]
    assert quality.summarise(1, "g", guesser).flagged
    q = quality.summarise(2, "h", good)
    assert not q.flagged and q.e_above > 1e6


def test_the_e_process_keeps_its_level_under_the_null() -> None:
    """Anytime validity: judges exactly at the threshold cross 1/α at any time in ≤ α of runs."""
    rng = random.Random(11)
    crossed = 0
    runs = 400
    for _ in range(runs):
        outcomes: list[bool] = []
        for _ in range(150):
            outcomes.append(rng.random() < 0.6)
            if quality.e_value_below(outcomes, 0.6) >= 20:
                crossed += 1
                break
    assert crossed / runs <= 0.05


def test_it_refuses_a_threshold_outside_zero_and_one() -> None:
    with pytest.raises(ValueError, match="strictly between"):
        quality.e_value_below([True], 1.0)
