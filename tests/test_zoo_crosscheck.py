"""Our evaluation against a client nobody here wrote: rl_zoo3's own create_test_env + model loop."""

import copy

import numpy as np
import pytest
from conftest import SHARED_EXPERTS
from rl_zoo3.utils import create_test_env, get_saved_hyperparams
from stable_baselines3 import PPO
from stable_baselines3.common.utils import set_random_seed

from agents.expert_policy import EVAL_CUSTOM_OBJECTS, ExpertPolicy
from agents.rollout import play_episode
from envs import get_game

SPEC = get_game("spaceinvaders")
ENV_ID = "SpaceInvadersNoFrameskip-v4"
# The agent as the trainer left it (with optimizer state) when shared/ is beside the repo; our copy otherwise.
ZOO_FOLDER = SHARED_EXPERTS / "ppo" / f"{ENV_ID}_1"
if not ZOO_FOLDER.is_dir():
    ZOO_FOLDER = SPEC.default_expert_path


def zoo_episode_return(seed: int) -> float:
    """What rl_zoo3's enjoy.py computes for one Atari episode (stochastic, full-game Monitor score)."""
    set_random_seed(seed)
    hyperparams, stats_path = get_saved_hyperparams(str(ZOO_FOLDER / ENV_ID), norm_reward=False, test_mode=True)
    env = create_test_env(
        ENV_ID, n_envs=1, stats_path=stats_path, seed=seed, should_render=False, hyperparams=copy.deepcopy(hyperparams)
    )
    model = PPO.load(ZOO_FOLDER / f"{ENV_ID}.zip", custom_objects=EVAL_CUSTOM_OBJECTS, device="cpu", seed=seed)
    obs, state, episode_start = env.reset(), None, np.ones((1,), dtype=bool)
    while True:
        action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=False)
        obs, _, episode_start, infos = env.step(action)
        if "episode" in infos[0]:
            env.close()
            return float(infos[0]["episode"]["r"])


@pytest.mark.parametrize("seed", [100000, 100001, 100002])
def test_eval_returns_equal_rl_zoo3_returns(seed):
    policy = ExpertPolicy(SPEC.default_expert_path, SPEC)
    assert play_episode(policy, SPEC, seed).episode_return == zoo_episode_return(seed)
