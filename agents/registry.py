"""Policies by name: `@register_policy("name")` on a Policy subclass; `load_policy(name, spec, **options)`.

A policy named N that is not registered yet is looked up in `agents/N_policy.py`, so a new policy is one
module in agents/ (or any module the caller imports first, as the tests do) and no command changes.
"""

from core.errors import UserError
from core.registry import Registry
from envs.games import GameSpec

POLICIES = Registry("policy", package="agents", module_pattern="{name}_policy")
register_policy = POLICIES.register
# The command-line options any policy reads (a Policy's `options` names its own). The commands that play
# policies (eval, collect) take each as `key=value`; a policy with a new option adds it here and to their configs.
POLICY_OPTIONS = ("expert", "checkpoint", "deterministic", "beta")


def policy_options(cfg) -> dict:
    """The policy options of a command's config (None where not given)."""
    return {option: cfg.get(option) for option in POLICY_OPTIONS}


def load_policy(name: str, spec: GameSpec, **options):
    """The policy `name` for `spec`, built from the command's options; an option it does not read is refused.

    `options` are the command's policy options (None = not given), e.g. expert=, checkpoint=, deterministic=.
    """
    policy_class = POLICIES.get(name)
    given = {option: value for option, value in options.items() if value is not None}
    for option, value in given.items():
        if option not in policy_class.options:
            readers = [other for other in POLICIES.names() if option in POLICIES.get(other).options]
            raise UserError(
                f"{option}={value} is read by policy={'|'.join(readers)}, not by policy={name}: "
                f"choose one of those policies or leave {option}= out"
            )
    return policy_class.build(spec, **{option: given.get(option) for option in policy_class.options})
