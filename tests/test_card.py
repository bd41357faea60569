"""vlm.card: the model card (README.md in Hugging Face's format) written from what a checkpoint folder holds, by
training into every stage's final/ and by `python -m vlm.card`. Real training, evaluation and reconstruction
runs of micro models; the cards are read back with huggingface_hub."""

import json
import os
import shlex
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
from conftest import REPO_ROOT, run_command, run_module
from huggingface_hub import ModelCard
from PIL import Image
from test_train import MICRO, MICRO_OVERRIDES

from eval.reconstruct import main as reconstruct_main
from vlm import VLM, VLMConfig
from vlm.card import CARD_FILE, TRAINING_FILE, referring_section, segmentation_section
from vlm.card import main as card_main

EVAL_SEED = 700


def metrics(card: ModelCard) -> dict[tuple[str, str | None], tuple]:
    """(metric type, split: the seeds) -> (value, the dataset args it was measured with)."""
    return {
        (result.metric_type, result.dataset_split): (result.metric_value, result.dataset_args)
        for result in card.data.eval_results
    }


def write_card(folder, *overrides: str) -> ModelCard:
    run_command(card_main, "card", f"checkpoint={folder}", *overrides)
    return ModelCard.load(folder / CARD_FILE)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, images):
    """A micro VLM checkpoint, one real SpaceInvaders episode of it and a real reconstruction run:
    (checkpoint, play results.json, reconstruction results.json)."""
    root = tmp_path_factory.mktemp("evaluated")
    checkpoint = root / "micro"
    VLM.from_config(VLMConfig.preset("tiny", **MICRO)).save_pretrained(str(checkpoint))
    played = run_module(
        "eval", "game=spaceinvaders", "policy=vlm", f"checkpoint={checkpoint}", "episodes=1", f"seed={EVAL_SEED}",
        "video=false", f"out={root / 'play'}",
    )  # fmt: skip
    assert played.returncode == 0, played.stderr
    run_command(
        reconstruct_main, "reconstruct", f"checkpoint={checkpoint}", f"images={images}", "n=1", "progress=false",
        f"out={root / 'reconstruct'}",
    )  # fmt: skip
    return checkpoint, root / "play" / "results.json", root / "reconstruct" / "results.json"


def test_training_writes_a_card_into_the_final_folder_and_the_command_rewrites_it(images, tmp_path):
    overrides = [
        "recipe=pvp_stage1", "run=micro", f"run_dir={tmp_path}", f"data=[{images}]", "progress=false",
        *MICRO_OVERRIDES, "recipe.stages.pvp_stage1.steps=2", "recipe.stages.pvp_stage1.warmup_steps=1",
        "recipe.stages.pvp_stage1.tasks.pvp.batch_size=2", "recipe.stages.pvp_stage1.tasks.pvp.queries_per_image=2",
    ]  # fmt: skip
    trained = run_module("train", *overrides)
    assert trained.returncode == 0, trained.stderr
    final = tmp_path / "micro" / "pvp_stage1" / "final"
    command = shlex.join(["python", "-m", "train", *overrides])
    record = json.loads((final / TRAINING_FILE).read_text())
    assert record["command"] == command and record["summary"]["steps"] == 2

    written = (final / CARD_FILE).read_text()
    card = ModelCard.load(final / CARD_FILE)
    assert card.data.library_name == "vlmplay" and card.data.model_name == "micro"
    assert card.data.datasets == [str(images)] and card.data.base_model is None
    assert "pixel-value-prediction" in card.data.tags and "lora" in card.data.tags
    assert f"```bash\n{command}\n```" in card.text
    assert "| pvp_stage1 | 2 | 4 |" in card.text

    assert write_card(final).content == written  # the command writes the same card from the same folder
    (final / TRAINING_FILE).unlink()  # as in runs trained before training.json: the stage's summary.json is read
    card = write_card(final)
    assert "| pvp_stage1 | 2 | 4 |" in card.text and "The training command is not recorded" in card.text
    assert "from config.json, ../summary.json." in card.text


def refused(capsys, folder, *overrides: str) -> str:
    """The one-line error `python -m vlm.card` stops with (exit code 2)."""
    with pytest.raises(SystemExit) as exit_:
        write_card(folder, *overrides)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_the_card_holds_the_evaluations_it_is_given(evaluated, capsys):
    checkpoint, played, reconstructed = evaluated
    card = write_card(checkpoint, f"results=[{played},{reconstructed}]")
    report, reconstruction = json.loads(played.read_text()), json.loads(reconstructed.read_text())
    found = metrics(card)
    split = f"seeds {EVAL_SEED}"
    assert found["mean_reward", split] == (round(report["return"]["mean"], 2), {"seeds": str(EVAL_SEED), "episodes": 1})
    assert found["std_reward", split][0] == round(report["return"]["std"], 2)
    assert found["reconstruction_error", None] == (round(reconstruction["mean_re"], 2), {"images": 1})
    assert f"python -m eval game=spaceinvaders policy=vlm checkpoint={checkpoint} episodes=1 seed={EVAL_SEED}" in (
        card.text
    )
    assert f"python -m eval.reconstruct checkpoint={checkpoint} images={reconstruction['source']} n=1" in card.text
    assert card.data.eval_results[0].dataset_name == report["env_id"]
    assert "is not a results.json" in refused(capsys, checkpoint, f"results=[{checkpoint / 'config.json'}]")


def test_a_game_checkpoint_card_holds_its_validation_and_its_training(evaluated, tmp_path, capsys):
    shipped = REPO_ROOT / "checkpoints" / "game_carracing"
    folder = tmp_path / "cr" / "game" / "final"  # a run's stage, its validation beside final/
    shutil.copytree(shipped, folder, ignore=shutil.ignore_patterns(CARD_FILE, "validation.json"))
    shutil.copy(shipped / "validation.json", folder.parent)
    command = "python -m train recipe=game game=carracing data=[data/carracing] init=checkpoints/pvp_tiny seed=2"
    card = write_card(folder, f"command='{command}'")
    validation = json.loads((shipped / "validation.json").read_text())
    expected = (round(validation["accuracy"], 4), {"seeds": "27-29", "samples": 2936})
    assert metrics(card)["accuracy", "episodes 27-29"] == expected
    assert card.data.base_model == "checkpoints/pvp_tiny" and card.data.datasets == ["data/carracing"]
    assert {"carracing", "reinforcement-learning", "imitation-learning"} <= set(card.data.tags)
    assert f"```bash\n{command}\n```" in card.text and "27 action words" in card.text
    assert card.data.model_name == "cr" and "../validation.json" in card.text

    _, played, _ = evaluated  # SpaceInvaders: not this model's game
    assert "played spaceinvaders; this model plays" in refused(capsys, folder, f"results=[{played}]")


def test_the_shipped_cards_hold_their_measurements():
    game = ModelCard.load(REPO_ROOT / "checkpoints" / "game_carracing" / CARD_FILE)
    validation = json.loads((REPO_ROOT / "checkpoints" / "game_carracing" / "validation.json").read_text())
    found = metrics(game)
    assert found["accuracy", "episodes 27-29"][0] == round(validation["accuracy"], 4)
    assert found["mean_reward", "seeds 100000-100014"][1] == {"seeds": "100000-100014", "episodes": 15}
    assert ("std_reward", "seeds 100000-100014") in found and game.data.base_model == "checkpoints/pvp_tiny"
    pvp = ModelCard.load(REPO_ROOT / "checkpoints" / "pvp_tiny" / CARD_FILE)
    assert metrics(pvp)["reconstruction_error", "episodes 27-29"][1] == {"images": 3, "seeds": "27-29"}
    grounding = ModelCard.load(REPO_ROOT / "checkpoints" / "grounding" / CARD_FILE)
    measured = {result.metric_type for result in grounding.data.eval_results}
    assert {"ciou", "accuracy"} <= measured and {"referring-segmentation", "visual-prompts"} <= set(grounding.data.tags)


def test_a_referring_result_names_the_mark_form_it_was_measured_with():
    """The card's eval.refer command reproduces the result: form= is given unless it was the model's own, which
    eval.refer uses by default."""
    report = {"game": "carracing", "source": "data/carracing", "seeds": [27, 28, 29], "objects": 200}
    report |= {"accuracy_point": 0.8, "count_point": 200, "accuracy_box": 0.9, "count_box": 200}
    default = "python -m eval.refer checkpoint=ck images=data/carracing seeds=[27,28,29] n=200\n"
    assert default in referring_section("ck", report, "encoder")  # made before eval.refer had form=
    assert default in referring_section("ck", {**report, "form": "encoder"}, "encoder")
    text = {**report, "form": "text"}
    assert default.replace("\n", " form=text\n") in referring_section("ck", text, "encoder")
    assert default in referring_section("ck", text, "text")
    assert default.replace("\n", " form=encoder\n") in referring_section("ck", {**report, "form": "encoder"}, "text")


def test_a_segmentation_result_names_label_shift_when_it_was_measured_without():
    report = {"game": "carracing", "source": "data/carracing", "seeds": [27, 28, 29], "frames": 16}
    report |= {"ciou": 0.7, "ciou_ci95_low": 0.6, "ciou_ci95_high": 0.8}
    default = "python -m eval.segment checkpoint=ck images=data/carracing seeds=[27,28,29] n=16\n"
    assert default in segmentation_section("ck", {**report, "label_shift": True})
    without = default.replace("\n", " label_shift=false\n")
    assert without in segmentation_section("ck", {**report, "label_shift": False})
    assert without in segmentation_section("ck", report)  # made before eval.segment had label_shift=
