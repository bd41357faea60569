"""Training curves: a real micro game run and a real train.bc run write curves.png and log their held-out
accuracy to TensorBoard (validation/...). The resumed-after-SIGKILL curve is checked in test_train.py."""

import json

import numpy as np
from conftest import EXPERT_VAL_SEED, run_command
from PIL import Image
from test_train import MICRO_OVERRIDES, compose_train

from train import curves
from train.__main__ import main as train_main
from train.bc import LOSS_TAG as BC_LOSS_TAG
from train.bc import main as bc_main
from train.tasks.game import VALIDATION_FILE

GAME_STEPS, BC_STEPS, BC_LR = 6, 20, 1e-3
WITH_VALIDATION = 3  # panels: loss, learning rate, held-out accuracy


def float32(value: float) -> float:
    """As TensorBoard stores a scalar."""
    return float(np.float32(value))


def assert_drawn_png(path, panels: int) -> None:
    """A PNG of the figure's size with something drawn on it."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = (round(inches * curves.DPI) for inches in curves.PANEL_SIZE)
        assert image.size == (panels * width, height)
        pixels = np.asarray(image.convert("L"))
    assert pixels.min() < pixels.max()


def assert_validation_logged(logged: dict, folder, step: int) -> None:
    report = json.loads((folder / VALIDATION_FILE).read_text())
    for metric in curves.VALIDATION_METRICS:
        assert logged[curves.VALIDATION_PREFIX + metric] == {step: float32(report[metric])}


def test_a_validated_game_run_draws_its_curves_and_logs_its_accuracy(expert_data, tmp_path):
    cfg = compose_train(
        "recipe=game", "game=spaceinvaders", f"data=[{expert_data}]", f"val_seeds=[{EXPERT_VAL_SEED}]",
        f"run_dir={tmp_path}", "run=curves", "init=none", "progress=false", f"recipe.stages.game.steps={GAME_STEPS}",
        "recipe.stages.game.warmup_steps=1", "recipe.stages.game.log_every=1",
        "recipe.stages.game.tasks.game.batch_size=2",
        *MICRO_OVERRIDES,
    )  # fmt: skip
    train_main.__wrapped__(cfg)
    stage = tmp_path / "curves" / "game"
    assert_drawn_png(stage / curves.CURVES_PNG, WITH_VALIDATION)
    logged = curves.read_scalars(stage / curves.TB_DIR)
    steps = list(range(1, GAME_STEPS + 1))
    assert sorted(logged["loss/game"]) == steps and sorted(logged[curves.LR_TAG]) == steps
    assert_validation_logged(logged, stage, GAME_STEPS)

    event_files = sorted((stage / curves.TB_DIR).iterdir())
    train_main.__wrapped__(cfg)  # a finished run validates again from its report: nothing new is logged
    assert sorted((stage / curves.TB_DIR).iterdir()) == event_files


def test_bc_draws_its_curves_and_logs_its_accuracy(expert_data, tmp_path):
    out = tmp_path / "bc_si"
    run_command(bc_main, "bc", "game=spaceinvaders", f"data=[{expert_data}]", f"val_seeds=[{EXPERT_VAL_SEED}]",
                f"steps={BC_STEPS}", "batch_size=8", f"lr={BC_LR}", f"out={out}", "progress=false")  # fmt: skip
    assert_drawn_png(out / curves.CURVES_PNG, WITH_VALIDATION)
    logged = curves.read_scalars(out / curves.TB_DIR)
    assert sorted(logged[BC_LOSS_TAG]) == list(range(1, BC_STEPS + 1))
    assert set(logged[curves.LR_TAG].values()) == {float32(BC_LR)}  # Adam's constant lr
    assert_validation_logged(logged, out, BC_STEPS)
