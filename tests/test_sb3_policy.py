"""agents.sb3: stable-baselines3's own evaluate_policy plays a registered policy on the expert's vectorised env and
scores each seed's episode as `python -m eval` does, on real envs, real SB3 and a BC checkpoint trained here."""

import hashlib
import json

import pytest
from conftest import run_command
from stable_baselines3.common.evaluation import evaluate_policy

from agents import Observation, Policy, load_policy
from agents.rollout import play_episode
from agents.sb3 import SB3Policy, make_sb3_policy
from core.seeds import episode_seeds
from envs import get_game
from eval.__main__ import main as eval_main
from train.bc import main as bc_main

SEEDS = episode_seeds(100000, 2)


class Recorder(Policy):
    """Plays `policy` and logs each call a loop makes: every reset's seed and every observation (hashed)."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.policy_id = policy.policy_id
        self.calls = []

    def reset(self, seed: int) -> None:
        self.calls.append(("reset", seed))
        self.policy.reset(seed)

    def act(self, observation: Observation):
        frame, agent_obs = (hashlib.sha256(array).hexdigest() for array in (observation.frame, observation.agent_obs))
        self.calls.append(("act", frame, agent_obs, observation.episode_start))
        return self.policy.act(observation)


@pytest.fixture(scope="module")
def bc_checkpoint(expert_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bc") / "bc_si"
    # 100 steps of 32 samples: it plays several actions (20 steps of 8 played only RIGHTFIRE on seed 100000)
    run_command(bc_main, "bc", "game=spaceinvaders", f"data=[{expert_data}]", "val_seeds=null", "steps=100",
                f"out={out}", "progress=false")  # fmt: skip
    return out


def python_m_eval(tmp_path, game: str, policy: str, *options: str) -> list[tuple[float, int]]:
    """(return, decisions) of each seed's episode, as `python -m eval` plays and writes them."""
    run_command(eval_main, "eval", f"game={game}", f"policy={policy}", *options, f"episodes={len(SEEDS)}",
                f"seed={SEEDS[0]}", "video=false", f"out={tmp_path}")  # fmt: skip
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["seeds"] == SEEDS
    return [(episode["return"], episode["length"]) for episode in report["episodes"]]


def evaluate_policy_episode(model, venv) -> tuple[float, list]:
    """The return of one episode of SB3's evaluate_policy (Monitor's, at the real end) and the actions taken."""
    actions = []
    returns, _ = evaluate_policy(model, venv, n_eval_episodes=1, return_episode_rewards=True,
                                 callback=lambda local, _: actions.append(local["actions"][0]))  # fmt: skip
    venv.close()
    return float(returns[0]), actions


def sb3_evaluate(game: str, policy: str, **options) -> list[tuple[float, list]]:
    """Each seed's episode under evaluate_policy, in a venv of its own as `python -m eval` plays them."""
    model, venv = make_sb3_policy(policy, game, seed=SEEDS[0], **options)
    first = evaluate_policy_episode(model, venv)
    return [first] + [evaluate_policy_episode(model, model.make_env(seed)) for seed in SEEDS[1:]]


def test_a_bc_checkpoint_scores_each_seed_as_python_m_eval(bc_checkpoint, tmp_path):
    episodes = sb3_evaluate("spaceinvaders", "bc", checkpoint=str(bc_checkpoint))
    expected = python_m_eval(tmp_path, "spaceinvaders", "bc", f"checkpoint={bc_checkpoint}")
    assert [(episode_return, len(actions)) for episode_return, actions in episodes] == expected
    assert len({int(action) for _, actions in episodes for action in actions}) > 1  # it does look at the frames


def test_the_random_policy_drives_carracing_as_python_m_eval(tmp_path):
    episodes = sb3_evaluate("carracing", "random")
    expected = python_m_eval(tmp_path, "carracing", "random")
    assert [(episode_return, len(actions)) for episode_return, actions in episodes] == expected


def test_the_policy_sees_what_play_episode_shows_it_and_is_not_reset_at_a_life_loss():
    spec = get_game("spaceinvaders")
    in_rollout, in_sb3 = Recorder(load_policy("random", spec)), Recorder(load_policy("random", spec))
    play_episode(in_rollout, spec, SEEDS[0])
    model = SB3Policy(in_sb3, spec)
    venv = model.make_env(SEEDS[0])
    evaluate_policy(model, venv, n_eval_episodes=1)
    venv.close()
    assert in_sb3.calls == in_rollout.calls
    acts = [call for call in in_rollout.calls if call[0] == "act"]
    assert [call[0] for call in in_rollout.calls].count("reset") == 1 and acts[0][-1]
    assert any(call[-1] for call in acts[1:])  # a life loss: episode_start again, in the same episode


def test_later_episodes_of_one_venv_play_the_next_policy_seeds():
    spec = get_game("spaceinvaders")
    recorder = Recorder(load_policy("random", spec))
    model = SB3Policy(recorder, spec)
    venv = model.make_env(SEEDS[0])
    evaluate_policy(model, venv, n_eval_episodes=len(SEEDS))
    venv.close()
    assert [call[1] for call in recorder.calls if call[0] == "reset"] == SEEDS
