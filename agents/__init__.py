"""Players: the Policy interface, RL-Zoo3 experts, the random baseline (and the VLM policy)."""

from agents.base import Observation, Policy
from agents.expert import ExpertPolicy
from agents.load import POLICY_KINDS, load_policy
from agents.random_policy import RandomPolicy

__all__ = ["POLICY_KINDS", "ExpertPolicy", "Observation", "Policy", "RandomPolicy", "load_policy"]
