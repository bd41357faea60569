"""eval.stats: the bootstrap interval, the interquartile mean and the reference-relative scores."""

import numpy as np
import pytest

from envs import get_game
from eval.stats import bootstrap_ci, interquartile_mean, relative_scores, summary


def test_bootstrap_interval_holds_the_mean_narrows_with_more_episodes_and_is_reproducible():
    rng = np.random.default_rng(0)
    few, many = rng.normal(500, 100, 15).tolist(), rng.normal(500, 100, 240).tolist()
    low, high = bootstrap_ci([few])
    assert low < np.mean(few) < high and (low, high) == bootstrap_ci([few])
    many_low, many_high = bootstrap_ci([many])
    assert many_high - many_low < (high - low) / 2  # ~1/sqrt(16) of the width
    assert bootstrap_ci([[7.0] * 5]) == (7.0, 7.0)


def test_two_level_bootstrap_carries_the_spread_across_training_seeds():
    steady = [[500.0, 510.0, 490.0]] * 3
    seed_dependent = [[300.0, 310.0, 290.0], [500.0, 510.0, 490.0], [700.0, 710.0, 690.0]]
    steady_low, steady_high = bootstrap_ci(steady)
    low, high = bootstrap_ci(seed_dependent)
    assert high - low > 10 * (steady_high - steady_low) and low < 500 < high


def test_interquartile_mean_drops_a_quarter_at_each_end():
    assert interquartile_mean(list(range(16))) == pytest.approx(np.mean(range(4, 12)))
    assert interquartile_mean([0, 0, 0, 1000]) == 0


def test_scores_relative_to_the_expert_and_to_humans():
    spaceinvaders, carracing = get_game("spaceinvaders"), get_game("carracing")
    scores = relative_scores(148.0, spaceinvaders)
    assert scores["human_normalised"] == 0 and scores["expert_fraction"] == pytest.approx(148.0 / 563.67)
    assert relative_scores(1668.7, spaceinvaders)["human_normalised"] == pytest.approx(1.0)
    assert set(relative_scores(800.0, carracing)) == {"expert_fraction"}
    stats = summary([100.0, 200.0, 300.0], carracing)
    assert stats["mean"] == 200.0 and stats["ci95_low"] <= 200.0 <= stats["ci95_high"]
