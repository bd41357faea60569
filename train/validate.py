"""Held-out validation of game imitation: the action the model picks for each held-out expert step,
by constrained choice among the game's action words (as `agents.VLMPolicy` plays), against the expert's.

    <stage>/validation.json   accuracy, majority-class accuracy, confusion matrix (rows: expert, columns: model)
    <stage>/confusion.png     the confusion matrix, each row normalised by its number of samples
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from collect.dataset import CollectedDataset  # noqa: E402
from vlm import VLM  # noqa: E402

VALIDATION_FILE = "validation.json"
CONFUSION_PNG = "confusion.png"
BATCH_SIZE = 16  # observations per choose() call


@torch.inference_mode()
def predict(model: VLM, dataset: CollectedDataset, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """The action code the model picks for every step of `dataset`: int64 [len(dataset)]."""
    spec = dataset.spec
    prompt = model.game_prompt(spec)
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
        "confusion": confusion.tolist(),  # [expert action][model action]
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
    (folder / VALIDATION_FILE).write_text(json.dumps(report, indent=2))
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
    figure.savefig(folder / CONFUSION_PNG, dpi=100)
    plt.close(figure)
