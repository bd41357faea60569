import shutil

import numpy as np
import pytest

from agents import Observation
from agents.expert_policy import ExpertPolicy
from agents.rollout import play_episode
from core.errors import UserError
from envs import get_game
from envs.pipeline import make_play_env

SPACEINVADERS = get_game("spaceinvaders")


def test_repo_spaceinvaders_expert_loads_its_zoo_pipeline():
    policy = ExpertPolicy(SPACEINVADERS.default_expert_path, SPACEINVADERS)
    assert policy.algo == "ppo" and policy.env_id == "SpaceInvadersNoFrameskip-v4"
    assert policy.pipeline["frame_stack"] == 4
    assert policy.deterministic is False  # RL-Zoo3 samples Atari policies


def test_expert_acts_in_its_pipeline():
    policy = ExpertPolicy(SPACEINVADERS.default_expert_path, SPACEINVADERS)
    venv = make_play_env(SPACEINVADERS, policy.pipeline, seed=3)
    policy.reset(3)
    action = policy.act(Observation(frame=None, agent_obs=venv.reset(), episode_start=True))
    assert 0 <= int(action) < 6
    venv.close()


def test_greedy_expert_is_named_so_and_does_not_sample():
    policy = ExpertPolicy(SPACEINVADERS.default_expert_path, SPACEINVADERS, deterministic=True)
    assert policy.policy_id == "expert-ppo-SpaceInvadersNoFrameskip-v4_1-greedy"  # datasets and results tell it apart
    venv = make_play_env(SPACEINVADERS, policy.pipeline, seed=3)
    agent_obs = venv.reset()
    actions = set()
    for seed in range(8):  # the sampled policy's seeds would draw different actions
        policy.reset(seed)
        actions.add(int(policy.act(Observation(frame=None, agent_obs=agent_obs, episode_start=True))))
    assert len(actions) == 1
    venv.close()


def test_missing_folder_says_what_a_zoo_folder_holds(tmp_path):
    with pytest.raises(UserError, match="does not exist.*ENV.zip"):
        ExpertPolicy(tmp_path / "nope", SPACEINVADERS)


def test_folder_without_agent_zip_is_refused(tmp_path):
    folder = tmp_path / "ppo" / "SpaceInvadersNoFrameskip-v4_1"
    shutil.copytree(
        SPACEINVADERS.default_expert_path / "SpaceInvadersNoFrameskip-v4", folder / "SpaceInvadersNoFrameskip-v4"
    )
    with pytest.raises(UserError, match="has no SpaceInvadersNoFrameskip-v4.zip"):
        ExpertPolicy(folder, SPACEINVADERS)


@pytest.mark.parametrize("broken_file", ["args.yml", "config.yml"])
def test_malformed_yaml_is_refused(tmp_path, broken_file):
    folder = tmp_path / "ppo" / "SpaceInvadersNoFrameskip-v4_1"
    shutil.copytree(SPACEINVADERS.default_expert_path, folder)
    (folder / "SpaceInvadersNoFrameskip-v4" / broken_file).write_text("{{{ not: yaml")
    with pytest.raises(UserError, match=broken_file.replace(".", r"\.")):
        ExpertPolicy(folder, SPACEINVADERS)


def test_corrupt_agent_zip_is_refused(tmp_path):
    folder = tmp_path / "ppo" / "SpaceInvadersNoFrameskip-v4_1"
    shutil.copytree(SPACEINVADERS.default_expert_path, folder)
    (folder / "SpaceInvadersNoFrameskip-v4.zip").write_bytes(b"PK not really a zip")
    with pytest.raises(UserError, match="does not load"):
        ExpertPolicy(folder, SPACEINVADERS)


def test_expert_of_another_game_is_refused():
    with pytest.raises(UserError, match="not on the game carracing"):
        ExpertPolicy(SPACEINVADERS.default_expert_path, get_game("carracing"))


def test_offline_hub_id_fails_at_once_with_instructions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="rl_zoo3.load_from_hub --algo ppo_lstm --env CarRacing-v0"):
        ExpertPolicy("hub:sb3/ppo_lstm-CarRacing-v0", get_game("carracing"))


def test_recurrent_expert_plays_a_full_seeded_episode_twice_alike(tiny_carracing_expert):
    spec = get_game("carracing")
    policy = ExpertPolicy(tiny_carracing_expert, spec)
    assert policy.algo == "ppo_lstm" and policy.deterministic is True
    returns = [play_episode(policy, spec, seed=11).episode_return for _ in range(2)]
    assert returns[0] == returns[1]
    assert np.isfinite(returns[0])
