"""Players: the Policy interface and registry, the episode loop (agents.rollout), and one module per policy.

    agents/expert_policy.py   an RL-Zoo3 agent folder, played as rl_zoo3's enjoy.py plays it
    agents/random_policy.py   uniformly random over the game's action codes
    agents/vlm_policy.py      a fine-tuned VLM checkpoint
    agents/takeover.py        one policy for k decisions, then another

To add a policy: write `agents/<name>_policy.py` with a Policy subclass decorated `@register_policy("<name>")`
that sets `options` (the command-line options its `build` reads) and `policy_id`; then `python -m eval
policy=<name>`, `python -m collect policy=<name>` and the benchmarks play it. Nothing else changes.
This package imports no gymnasium; `agents.rollout` and the expert policy do.
"""

from agents.base import Observation, Policy
from agents.registry import POLICIES, POLICY_OPTIONS, load_policy, policy_options, register_policy

__all__ = ["POLICIES", "POLICY_OPTIONS", "Observation", "Policy", "load_policy", "policy_options", "register_policy"]
