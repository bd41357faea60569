"""The env a policy plays in: RL-Zoo3's test-time pipeline, rebuilt from a config.yml, with a frame tap.

Importing this module registers the ALE games and CarRacingFast-v3 with Gymnasium.
"""

import copy
import functools
from pathlib import Path

import ale_py
import gymnasium as gym
import numpy as np
from rl_zoo3.utils import get_wrapper_class
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecFrameStack, VecNormalize

from core.errors import UserError
from envs.fast_car_racing import register_fast_car_racing
from envs.games import GameSpec
from envs.zoo import VECNORMALIZE_FILE

gym.register_envs(ale_py)
register_fast_car_racing()


@functools.cache
def action_space(env_id: str) -> gym.Space:
    """The action space of a registered env (built once per process)."""
    env = gym.make(env_id)
    env.close()
    return env.action_space


class FrameTap(gym.Wrapper):
    """Passes everything through unchanged and keeps the latest raw RGB frame for the VLM.

    It sits directly above the base env (below the expert's wrappers), so it sees every raw frame,
    including the ones a frame-skip wrapper never shows the expert.
    """

    def __init__(self, env: gym.Env, max_pool: bool):
        super().__init__(env)
        self.max_pool = max_pool
        self._previous = self._latest = None
        self.raw_return = 0.0  # unclipped game score since the last real reset

    def _record(self, observation: np.ndarray, new_episode: bool) -> None:
        self._previous = observation if new_episode else self._latest
        self._latest = observation

    @property
    def frame(self) -> np.ndarray:
        """[H, W, 3] uint8: the latest raw frame, or the max of the last two where sprites flicker."""
        if self.max_pool:
            return np.maximum(self._previous, self._latest)
        return self._latest

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        self._record(observation, new_episode=True)
        self.raw_return = 0.0
        return observation, info

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._record(observation, new_episode=False)
        self.raw_return += float(reward)
        return observation, reward, terminated, truncated, info


def normalize_kwargs(pipeline: dict) -> dict | None:
    """The VecNormalize settings of a pipeline at test time (reward normalisation off), or None."""
    normalize = pipeline.get("normalize", False)
    if not normalize:
        return None
    if isinstance(normalize, str):
        # RL-Zoo3 stores this field as a Python dict literal, e.g. "{'norm_obs': False, ...}".
        normalize = eval(normalize, {"__builtins__": {}})  # noqa: S307 - a literal from config.yml
    kwargs = dict(normalize) if isinstance(normalize, dict) else {"norm_obs": bool(normalize)}
    kwargs["norm_reward"] = False
    return kwargs


def make_play_env(
    spec: GameSpec,
    pipeline: dict,
    seed: int,
    env_id: str | None = None,
    stats_dir: Path | None = None,
    env_kwargs: dict | None = None,
) -> VecEnv:
    """A 1-env VecEnv built exactly as rl_zoo3's `create_test_env` builds it, plus a FrameTap.

    `pipeline` is a config.yml dict (env_wrapper, frame_stack, normalize). `stats_dir` holds the
    expert's `vecnormalize.pkl`; without it, a pipeline that normalises observations is refused.
    `env_kwargs` go to the env's constructor (e.g. the game's `sticky_actions`).
    """
    pipeline = copy.deepcopy(pipeline)  # get_wrapper_class reads it; keep the caller's intact
    zoo_wrapper = get_wrapper_class(pipeline)

    def wrap(env: gym.Env) -> gym.Env:
        env = FrameTap(env, max_pool=spec.frame_max_pool)
        return zoo_wrapper(env) if zoo_wrapper is not None else env

    venv = make_vec_env(
        env_id or spec.env_id, n_envs=1, seed=seed, wrapper_class=wrap, vec_env_cls=DummyVecEnv, env_kwargs=env_kwargs
    )
    kwargs = normalize_kwargs(pipeline)
    if kwargs is not None:
        stats = stats_dir / VECNORMALIZE_FILE if stats_dir is not None else None
        if stats is not None and stats.is_file():
            venv = VecNormalize.load(str(stats), venv)
            venv.training = False
            venv.norm_reward = False
        elif kwargs.get("norm_obs", True):
            raise UserError(
                f"this pipeline normalises observations but {stats or 'no ' + VECNORMALIZE_FILE} was given: "
                f"use the expert folder that rl_zoo3.train wrote, which holds ENV/{VECNORMALIZE_FILE}"
            )
    if pipeline.get("frame_stack"):
        venv = VecFrameStack(venv, int(pipeline["frame_stack"]))
    return venv


def frame_tap(venv: VecEnv) -> FrameTap:
    """The FrameTap inside a make_play_env VecEnv: `.frame` is what the VLM sees, `.raw_return` the score."""
    env = venv.unwrapped.envs[0]
    while not isinstance(env, FrameTap):
        env = env.env
    return env
