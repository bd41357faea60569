"""The folders of a training run, which training writes and players read:

<run_dir>/<run>/<stage>/checkpoint-<step>/   periodic checkpoints (model + trainer state)
<run_dir>/<run>/<stage>/final/               the stage's trained model; with summary.json it marks the stage done
<run_dir>/<run>/<stage>/summary.json         steps, samples, wall time, throughput, last losses
"""

import re
from pathlib import Path

CHECKPOINT_PREFIX = "checkpoint-"
FINAL_DIR = "final"
SUMMARY_FILE = "summary.json"
CHECKPOINT_NAME = re.compile(rf"{CHECKPOINT_PREFIX}(\d+)$")


def final_dir(stage_dir: Path) -> Path:
    return stage_dir / FINAL_DIR


def checkpoint_dir(stage_dir: Path, step: int) -> Path:
    return stage_dir / f"{CHECKPOINT_PREFIX}{step}"


def checkpoint_step(path: Path) -> int | None:
    """The step of a checkpoint-<step> folder, None for any other name."""
    match = CHECKPOINT_NAME.match(path.name)
    return int(match.group(1)) if match else None


def model_name(model_dir: Path) -> str:
    """What to call a model folder: a run's stage model (RUN/STAGE/final) by its run, any other by its folder."""
    return model_dir.parents[1].name if model_dir.name == FINAL_DIR else model_dir.name
