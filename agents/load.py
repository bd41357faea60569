"""Build the policy a command line asks for."""

from agents.base import Policy
from agents.expert import ExpertPolicy
from agents.random_policy import RandomPolicy
from envs import GameSpec, UserError

POLICY_KINDS = ("expert", "random", "vlm")


def load_policy(
    kind: str,
    spec: GameSpec,
    expert: str | None = None,
    checkpoint: str | None = None,
    deterministic: bool | None = None,
) -> Policy:
    if kind == "expert":
        return ExpertPolicy(expert or spec.default_expert_path, spec, deterministic=deterministic)
    if kind == "random":
        return RandomPolicy(spec)
    if kind == "vlm":
        checkpoint = checkpoint or spec.default_vlm_path
        if not checkpoint:
            raise UserError(
                f"no VLM checkpoint ships for {spec.name}: "
                f"fine-tune one with `python -m train recipe=game game={spec.name} ...` and pass checkpoint=<its folder>"
            )
        from agents.vlm_policy import VLMPolicy  # imports torch and transformers only when needed

        return VLMPolicy(checkpoint, spec)
    raise UserError(f"unknown policy {kind!r}: choose one of {', '.join(POLICY_KINDS)}")
