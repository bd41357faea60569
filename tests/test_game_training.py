"""recipe=game: imitation fine-tuning on a real expert dataset, held-out validation (accuracy, confusion
matrix), init=none|CHECKPOINT. Real micro-size tiny models, a real two-episode expert dataset."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import EXPERT_TRAIN_SEED as TRAIN_SEED
from conftest import EXPERT_VAL_SEED as VAL_SEED
from conftest import REPO_ROOT
from safetensors.torch import load_file
from test_train import MICRO, MICRO_OVERRIDES, compose_train

from agents.vlm_policy import VLMPolicy, game_prompt
from collect.dataset import CollectedDataset
from collect.sources import ImageSources
from core.errors import UserError
from core.runs import FINAL_DIR, SUMMARY_FILE
from envs.games import SPACEINVADERS
from train.__main__ import main as train_main
from train.tasks import build_tasks
from train.tasks.game import CONFUSION_PNG, VALIDATION_FILE
from vlm import VLM, VLMConfig

ACTIONS = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def game_run(run_dir, data, *overrides: str) -> list[str]:
    """A two-step micro game run validated on VAL_SEED."""
    return [
        "recipe=game",
        "game=spaceinvaders",
        f"data=[{data}]",
        f"val_seeds=[{VAL_SEED}]",
        f"run_dir={run_dir}",
        "progress=false",
        "recipe.stages.game.steps=2",
        "recipe.stages.game.warmup_steps=1",
        "recipe.stages.game.tasks.game.batch_size=2",
        *MICRO_OVERRIDES,
        *overrides,
    ]


def test_held_out_episodes_are_never_trained_on(expert_data):
    sources = ImageSources([str(expert_data)], held_out=[VAL_SEED])
    tasks, _ = build_tasks({"game": {"ratio": 1.0, "batch_size": 2}}, sources, "spaceinvaders")
    assert [d.seeds for d in sources.datasets] == [[TRAIN_SEED]]
    assert [d.seeds for d in tasks["game"].task.datasets] == [[TRAIN_SEED]]
    with pytest.raises(UserError, match="none of the tasks"):
        build_tasks({"game": {"ratio": 1.0, "batch_size": 2}}, sources, "carracing")  # game= picks the game's datasets


def test_game_batches_put_the_loss_on_the_action_word_only(expert_data):
    model = VLM.from_config(VLMConfig.preset("tiny", **MICRO))
    tasks, _ = build_tasks({"game": {"ratio": 1.0, "batch_size": 4}}, ImageSources([str(expert_data)]), "spaceinvaders")
    batch = tasks["game"].task.batch(model, np.random.default_rng(0), 4)
    for labels in batch["labels"]:
        answer = [t for t in labels.tolist() if t >= 0]
        assert answer[-1] == model.tokenizer.eos_token_id
        assert model.tokenizer.decode(answer, skip_special_tokens=True) in ACTIONS


def test_recipe_game_trains_a_new_model_and_validates_on_held_out_episodes(expert_data, tmp_path, capsys):
    train_main.__wrapped__(compose_train(*game_run(tmp_path, expert_data, "init=none", "run=new")))
    out = capsys.readouterr().out
    stage = tmp_path / "new" / "game"
    assert json.loads((stage / SUMMARY_FILE).read_text())["steps"] == 2 and "from a new tiny model" in out

    report = json.loads((stage / VALIDATION_FILE).read_text())
    expert_codes = ImageSources([str(expert_data)], seeds=[VAL_SEED]).datasets[0].action_codes
    assert report["seeds"] == [VAL_SEED] and report["samples"] == len(expert_codes) and report["actions"] == ACTIONS
    assert 0.0 <= report["accuracy"] <= 1.0 and 0.0 < report["majority_accuracy"] <= 1.0
    confusion = np.array(report["confusion"])
    assert confusion.shape == (6, 6) and confusion.sum() == len(expert_codes)
    assert confusion.sum(1).tolist() == np.bincount(expert_codes, minlength=6).tolist()  # rows: the expert's actions
    assert report["accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
    assert (stage / CONFUSION_PNG).stat().st_size > 0
    assert f"spaceinvaders validation, seeds [{VAL_SEED}]" in out and "RIGHTFIRE" in out


def test_init_checkpoint_is_the_starting_model(expert_data, tmp_path):
    """With the paper's trainable=game the vision tower is frozen: it must end exactly as the init
    checkpoint holds it. The recipe's default (the tiny tower learns) moves it."""
    model = VLM.from_config(VLMConfig.preset("tiny", **MICRO))
    with torch.no_grad():
        for parameter in model.vision.parameters():
            parameter.add_(0.5)  # unlike any new model
    model.save_pretrained(str(tmp_path / "init"))
    for run, trainable in (("frozen", "game"), ("default", None)):
        overrides = [f"init={tmp_path / 'init'}", f"run={run}"] + (
            [f"recipe.stages.game.trainable={trainable}"] if trainable else []
        )
        train_main.__wrapped__(compose_train(*game_run(tmp_path, expert_data, *overrides)))

    def vision(path):
        return {k: v for k, v in load_file(str(path / "model.safetensors")).items() if k.startswith("vision.")}

    initial, frozen = vision(tmp_path / "init"), vision(tmp_path / "frozen" / "game" / FINAL_DIR)
    assert initial.keys() == frozen.keys() and all(torch.equal(initial[k], frozen[k]) for k in initial)
    adapted = vision(tmp_path / "default" / "game" / FINAL_DIR)
    assert any(not torch.equal(initial[k], adapted[k]) for k in initial)


def test_validation_needs_the_game(expert_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        train_main.__wrapped__(compose_train(*game_run(tmp_path, expert_data, "game=null", "init=none", "run=x")))
    err = capsys.readouterr().err
    assert (
        exit_.value.code == 2 and err.startswith("error: ") and "needs game=" in err and not (tmp_path / "x").exists()
    )


def test_instruction_none_is_trained_recorded_and_played(expert_data, tmp_path):
    train_main.__wrapped__(
        compose_train(
            *game_run(tmp_path, expert_data, "init=none", "run=brief", "recipe.stages.game.tasks.game.instruction=none")
        )
    )
    final = tmp_path / "brief" / "game" / FINAL_DIR
    model = VLM.from_pretrained(str(final))
    assert model.config.game_instruction == "none"
    assert (
        game_prompt(model.config, SPACEINVADERS)
        == "<Img><ImageHere></Img>" * 4 + " [spaceinvaders] choose an action from Action Space: "
    )
    assert VLMPolicy(final, SPACEINVADERS).prompt == game_prompt(model.config, SPACEINVADERS)
    with pytest.raises(ValueError, match="game_instruction"):
        VLMConfig(game_instruction="short")


def test_action_probe_reports_each_probe_against_the_majority_action(expert_data):
    """benchmarks/action_probe.py trains its three classifiers on the dataset's held-out split and prints a row each."""
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/action_probe.py",
            f"--data={expert_data}",
            f"--val-seeds={VAL_SEED}",
            "--steps=2",
            "--eval-every=2",
            "--batch=4",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = [
        line.split("|")[1:-1]
        for line in result.stdout.splitlines()
        if line.startswith("| ") and line[2:5] in ("cnn", "vit", "llm")
    ]
    assert [row[0].strip() for row in rows] == ["cnn", "vit", "llm"]
    held_out = CollectedDataset(expert_data, seeds=[VAL_SEED])
    codes = np.array([held_out[i].action_code for i in range(len(held_out))])
    majority = np.bincount(codes).max() / len(codes)
    for _, step, samples, accuracy, majority_column, _ in rows:
        assert (int(step), int(samples)) == (2, 8)
        assert 0.0 <= float(accuracy) <= 1.0 and float(majority_column) == pytest.approx(majority, abs=1e-3)
