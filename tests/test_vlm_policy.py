"""VLMPolicy: a real tiny VLM checkpoint plays real envs through the evaluation protocol's pieces."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import run_module
from test_train import MICRO

from agents import Observation, load_policy
from agents.vlm_policy import VLMPolicy
from core.errors import UserError
from envs import get_game
from envs.pipeline import frame_tap, make_play_env
from vlm import VLM, VLMConfig

STEPS = 12


@pytest.fixture(scope="module")
def tiny_vlm_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vlm") / "game_tiny"
    VLM.from_config(VLMConfig.preset("tiny")).save_pretrained(str(path))
    return path


@pytest.mark.parametrize("game", ["carracing", "spaceinvaders"])
def test_vlm_policy_plays_legal_actions_and_counts_free_answers(game, tiny_vlm_checkpoint):
    spec = get_game(game)
    policy = load_policy("vlm", spec, checkpoint=str(tiny_vlm_checkpoint))
    assert isinstance(policy, VLMPolicy) and policy.policy_id == "vlm-game_tiny"
    legal = [spec.codec.decode(code) for code in range(len(spec.action_names))]
    venv = make_play_env(spec, spec.pipeline, seed=3, env_id=spec.play_env_id(fast=True))
    tap = frame_tap(venv)
    policy.reset(3)
    agent_obs = venv.reset()
    first = tap.frame.copy()
    for step in range(STEPS):
        action = policy.act(Observation(tap.frame, agent_obs, step == 0))
        if step == 0:  # the first stack repeats the first frame
            assert all(np.array_equal(frame, first) for frame in policy.frames)
        assert any(np.array_equal(action, option) for option in legal)
        agent_obs, _, _, _ = venv.step(np.array([action]))
    venv.close()
    assert len(policy.frames) == spec.n_stack
    report = policy.report()
    assert report["decisions"] == STEPS
    assert 0 <= report["greedy_illegal"] <= STEPS
    # Consecutive stacks share frames: at most one new frame per decision goes through the vision tower.
    assert policy.cache.misses <= STEPS


def test_same_seed_same_actions(tiny_vlm_checkpoint):
    spec = get_game("carracing")
    frames = np.random.default_rng(0).integers(0, 256, size=(4, *spec.frame_shape), dtype=np.uint8)
    runs = []
    for _ in range(2):
        policy = VLMPolicy(tiny_vlm_checkpoint, spec)
        policy.reset(0)
        runs.append([policy.act(Observation(frame, None, False)) for frame in frames])
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


def test_missing_or_wrong_checkpoint_is_one_clear_line(tmp_path):
    with pytest.raises(UserError, match="not a VLM checkpoint"):
        VLMPolicy(tmp_path, get_game("carracing"))
    result = run_module(
        "eval", "game=carracing", "policy=vlm", f"checkpoint={tmp_path / 'nope'}", f"out={tmp_path / 'o'}"
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "Traceback" not in result.stderr
    unshipped = dataclasses.replace(get_game("spaceinvaders"), name="unshipped")  # a game no checkpoint ships for
    with pytest.raises(UserError, match="checkpoint="):
        load_policy("vlm", unshipped)


@pytest.mark.parametrize("game", ["carracing", "spaceinvaders"])
def test_shipped_checkpoint_is_the_default_and_plays(game):
    spec = get_game(game)
    policy = load_policy("vlm", spec)
    assert policy.policy_id == f"vlm-game_{game}" and policy.model.config.game_instruction == "none"
    assert policy.prompt == "<Img><ImageHere></Img>" * spec.n_stack + f" [{game}] choose an action from Action Space: "
    legal = [spec.codec.decode(code) for code in range(len(spec.action_names))]
    venv = make_play_env(spec, spec.pipeline, seed=100000, env_id=spec.play_env_id(fast=True))
    tap = frame_tap(venv)
    policy.reset(100000)
    agent_obs = venv.reset()
    for step in range(STEPS):
        action = policy.act(Observation(tap.frame, agent_obs, step == 0))
        assert any(np.array_equal(action, option) for option in legal)
        agent_obs, _, _, _ = venv.step(np.array([action]))
    venv.close()


def test_parallel_evaluation_gives_the_results_and_counts_of_one_worker(tmp_path):
    checkpoint = tmp_path / "micro"
    VLM.from_config(VLMConfig.preset("tiny", **MICRO)).save_pretrained(str(checkpoint))
    reports = []
    for workers in (1, 2):
        out = tmp_path / f"workers{workers}"
        result = run_module(
            "eval", "game=spaceinvaders", "policy=vlm", f"checkpoint={checkpoint}", "episodes=2",
            "seed=700", "video=false", f"workers={workers}", f"out={out}",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        reports.append(json.loads((out / "results.json").read_text()))
    one, two = reports
    assert one["episodes"] == [e | {"wall_time_s": o["wall_time_s"]} for e, o in zip(two["episodes"], one["episodes"])]
    assert one["policy_report"] == two["policy_report"] and one["policy_report"]["decisions"] > 0
    assert two["workers"] == 2
