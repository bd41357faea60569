"""Training curves as a PNG, drawn from a run's own TensorBoard log: every event file in it, so a stage resumed
after a kill is drawn over all its steps. Loss per task (raw and smoothed), learning rate, and held-out
accuracy where the run was validated.

    <stage>/curves.png        python -m train, every stage (the last one again once it is validated)
    <checkpoint>/curves.png   python -m train.bc
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from core.files import write_atomically  # noqa: E402

TB_DIR, CURVES_PNG = "tb", "curves.png"  # in a stage folder (python -m train) or a checkpoint (python -m train.bc)
LOSS_PREFIX, VALIDATION_PREFIX, LR_TAG = "loss/", "validation/", "lr"
VALIDATION_METRICS = ("accuracy", "majority_accuracy")  # of an action-accuracy report (game task, train.bc)
REFERENCE_METRIC = "majority_accuracy"  # always answering the most frequent action: drawn as a line to beat
SMOOTHING = 0.9  # the weight of TensorBoard's smoothing slider: set it to 0.9 there to see the same curve
KEEP_EVERY_EVENT = 0  # EventAccumulator's size guidance for "no reservoir sampling"
RAW_ALPHA = 0.3
LOG_SCALE_SPAN = 10.0  # losses spanning more than this factor are drawn on a log axis
PANEL_SIZE = (5.0, 4.0)  # inches per panel
DPI = 100


def read_scalars(tb_dir: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of every event file in `tb_dir`, read oldest first: a step that a resumed process
    logged again keeps the resumed process's value."""
    events = EventAccumulator(str(tb_dir), size_guidance={SCALARS: KEEP_EVERY_EVENT}, purge_orphaned_data=False)
    events.Reload()
    return {tag: {event.step: event.value for event in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def validation_scalars(metrics: dict[str, float]) -> dict[str, float]:
    return {VALIDATION_PREFIX + name: float(value) for name, value in metrics.items()}


def log_scalars(tb_dir: Path, scalars: dict[str, float], step: int) -> None:
    """Append `scalars` at `step` to the log, unless it holds them already (a finished run validated again)."""
    logged = read_scalars(tb_dir)
    # TensorBoard stores float32: compare in float32.
    if all(logged.get(tag, {}).get(step) == np.float32(value) for tag, value in scalars.items()):
        return
    with SummaryWriter(str(tb_dir)) as writer:
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)


def smoothed(values: np.ndarray) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased so that it does not start at 0."""
    average, out = 0.0, np.empty(len(values))
    for index, value in enumerate(values):
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        out[index] = average / (1 - SMOOTHING ** (index + 1))
    return out


def series(points: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    steps = np.array(sorted(points))
    return steps, np.array([points[step] for step in steps])


def write_curves(folder: Path, title: str) -> None:
    """Draw the losses, learning rate and validation accuracy of folder/tb into folder/curves.png."""
    scalars = read_scalars(folder / TB_DIR)
    losses = sorted(tag for tag in scalars if tag.startswith(LOSS_PREFIX))
    validation = sorted(tag for tag in scalars if tag.startswith(VALIDATION_PREFIX))
    panels = 3 if validation else 2
    figure, axes = plt.subplots(1, panels, figsize=(PANEL_SIZE[0] * panels, PANEL_SIZE[1]), sharex=True)

    loss_axes = axes[0]
    for index, tag in enumerate(losses):
        steps, values = series(scalars[tag])
        name = tag.removeprefix(LOSS_PREFIX)
        loss_axes.plot(steps, values, color=f"C{index}", alpha=RAW_ALPHA, linewidth=1, label=f"{name} (raw)")
        loss_axes.plot(steps, smoothed(values), color=f"C{index}", label=f"{name} (smoothed {SMOOTHING})")
    every_loss = np.concatenate([list(scalars[tag].values()) for tag in losses])
    if every_loss.min() > 0 and every_loss.max() / every_loss.min() > LOG_SCALE_SPAN:
        loss_axes.set_yscale("log")
    loss_axes.set_ylabel("training loss")

    lr_axes = axes[1]
    lr_axes.plot(*series(scalars[LR_TAG]), color="tab:gray")
    lr_axes.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    lr_axes.set_ylabel("learning rate")

    if validation:
        accuracy_axes = axes[2]
        for tag in validation:
            steps, values = series(scalars[tag])
            metric = tag.removeprefix(VALIDATION_PREFIX)
            label = f"{metric} {values[-1]:.3f}"
            if metric == REFERENCE_METRIC:
                accuracy_axes.axhline(values[-1], color="tab:gray", linestyle="--", label=label)
            else:
                accuracy_axes.plot(steps, values, marker="o", label=label)
        accuracy_axes.set_ylim(0, 1)
        accuracy_axes.set_ylabel("held-out metrics (validation)")

    for panel in axes:
        panel.set_xlabel("step")
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        panel.grid(alpha=0.3)
        if panel.get_legend_handles_labels()[0]:
            panel.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    write_atomically(folder / CURVES_PNG, lambda tmp: figure.savefig(tmp, dpi=DPI, format="png"))
    plt.close(figure)
