"""python -m train.bc game=<carracing|spaceinvaders> data=[DATASET] seed=0 [steps=1500 batch_size=32 lr=2.5e-4]

Behaviour cloning with the Nature CNN (agents/bc_policy.py): cross-entropy on the dataset's action codes,
Adam, a fixed number of samples (by default 48,000, the VLM game stage's), batches drawn from (seed, step).
The episodes in `val_seeds` are held out and validated on (action accuracy, as the VLM's game task does).
Writes the checkpoint folder (config.json with the training record, model.safetensors), and into it
validation.json, tb/ (TensorBoard: loss and lr per step, validation/accuracy) and curves.png (train/curves.py);
play it with `python -m eval policy=bc checkpoint=<folder>`.
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents.bc_policy import BCConfig, NatureCNN, grey_frames, is_bc_checkpoint, save_bc
from collect.dataset import CollectedDataset, stack_indices
from collect.sources import ImageSources
from core.cli import command
from core.errors import UserError
from core.files import check_replaceable, write_json_atomically
from core.schema import existing_paths, option, positive, writable_folder
from core.seeds import SEED_MAX, check_seed_list, parse_seeds
from envs.games import GameSpec, check_game, get_game
from train import curves

VALIDATION_FILE = "validation.json"
EVAL_BATCH = 256
LOSS_TAG = curves.LOSS_PREFIX + "bc"


class StackedGrey:
    """Every step of some datasets as the BC input: grey frames [N, n_stack, side, side] and action codes [N]."""

    def __init__(self, datasets: list[CollectedDataset], spec: GameSpec):
        frames, stacks, codes, offset = [], [], [], 0
        for dataset in datasets:
            for index, episode in enumerate(dataset.episodes):
                frames.append(grey_frames(np.asarray(dataset.episode(index).frames), spec.pipeline_side))  # [L+1, s, s]
                stacks.append(offset + stack_indices(np.arange(episode.length), spec.n_stack))  # [L, n_stack]
                offset += episode.length + 1
            codes.append(dataset.action_codes)
        self.frames = np.concatenate(frames)
        self.stacks = np.concatenate(stacks)
        self.codes = torch.from_numpy(np.concatenate(codes).astype(np.int64))

    def __len__(self) -> int:
        return len(self.codes)

    def batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.frames[self.stacks[indices]]), self.codes[indices]  # [B, n_stack, s, s], [B]


@torch.inference_mode()
def accuracy(model: NatureCNN, data: StackedGrey) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(data), EVAL_BATCH):
        frames, codes = data.batch(np.arange(start, min(start + EVAL_BATCH, len(data))))
        correct += int((model(frames).argmax(-1) == codes).sum())
    model.train()
    return correct / len(data)


def imitated(sources: ImageSources, kinds, spec: GameSpec, seeds: list[int] | None = None) -> list[CollectedDataset]:
    """The datasets of the game played by `kinds` among the sources, with the game's frame stack."""
    datasets = sources.stacked_played_by(kinds, spec.name, seeds)
    if not datasets:
        raise UserError(f"no dataset of {spec.name} played by {'|'.join(kinds)} among data=: collect one first")
    return datasets


def write_log(folder: Path, losses: list[float], walltimes: list[float], lr: float, report: dict | None) -> None:
    """The run's TensorBoard log, written after the checkpoint folder it lives in (which replaces any older one
    whole), and its curves.png."""
    with SummaryWriter(str(folder / curves.TB_DIR)) as writer:
        for step, (loss, walltime) in enumerate(zip(losses, walltimes), 1):
            writer.add_scalar(LOSS_TAG, loss, step, walltime)
            writer.add_scalar(curves.LR_TAG, lr, step, walltime)
        if report is not None:
            metrics = {metric: report[metric] for metric in curves.VALIDATION_METRICS}
            for tag, value in curves.validation_scalars(metrics).items():
                writer.add_scalar(tag, value, len(losses))
    curves.write_curves(folder, f"bc: {folder.name}")


@dataclass
class BCTrainConfig:
    game: str | None = option(check=check_game)
    data: list[str] = option(check=existing_paths)
    imitate: list[str] = option()
    seeds: Any = option(check=check_seed_list)
    val_seeds: Any = option(check=check_seed_list)
    steps: int = option(minimum=1)
    batch_size: int = option(minimum=1)
    lr: float = option(check=positive)
    seed: int = option(minimum=0, maximum=SEED_MAX)
    threads: int = option(minimum=1)
    run: str = option()
    run_dir: str = option(check=writable_folder)
    out: str | None = option(check=writable_folder)
    overwrite: bool = option()
    progress: bool = option()


@command("bc", BCTrainConfig)
def main(cfg: DictConfig) -> None:
    if cfg.game is None:
        raise UserError("give game=<carracing|spaceinvaders>: the game whose dataset is imitated")
    spec = get_game(cfg.game)
    out = Path(cfg.out or Path(cfg.run_dir) / cfg.run).expanduser()
    check_replaceable(out, "out", "BC checkpoint", is_bc_checkpoint, cfg.overwrite)  # save_bc replaces it whole
    torch.set_num_threads(int(cfg.threads))
    kinds = list(cfg.imitate)
    val_seeds = parse_seeds(cfg.val_seeds) or []
    sources = ImageSources([str(s) for s in cfg.data], parse_seeds(cfg.seeds), held_out=val_seeds)
    data = StackedGrey(imitated(sources, kinds, spec), spec)
    validation = StackedGrey(imitated(sources, kinds, spec, val_seeds), spec) if val_seeds else None

    config = BCConfig(spec.name, list(spec.action_names), spec.n_stack, spec.pipeline_side, int(cfg.seed))
    model = config.build()
    optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg.lr))
    start, losses, walltimes = time.perf_counter(), [], []
    for step in tqdm(range(int(cfg.steps)), desc=f"bc {spec.name}", unit="step", disable=not cfg.progress):
        rng = np.random.default_rng([int(cfg.seed), step])
        frames, codes = data.batch(rng.integers(len(data), size=int(cfg.batch_size)))
        loss = F.cross_entropy(model(frames), codes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        walltimes.append(time.time())
    seconds = time.perf_counter() - start

    report = None
    if validation is not None:
        majority = torch.bincount(validation.codes, minlength=len(spec.action_names)).max().item() / len(validation)
        report = {"seeds": val_seeds, "samples": len(validation), "accuracy": accuracy(model, validation),
                  "majority_accuracy": majority}  # fmt: skip
    config.training = {
        "data": [str(s) for s in cfg.data],
        "train_steps_of_data": len(data),
        "steps": int(cfg.steps),
        "batch_size": int(cfg.batch_size),
        "samples": int(cfg.steps) * int(cfg.batch_size),
        "lr": float(cfg.lr),
        "train_seconds": round(seconds, 1),
        "last_loss": float(np.mean(losses[-100:])),
        "validation": report,
    }
    save_bc(out, model, config)
    if report is not None:
        write_json_atomically(out / VALIDATION_FILE, report)
    write_log(out, losses, walltimes, float(cfg.lr), report)
    print(
        f"bc {spec.name}: {config.training['samples']} samples of {len(data)} steps in {seconds:.0f} s, "
        f"last loss {config.training['last_loss']:.3f}"
        + (
            f"; held-out accuracy {report['accuracy']:.3f} (majority {report['majority_accuracy']:.3f})"
            if report
            else ""
        )
        + f"\nmodel: {out}"
    )


if __name__ == "__main__":
    main()
