"""One picture per dataset: a few stacked observations with the action taken, and the action histogram."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from collect.dataset import CollectedDataset  # noqa: E402
from core.files import write_atomically  # noqa: E402

EXAMPLES = 3  # stacked observations shown, evenly spaced through the dataset
FRAME_INCHES = 2.4
HISTOGRAM_INCHES = 3.0
DPI = 100
UPRIGHT_LABELS_MAX = 6  # more action names than this are slanted so they do not overlap


def write_summary(dataset: CollectedDataset, path: Path) -> None:
    spec, n_stack = dataset.spec, dataset.n_stack
    height, width, _ = spec.frame_shape
    frame_height = FRAME_INCHES * height / width
    figure = plt.figure(
        figsize=(FRAME_INCHES * n_stack, EXAMPLES * (frame_height + 0.5) + HISTOGRAM_INCHES),
        dpi=DPI,
        layout="constrained",
    )
    grid = figure.add_gridspec(
        EXAMPLES + 1, n_stack, height_ratios=[frame_height + 0.5] * EXAMPLES + [HISTOGRAM_INCHES]
    )
    figure.suptitle(f"{spec.name}: {dataset.policy_id}, {len(dataset.episodes)} episodes, {len(dataset)} steps")

    for row, index in enumerate(np.linspace(0, len(dataset) - 1, EXAMPLES + 2)[1:-1].astype(int)):
        sample = dataset[int(index)]
        for column, frame in enumerate(sample.frames):  # [n_stack, H, W, 3], oldest first
            axes = figure.add_subplot(grid[row, column])
            axes.imshow(frame)
            axes.set_xticks([])
            axes.set_yticks([])
            age = n_stack - 1 - column
            axes.set_title(
                f"t-{age}" if age else f"t: {spec.action_names[sample.action_code]}",
                fontsize=10,
                fontweight="normal" if age else "bold",
            )
            if column == 0:
                axes.set_ylabel(f"seed {sample.seed}\nstep {sample.step}", fontsize=9)

    counts = np.bincount(dataset.action_codes, minlength=len(spec.action_names))
    axes = figure.add_subplot(grid[EXAMPLES, :])
    axes.bar(range(len(counts)), counts, color="tab:blue")
    slanted = len(counts) > UPRIGHT_LABELS_MAX
    axes.set_xticks(
        range(len(counts)),
        spec.action_names,
        rotation=40 if slanted else 0,
        ha="right" if slanted else "center",
        fontsize=8,
    )
    axes.set_ylabel("steps")
    axes.set_title("actions taken", fontsize=10)

    write_atomically(path, lambda tmp: figure.savefig(tmp, format="png"))
    plt.close(figure)
