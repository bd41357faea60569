"""What a return table reports: mean, spread, a bootstrap confidence interval, the interquartile mean (as
rliable reports it), the fraction of the game's expert and, where a game has human and random reference
scores, the human-normalised score."""

import numpy as np

from envs.games import GameSpec

BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95
IQM_TRIM = 0.25  # the interquartile mean drops this fraction of the values at each end (rliable)
BOOTSTRAP_SEED = 0  # the interval is a function of the returns alone


def bootstrap_ci(groups: list[list[float]], seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean. One group: resample its values. Several groups (one per
    training seed): resample the groups, then the values inside each (a two-level bootstrap), so the interval
    carries the spread across training seeds as well as across episodes."""
    rng = np.random.default_rng(seed)
    groups = [np.asarray(g, dtype=np.float64) for g in groups]
    if len(groups) == 1:
        values = groups[0]
        means = rng.choice(values, size=(BOOTSTRAP_RESAMPLES, len(values))).mean(axis=1)  # [R]
    else:
        picked = rng.integers(len(groups), size=(BOOTSTRAP_RESAMPLES, len(groups)))  # [R, G]
        means = np.array([
            np.mean([rng.choice(groups[g], size=len(groups[g])).mean() for g in row]) for row in picked
        ])  # fmt: skip
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def interquartile_mean(values: list[float]) -> float:
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    cut = int(np.floor(IQM_TRIM * len(ordered)))
    return float(ordered[cut : len(ordered) - cut].mean())


def relative_scores(mean: float, spec: GameSpec) -> dict[str, float]:
    """The mean as a fraction of the game's expert and, where the game has them, human-normalised."""
    scores = {"expert_fraction": mean / spec.expert_return}
    if spec.human_random_scores is not None:
        human, random = spec.human_random_scores
        scores["human_normalised"] = (mean - random) / (human - random)
    return scores


def summary(returns: list[float], spec: GameSpec) -> dict[str, float]:
    """The statistics of one policy's episode returns."""
    values = np.asarray(returns, dtype=np.float64)
    low, high = bootstrap_ci([returns])
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "ci95_low": low,
        "ci95_high": high,
        "iqm": interquartile_mean(returns),
        **relative_scores(float(values.mean()), spec),
    }
