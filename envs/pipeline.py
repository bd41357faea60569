"""The env a policy plays in: RL-Zoo3's test-time pipeline, rebuilt from a config.yml, with a frame tap.

Importing this module registers the ALE games and CarRacingFast-v3 with Gymnasium.
"""

import copy
import functools
import pickle
from pathlib import Path

import ale_py
import gymnasium as gym
import numpy as np
from rl_zoo3.utils import get_wrapper_class
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecFrameStack, VecNormalize

from core.errors import UserError
from envs.fast_car_racing import register_fast_car_racing
from envs.games import GameSpec
from envs.zoo import VECNORMALIZE_FILE, literal_normalize

gym.register_envs(ale_py)
register_fast_car_racing()

# The classes a vecnormalize.pkl holds (VecNormalize, its running statistics, the observation space and numpy's
# arrays and generators): the unpickler builds nothing else, so a crafted file cannot run code when loaded.
VECNORMALIZE_CLASSES = {
    ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"),
    ("stable_baselines3.common.running_mean_std", "RunningMeanStd"),
    ("gymnasium.spaces.box", "Box"),
    ("gymnasium.spaces.dict", "Dict"),
    ("collections", "OrderedDict"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"),  # numpy < 2
    ("numpy.core.multiarray", "scalar"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random._mt19937", "MT19937"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
}
# What a damaged pickle raises while it is read.
UNPICKLING_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError)


class VecNormalizeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in VECNORMALIZE_CLASSES:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which VecNormalize statistics never hold")
        return super().find_class(module, name)


def load_vecnormalize(path: Path) -> VecNormalize:
    """VecNormalize statistics, unpickled with only the classes they hold; a damaged or foreign file is a UserError."""
    try:
        with open(path, "rb") as file:
            stats = VecNormalizeUnpickler(file).load()
    except (OSError, *UNPICKLING_ERRORS) as error:
        raise UserError(
            f"{path} is not readable VecNormalize statistics ({error}): restore it from the training run"
        ) from None
    if not isinstance(stats, VecNormalize):
        raise UserError(f"{path} holds a {type(stats).__name__}, not VecNormalize statistics: restore it")
    return stats


def normalization_stats(pipeline: dict, stats_dir: Path | None) -> VecNormalize | None:
    """The expert's VecNormalize statistics when its pipeline normalises (None when it does not, or normalises
    rewards only); a pipeline that normalises observations without its vecnormalize.pkl is refused."""
    kwargs = normalize_kwargs(pipeline)
    if kwargs is None:
        return None
    stats = stats_dir / VECNORMALIZE_FILE if stats_dir is not None else None
    if stats is not None and stats.is_file():
        return load_vecnormalize(stats)
    if kwargs.get("norm_obs", True):
        raise UserError(
            f"this pipeline normalises observations but {stats or 'no ' + VECNORMALIZE_FILE} was given: "
            f"use the expert folder that rl_zoo3.train wrote, which holds ENV/{VECNORMALIZE_FILE}"
        )
    return None


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
        # Real resets reach this wrapper, life-loss pseudo-resets above it do not: how many, and the latest's
        # seed (None for an unseeded one, e.g. a VecEnv's auto-reset), for a loop that sees only `dones`.
        self.resets = 0
        self.reset_seed: int | None = None

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
        self.resets += 1
        self.reset_seed = kwargs.get("seed")
        return observation, info

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._record(observation, new_episode=False)
        self.raw_return += float(reward)
        return observation, reward, terminated, truncated, info


def normalize_kwargs(pipeline: dict) -> dict | None:
    """The VecNormalize settings of a pipeline at test time (reward normalisation off), or None."""
    normalize = literal_normalize(pipeline.get("normalize", False))  # RL-Zoo3 may store a dict literal
    if not normalize:
        return None
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
    wrap = functools.partial(tap_and_wrap, max_pool=spec.frame_max_pool, env_wrapper=pipeline.get("env_wrapper"))
    venv = make_vec_env(
        env_id or spec.env_id, n_envs=1, seed=seed, wrapper_class=wrap, vec_env_cls=DummyVecEnv, env_kwargs=env_kwargs
    )
    stats = normalization_stats(pipeline, stats_dir)
    if stats is not None:
        stats.set_venv(venv)  # what VecNormalize.load does after unpickling
        venv = stats
        venv.training = False
        venv.norm_reward = False
    if pipeline.get("frame_stack"):
        venv = VecFrameStack(venv, int(pipeline["frame_stack"]))
    return venv


def frame_tap(venv: VecEnv) -> FrameTap:
    """The FrameTap inside a make_play_env VecEnv: `.frame` is what the VLM sees, `.raw_return` the score."""
    return find_frame_tap(venv.unwrapped.envs[0])


def find_frame_tap(env: gym.Env) -> FrameTap:
    while not isinstance(env, FrameTap):
        env = env.env
    return env


def tap_and_wrap(env: gym.Env, max_pool: bool, env_wrapper) -> gym.Env:
    """A FrameTap directly above `env`, then a pipeline's `env_wrapper` (config.yml's entry) above it."""
    env = FrameTap(env, max_pool=max_pool)
    zoo_wrapper = get_wrapper_class({"env_wrapper": copy.deepcopy(env_wrapper)})
    return zoo_wrapper(env) if zoo_wrapper is not None else env


class PlayedEnv(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """The game as `make_play_env` plays it, as one gymnasium env whose observations are the FrameTap's frames.

    Below it runs make_play_env's stack for one env (Monitor, FrameTap, the pipeline's env wrappers). Like the
    play loop's VecEnv it resets that stack when a life is lost (the expert's wrappers end an episode per life)
    and ends its own episode only when the game ends, Monitor's end; rewards are the unclipped score, as
    datasets store them. Frame stacking and VecNormalize change only what the expert sees, not the game, so
    they are left out. A collected dataset's env spec names this wrapper: minari's recover_environment
    rebuilds the env its actions were played in.
    """

    def __init__(self, env: gym.Env, max_pool: bool, env_wrapper=None):
        gym.utils.RecordConstructorArgs.__init__(self, max_pool=max_pool, env_wrapper=env_wrapper)
        super().__init__(env)
        self.played = tap_and_wrap(Monitor(env), max_pool, env_wrapper)
        self.tap = find_frame_tap(self.played)
        self.observation_space = gym.spaces.Box(0, 255, env.observation_space.shape, np.uint8)

    def reset(self, **kwargs):
        _, info = self.played.reset(**kwargs)
        return self.tap.frame.copy(), info

    def step(self, action):
        score_before = self.tap.raw_return
        _, _, terminated, truncated, info = self.played.step(action)
        game_over = "episode" in info
        if (terminated or truncated) and not game_over:
            self.played.reset()
        truncated = game_over and truncated and not terminated
        return self.tap.frame.copy(), self.tap.raw_return - score_before, game_over and not truncated, truncated, info

    def close(self):
        self.played.close()
