"""The interface every player implements: reset(seed), then act(observation) -> env action."""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Observation:
    """What a policy may look at after each env step."""

    frame: np.ndarray  # [H, W, 3] uint8, the raw frame the VLM sees (FrameTap)
    agent_obs: np.ndarray  # the expert pipeline's observation, batched: [1, ...]
    episode_start: bool  # True after a reset of the pipeline (including life-loss pseudo-resets)


class Policy(ABC):
    policy_id: str  # names the policy in results files
    # The env pipeline the policy was trained in (an expert's config.yml) and its VecNormalize stats
    # folder; None plays in the game's default pipeline, which every other policy shares.
    pipeline: dict | None = None
    stats_dir: Path | None = None

    @abstractmethod
    def reset(self, seed: int) -> None:
        """Start an episode; everything random in the policy is seeded from `seed`."""

    @abstractmethod
    def act(self, observation: Observation):
        """The env action to take: an int for Atari, a float array [3] for CarRacing."""

    def report(self) -> dict:
        """Policy-specific counts for results.json (e.g. how often a VLM's free answer was illegal)."""
        return {}
