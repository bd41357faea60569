"""Uniformly random over the game's discrete actions: the baseline every policy must beat."""

import numpy as np

from agents.base import Observation, Policy
from agents.registry import register_policy
from envs.games import GameSpec


@register_policy("random")
class RandomPolicy(Policy):
    """Picks each action code uniformly (the same action set the VLM chooses from), then decodes it."""

    def __init__(self, spec: GameSpec):
        self.spec = spec
        self.policy_id = f"random-{spec.name}"
        self.rng = np.random.default_rng(0)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, observation: Observation):
        code = int(self.rng.integers(len(self.spec.action_names)))
        return self.spec.codec.decode(code)
