"""The baselines a researcher compares against: behaviour cloning with the Nature CNN (train.bc, policy=bc)
and DAgger (policy=dagger, train.dagger), on real envs, the real default SpaceInvaders expert and real
micro-size models."""

import json

import numpy as np
import pytest
import torch
from conftest import EXPERT_VAL_SEED, run_command
from safetensors.torch import load_file
from stable_baselines3.common.atari_wrappers import WarpFrame
from test_train import MICRO

from agents import load_policy
from agents.bc_policy import grey_frames
from agents.rollout import play_episode
from collect.__main__ import main as collect_main
from collect.dataset import CollectedDataset
from core.errors import UserError
from envs import get_game
from envs.pipeline import frame_tap, make_play_env
from eval.__main__ import main as eval_main
from train.bc import main as bc_main
from train.dagger import main as dagger_main
from vlm import VLM, VLMConfig

SPACEINVADERS = get_game("spaceinvaders")


@pytest.fixture(scope="module")
def bc_checkpoint(expert_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bc") / "bc_si"
    run_command(bc_main, "bc", "game=spaceinvaders", f"data=[{expert_data}]", f"val_seeds=[{EXPERT_VAL_SEED}]",
                "steps=20", "batch_size=8", f"out={out}", "progress=false")  # fmt: skip
    return out


@pytest.fixture(scope="module")
def micro_vlm(tmp_path_factory):
    path = tmp_path_factory.mktemp("vlm") / "micro"
    VLM.from_config(VLMConfig.preset("tiny", **MICRO)).save_pretrained(str(path))
    return path


def test_bc_input_is_the_atari_pipelines_grey_frame():
    venv = make_play_env(SPACEINVADERS, SPACEINVADERS.pipeline, seed=3)
    venv.reset()
    for _ in range(30):
        venv.step(np.array([1]))
    frame = frame_tap(venv).frame
    venv.close()
    warp = object.__new__(WarpFrame)
    warp.width = warp.height = SPACEINVADERS.pipeline_side
    assert np.array_equal(grey_frames(frame, SPACEINVADERS.pipeline_side), warp.observation(frame)[..., 0])


def test_bc_trains_validates_reproducibly_and_plays(bc_checkpoint, expert_data, tmp_path):
    config = json.loads((bc_checkpoint / "config.json").read_text())
    validation = json.loads((bc_checkpoint / "validation.json").read_text())
    assert config["game"] == "spaceinvaders" and config["training"]["samples"] == 160
    assert validation["seeds"] == [EXPERT_VAL_SEED] and 0 <= validation["accuracy"] <= 1
    again = tmp_path / "again"
    run_command(bc_main, "bc", "game=spaceinvaders", f"data=[{expert_data}]", f"val_seeds=[{EXPERT_VAL_SEED}]",
                "steps=20", "batch_size=8", f"out={again}", "progress=false")  # fmt: skip
    first, second = load_file(bc_checkpoint / "model.safetensors"), load_file(again / "model.safetensors")
    assert all(torch.equal(first[name], second[name]) for name in first)

    run_command(eval_main, "eval", "game=spaceinvaders", "policy=bc", f"checkpoint={bc_checkpoint}", "episodes=1",
                "video=false", f"out={tmp_path / 'eval'}")  # fmt: skip
    report = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert report["policy"] == "bc-bc_si" and report["episodes"][0]["length"] > 0
    with pytest.raises(UserError, match="trained for spaceinvaders, not carracing"):
        load_policy("bc", get_game("carracing"), checkpoint=str(bc_checkpoint))


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_dagger_policy_drives_by_beta_and_records_the_experts_label(micro_vlm, beta):
    dagger = load_policy("dagger", SPACEINVADERS, checkpoint=str(micro_vlm), beta=beta)
    steps = []
    play_episode(dagger, SPACEINVADERS, 11, on_step=steps.append)
    expert = load_policy("expert", SPACEINVADERS)
    labels_alone = []
    if beta == 1.0:  # the expert drives: the same game as the expert alone, and every label is the action
        play_episode(expert, SPACEINVADERS, 11, on_step=lambda step: labels_alone.append(int(step.action)))
        assert [int(s.action) for s in steps] == labels_alone == [int(s.label) for s in steps]
    else:  # the learner drives: the actions are the VLM's, the labels the expert's, and they differ somewhere
        assert any(int(s.action) != int(s.label) for s in steps)
    assert dagger.policy_id.startswith("dagger-vlm-micro-labelled-by-expert-ppo-")


def test_collected_dagger_episodes_store_the_action_taken_and_the_label(micro_vlm, tmp_path):
    out = tmp_path / "labelled"
    run_command(collect_main, "collect", "game=spaceinvaders", "policy=dagger", f"checkpoint={micro_vlm}", "beta=0.5",
                "episodes=1", "seed=300000", f"out={out}")  # fmt: skip
    dataset = CollectedDataset(out)
    steps = []
    play_episode(load_policy("dagger", SPACEINVADERS, checkpoint=str(micro_vlm), beta=0.5), SPACEINVADERS, 300000,
                 on_step=steps.append)  # fmt: skip
    arrays = dataset.episode(0)
    assert dataset.policy_kind == "dagger"
    assert np.array_equal(dataset.action_codes, [int(s.label) for s in steps])
    assert np.array_equal(arrays.actions[:-1], [int(s.action) for s in steps])


def test_dagger_rounds_write_returns_and_accuracy_per_round(micro_vlm, expert_data, tmp_path):
    run_command(dagger_main, "dagger", "game=spaceinvaders", f"init={micro_vlm}", f"data=[{expert_data}]",
                "rounds=1", "episodes=1", "steps=2", "eval_episodes=1", f"val_seeds=[{EXPERT_VAL_SEED}]",
                f"run_dir={tmp_path}", "run=dagger")  # fmt: skip
    report = json.loads((tmp_path / "dagger" / "dagger.json").read_text())
    (round1,) = report["rounds"]
    assert round1["beta"] == 0.5 and round1["labelled_steps"] > 0 and 0 <= round1["heldout_accuracy"] <= 1
    assert (tmp_path / "dagger" / "dagger.png").is_file()
    assert (tmp_path / "dagger" / "round1" / "game" / "final" / "model.safetensors").is_file()
