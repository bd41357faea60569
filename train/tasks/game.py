"""game: imitation. A collected observation (stacked frames) -> the action word its policy took, on the
game template the VLM policy plays with (agents.vlm_policy.game_prompt), the loss on the answer only.

Validation: the action the model picks for each held-out step, by constrained choice among the game's
action words (as the VLM policy plays), against the dataset's.

    <stage>/validation.json   accuracy, majority-class accuracy, confusion matrix (rows: dataset, columns: model)
    <stage>/confusion.png     the confusion matrix, each row normalised by its number of samples
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from agents.vlm_policy import game_prompt  # noqa: E402
from collect.dataset import CollectedDataset, episode_infos, read_dataset_metadata  # noqa: E402
from collect.sources import ImageSources, open_collected  # noqa: E402
from core.errors import UserError  # noqa: E402
from core.files import write_atomically, write_json_atomically  # noqa: E402
from envs.games import GAMES  # noqa: E402
from train.curves import VALIDATION_METRICS  # noqa: E402
from train.tasks.base import NoData, Task, Validation, register_task  # noqa: E402
from vlm import VLM, prompts  # noqa: E402

VALIDATION_FILE = "validation.json"
CONFUSION_PNG = "confusion.png"
VALIDATION_BATCH = 16  # observations per choose() call
IMITATED_KINDS = ("expert",)  # default `imitate`: the policies whose datasets are worth imitating


@register_task("game")
@dataclass
class GameTask(Task):
    """A batch of observations of one game (a dataset drawn by its number of steps), prompted with the
    game template and `instruction` (which `configure` records in the model's config)."""

    datasets: list[CollectedDataset]
    instruction: str = prompts.GAME_INSTRUCTIONS[0]
    validation: CollectedDataset | None = None  # the held-out episodes

    @classmethod
    def build(cls, options: dict, sources: ImageSources, game: str | None, val_seeds: list[int] | None) -> "GameTask":
        instruction = str(options.get("instruction", cls.instruction))
        if instruction not in prompts.GAME_INSTRUCTIONS:
            raise UserError(
                f"game task instruction={instruction!r}: choose one of {', '.join(prompts.GAME_INSTRUCTIONS)}"
            )
        kinds = tuple(options.get("imitate", IMITATED_KINDS))
        datasets = sources.stacked_played_by(kinds, game)
        if not datasets:
            raise NoData(f"no dataset played by {'|'.join(kinds)}{' of ' + game if game else ''} among the sources")
        validation = None if not val_seeds else held_out_dataset(sources, kinds, game, val_seeds)
        return cls(datasets, instruction, validation)

    def configure(self, model: VLM) -> None:
        """The model keeps the instruction it is trained with, and the games and action words it learns, in its
        config, so that it plays with that instruction and only those games."""
        model.config.game_instruction = self.instruction
        model.config.games = {d.spec.name: list(d.spec.action_names) for d in self.datasets}

    def batch(self, model: VLM, rng: np.random.Generator, batch_size: int) -> dict:
        sizes = np.array([len(d) for d in self.datasets], dtype=np.float64)
        dataset = self.datasets[int(rng.choice(len(self.datasets), p=sizes / sizes.sum()))]
        spec = dataset.spec
        prompt = game_prompt(model.config, spec)
        samples = []
        for index in rng.integers(len(dataset), size=batch_size):
            sample = dataset[int(index)]
            samples.append(
                dict(
                    images=model.preprocess(np.array(sample.frames)),
                    prompt=prompt,
                    answer=spec.action_names[sample.action_code],
                )
            )
        return model.collate(samples)

    def loss(self, model: VLM, batch: dict) -> torch.Tensor:
        return model(**batch).loss

    def validate(self, load_model: Callable[[], VLM], stage_dir: Path) -> Validation | None:
        if self.validation is None:
            return None
        report = read_report(stage_dir)
        if report is None or report["seeds"] != self.validation.seeds:
            report = validate(load_model(), self.validation)
            write_report(report, stage_dir)
        return Validation(confusion_table(report), {metric: float(report[metric]) for metric in VALIDATION_METRICS})


def held_out_dataset(sources: ImageSources, kinds, game: str | None, val_seeds: list[int]) -> CollectedDataset:
    """The `val_seeds` episodes of the one dataset of `game` among the sources (that the task imitates) that
    holds them all."""
    if game is None:
        raise UserError(f"val_seeds={val_seeds} needs game=<{'|'.join(GAMES)}>: the game whose dataset is validated on")
    datasets = [
        d
        for d in sources.played_by(kinds, game)
        if set(val_seeds) <= {e.seed for e in episode_infos(read_dataset_metadata(d.root))}
    ]
    if len(datasets) != 1:
        raise UserError(
            f"val_seeds needs exactly one dataset of {game} played by {'|'.join(kinds)} holding seeds {val_seeds} "
            f"among data=, found {len(datasets)}"
        )
    return open_collected(datasets[0].root, val_seeds)


@torch.inference_mode()
def predict(model: VLM, dataset: CollectedDataset, batch_size: int = VALIDATION_BATCH) -> np.ndarray:
    """The action code the model picks for every step of `dataset`: int64 [len(dataset)]."""
    spec = dataset.spec
    prompt = game_prompt(model.config, spec)
    picked = []
    for start in range(0, len(dataset), batch_size):
        steps = range(start, min(start + batch_size, len(dataset)))
        images = torch.stack([model.preprocess(np.array(dataset[i].frames)) for i in steps])  # [B, n_stack, 3, S, S]
        picked.append(model.choose([prompt] * len(steps), list(spec.action_names), images=images).index.cpu().numpy())
    return np.concatenate(picked).astype(np.int64)


def validate(model: VLM, dataset: CollectedDataset) -> dict:
    """Action accuracy and confusion matrix of `model` on every step of `dataset`."""
    was_training = model.training
    model.eval()
    predicted = predict(model, dataset)
    model.train(was_training)
    expert = dataset.action_codes.astype(np.int64)
    names = list(dataset.spec.action_names)
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(confusion, (expert, predicted), 1)
    per_action = confusion.sum(1)
    return {
        "game": dataset.spec.name,
        "seeds": dataset.seeds,
        "samples": len(dataset),
        "accuracy": float(np.trace(confusion) / len(dataset)),
        "majority_action": names[int(per_action.argmax())],
        "majority_accuracy": float(per_action.max() / len(dataset)),
        "actions": names,
        "confusion": confusion.tolist(),  # [dataset action][model action]
    }


def confusion_table(report: dict) -> str:
    """The report as printed text: accuracy, then the confusion matrix (rows: expert, columns: model)."""
    names, width = report["actions"], max(len(n) for n in report["actions"]) + 1
    lines = [
        f"{report['game']} validation, seeds {report['seeds']}: {report['samples']} steps, action accuracy "
        f"{report['accuracy']:.3f} (always {report['majority_action']}: {report['majority_accuracy']:.3f})",
        "expert \\ model".ljust(width + 4) + "".join(n.rjust(width) for n in names) + "  total",
    ]
    for name, row in zip(names, report["confusion"]):
        lines.append(name.ljust(width + 4) + "".join(str(v).rjust(width) for v in row) + f"  {sum(row):5d}")
    return "\n".join(lines)


def read_report(folder: Path) -> dict | None:
    path = folder / VALIDATION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_report(report: dict, folder: Path) -> None:
    write_json_atomically(folder / VALIDATION_FILE, report)
    confusion = np.array(report["confusion"], dtype=np.float64)
    rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(6, 5))
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(confusion.astype(np.int64)):
        axes.text(
            column,
            row,
            str(count),
            ha="center",
            va="center",
            color="white" if rates[row, column] > 0.5 else "black",
            fontsize=8,
        )
    ticks = range(len(report["actions"]))
    axes.set_xticks(ticks, report["actions"], rotation=45, ha="right")
    axes.set_yticks(ticks, report["actions"])
    axes.set_xlabel("model")
    axes.set_ylabel("expert")
    axes.set_title(f"{report['game']}: accuracy {report['accuracy']:.3f} (majority {report['majority_accuracy']:.3f})")
    figure.colorbar(image, label="fraction of the expert's row")
    figure.tight_layout()
    write_atomically(folder / CONFUSION_PNG, lambda tmp: figure.savefig(tmp, dpi=100, format="png"))
    plt.close(figure)
