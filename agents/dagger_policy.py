"""DAgger's data-collection policy (Ross, Gordon & Bagnell 2011): the learner drives, the expert labels.

At every step both are asked: the expert's action is the step's label (the dataset's action code), and the
action taken is the expert's with probability `beta`, the learner's otherwise. Being asked at every step, a
recurrent expert (the CarRacing ppo_lstm) carries its memory along the trajectory the learner drives.
"""

import hashlib

import numpy as np

from agents.base import Observation, Policy
from agents.expert_policy import ExpertPolicy
from agents.registry import register_policy
from agents.vlm_policy import VLMPolicy
from core.errors import UserError
from envs.games import GameSpec


@register_policy("dagger")
class DAggerPolicy(Policy):
    """checkpoint=: the learner (a VLM checkpoint); expert=, deterministic=: the labeller (default: the game's
    expert, as RL-Zoo3 plays it); beta=: the probability of taking the expert's action (default 0)."""

    options = ("checkpoint", "expert", "deterministic", "beta")

    @classmethod
    def build(
        cls,
        spec: GameSpec,
        checkpoint: str | None = None,
        expert: str | None = None,
        deterministic: bool | None = None,
        beta: float | None = None,
    ) -> "DAggerPolicy":
        beta = 0.0 if beta is None else float(beta)
        if not 0.0 <= beta <= 1.0:
            raise UserError(f"beta={beta}: the probability of taking the expert's action is between 0 and 1")
        return cls(VLMPolicy.build(spec, checkpoint), ExpertPolicy.build(spec, expert, deterministic), beta)

    def __init__(self, learner: Policy, labeller: Policy, beta: float):
        self.learner, self.labeller, self.beta = learner, labeller, beta
        self.pipeline, self.stats_dir = labeller.pipeline, labeller.stats_dir  # the learner's frames are the same
        self.policy_id = f"dagger-{learner.policy_id}-labelled-by-{labeller.policy_id}-beta{beta:g}"
        self.rng = np.random.default_rng(0)
        self.expert_action = None

    def reset(self, seed: int) -> None:
        self.learner.reset(seed)
        self.labeller.reset(seed)
        self.rng = np.random.default_rng(seed)

    def act(self, observation: Observation):
        self.expert_action = self.labeller.act(observation)
        learner_action = self.learner.act(observation)
        return self.expert_action if self.rng.random() < self.beta else learner_action

    def label(self, action):
        return self.expert_action

    @property
    def fingerprint(self) -> str:
        parts = (self.learner.fingerprint, self.labeller.fingerprint, f"{self.beta:g}")
        return hashlib.sha256("/".join(str(p) for p in parts).encode()).hexdigest()

    def report(self) -> dict:
        return self.learner.report()

    def summarize_report(self, counts: dict) -> dict:
        return self.learner.summarize_report(counts)
