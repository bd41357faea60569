"""Any registered policy as a stable-baselines3 model: `predict` on the expert's vectorised env.

    model, venv = make_sb3_policy("vlm", game="carracing", seed=100000)
    mean, std = evaluate_policy(model, venv, n_eval_episodes=15)

The policy sees what `agents.rollout.play_episode` gives it: the raw frame from the venv's FrameTap, the
pipeline's observation and `episode_start`; it is reset (frame stack emptied, randomness seeded) at each real
reset of the game only, not at the life-loss pseudo-resets that also set `episode_start`.
"""

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from agents.base import Observation, Policy
from agents.registry import load_policy
from envs.games import GameSpec, get_game
from envs.pipeline import frame_tap, make_play_env


class SB3Policy:
    """Plays `policy` through SB3's `predict` in the venv `make_env` built last (1 env, as `play_episode` builds it).

    The policy's seed at a reset is the seed the venv was reset with; an unseeded reset (the VecEnv's auto-reset
    after an episode) takes the next one, as `python -m eval` numbers its episodes seed, seed + 1, ... SB3 seeds a
    venv's first reset only, and on Atari a `venv.seed()` after it is lost (AtariWrapper makes every later reset a
    life-loss pseudo-reset), so `python -m eval`'s episodes are one `make_env(seed)` each.
    `state` is returned as given (a recurrent expert keeps its own) and `deterministic` is not read: a policy acts
    as it was built (the expert by its `deterministic=` option, RL-Zoo3's default for the game).
    """

    def __init__(self, policy: Policy, spec: GameSpec, fast_env: bool = True, env_kwargs: dict | None = None):
        self.policy = policy
        self.spec = spec
        self.env_id = spec.play_env_id(fast_env)  # CarRacingFast-v3 where the game has it, as `python -m eval`
        self.env_kwargs = env_kwargs

    def make_env(self, seed: int) -> VecEnv:
        """A new venv of the policy's pipeline, seeded with `seed`; the model plays it from now on."""
        pipeline = self.policy.pipeline or self.spec.pipeline
        venv = make_play_env(
            self.spec, pipeline, seed, env_id=self.env_id, stats_dir=self.policy.stats_dir, env_kwargs=self.env_kwargs
        )
        self.tap = frame_tap(venv)
        self.resets_seen = 0
        self.episode_seed = seed  # replaced at its first reset, which make_play_env seeds
        return venv

    def predict(self, observation, state=None, episode_start=None, deterministic=False):
        if self.tap.resets != self.resets_seen:
            self.resets_seen = self.tap.resets
            seeded = self.tap.reset_seed is not None
            self.episode_seed = self.tap.reset_seed if seeded else self.episode_seed + 1
            self.policy.reset(self.episode_seed)
        start = episode_start is not None and bool(episode_start[0])
        action = self.policy.act(Observation(frame=self.tap.frame, agent_obs=observation, episode_start=start))
        return np.array([action]), state  # the batch rollout.py steps the venv with


def make_sb3_policy(
    name: str, game: str, seed: int = 0, fast_env: bool = True, env_kwargs: dict | None = None, **options
) -> tuple[SB3Policy, VecEnv]:
    """The registered policy `name` as an SB3 model, and a venv seeded with `seed` that it plays.

    `options` as on the command line (checkpoint=, expert=, deterministic=); `fast_env` plays CarRacing in
    CarRacingFast-v3 as `python -m eval` does; `env_kwargs` go to the env (e.g. the game's `sticky_actions`).
    """
    spec = get_game(game)
    model = SB3Policy(load_policy(name, spec, **options), spec, fast_env, env_kwargs)
    return model, model.make_env(seed)
