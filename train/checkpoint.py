"""Stage folders (the layout is core.runs'): periodic checkpoints (model + trainer state), the final model, a summary.

    <stage>/checkpoint-<step>/   VLM.save_pretrained files + trainer_state.pt (optimizer, scheduler, step)
    <stage>/final/               the stage's trained model; its presence marks the stage as done
    <stage>/summary.json         steps, samples, wall time, throughput, last losses
    <stage>/tb/                  TensorBoard scalars

Every file and folder is written under a temporary name and renamed into place (core.files), so a kill at
any moment leaves the previous checkpoint intact; a resumed run loses at most the steps since it.
"""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model

from core import files
from core.runs import SUMMARY_FILE, checkpoint_dir, checkpoint_step, final_dir
from vlm import VLM
from vlm.model import WEIGHTS_FILE

TRAINER_STATE_FILE = "trainer_state.pt"


def is_done(stage_dir: Path) -> bool:
    return (final_dir(stage_dir) / WEIGHTS_FILE).is_file() and (stage_dir / SUMMARY_FILE).is_file()


def checkpoints(stage_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    if not stage_dir.is_dir():
        return []
    found = [
        (step, path)
        for path in stage_dir.iterdir()
        if (step := checkpoint_step(path)) is not None and (path / TRAINER_STATE_FILE).is_file()
    ]
    return sorted(found)


def clean_partial(stage_dir: Path) -> None:
    """Remove what a killed run was writing when it died."""
    files.clean_partial(stage_dir)


def save_checkpoint(stage_dir: Path, model: VLM, trainer_state: dict) -> Path:
    """Write checkpoint-<step>, then delete the older ones."""
    step = trainer_state["step"]
    target = checkpoint_dir(stage_dir, step)

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp))
        torch.save(trainer_state, tmp / TRAINER_STATE_FILE)

    files.write_atomically(target, write)
    for old_step, path in checkpoints(stage_dir):
        if old_step != step:
            shutil.rmtree(path)
    return target


def load_checkpoint(path: Path, model: VLM) -> dict:
    """Load the checkpoint's weights into model; -> its trainer state."""
    load_model(model, str(path / WEIGHTS_FILE), device=str(model.device))
    return torch.load(path / TRAINER_STATE_FILE, map_location=model.device, weights_only=True)


def save_final(stage_dir: Path, model: VLM, summary: dict) -> None:
    files.write_atomically(final_dir(stage_dir), lambda tmp: model.save_pretrained(str(tmp)))
    files.write_json_atomically(stage_dir / SUMMARY_FILE, summary)
    for _, path in checkpoints(stage_dir):
        shutil.rmtree(path)


def read_summary(stage_dir: Path) -> dict:
    return json.loads((stage_dir / SUMMARY_FILE).read_text())
