"""The Task interface, the task registry, and the mixer that picks a task per batch."""

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from collect.sources import ImageSources
from core.errors import UserError
from core.registry import Registry
from vlm import VLM

TASKS = Registry("training task", package="train.tasks")
register_task = TASKS.register
MIXING_OPTIONS = ("ratio", "batch_size")  # every task's recipe entry has these


class NoData(Exception):
    """The sources hold nothing this task can train on; the stage leaves the task out (the message says why)."""


class Task(ABC):
    """One training task. Registered with `@register_task(name)`, a recipe stage trains it with
    `tasks: {<name>: {ratio: ..., batch_size: ..., <options>}}`."""

    name: ClassVar[str]  # set by @register_task

    @classmethod
    @abstractmethod
    def build(cls, options: dict, sources: ImageSources, game: str | None, val_seeds: list[int] | None) -> "Task":
        """The task on `sources` with the recipe's `options` (its entry, ratio and batch_size included); `game` limits
        game-specific data to one game; `val_seeds` are the held-out episodes to validate on (None: no validation).
        Raises NoData when the sources hold nothing for it, UserError for bad options."""

    def configure(self, model: VLM) -> None:  # noqa: B027 - most tasks need nothing recorded
        """Record in the model's config what playing or evaluating it later needs to know (default: nothing)."""

    @abstractmethod
    def batch(self, model: VLM, rng: np.random.Generator, batch_size: int) -> dict:
        """A batch of `batch_size` samples drawn with `rng`."""

    @abstractmethod
    def loss(self, model: VLM, batch: dict) -> torch.Tensor:
        """The scalar training loss of one of this task's batches."""

    def validate(self, load_model: Callable[[], VLM], stage_dir: Path) -> "Validation | None":
        """Validate the stage's final model (`load_model()` loads it) on the `val_seeds` given to `build`,
        writing its report into `stage_dir`; -> the report, None when there is nothing to validate."""
        return None


@dataclass
class Validation:
    """A validated model's report: `text` is printed, `metrics` go to the stage's TensorBoard log and curves."""

    text: str
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class StageTask:
    """A task as a stage trains it."""

    task: Task
    batch_size: int  # samples per micro-batch and process
    ratio: float  # sampling weight among the stage's tasks


def build_tasks(
    task_configs: dict, sources: ImageSources, game: str | None = None, val_seeds: list[int] | None = None
) -> tuple[dict[str, StageTask], dict[str, str]]:
    """{name: StageTask} of the tasks whose data the sources hold, and {name: why} of those left out."""
    tasks, left_out = {}, {}
    for name, options in task_configs.items():
        options = dict(options)
        missing = [option for option in MIXING_OPTIONS if option not in options]
        if missing:
            raise UserError(f"task {name}: the recipe gives no {', '.join(missing)}")
        batch_size, ratio = int(options["batch_size"]), float(options["ratio"])
        try:
            task = TASKS.get(name).build(options, sources, game, val_seeds)
        except NoData as why:
            left_out[name] = str(why)
            continue
        tasks[name] = StageTask(task, batch_size, ratio)
    if not tasks:
        raise UserError(f"none of the tasks {sorted(task_configs)} has data: {left_out}")
    return tasks, left_out


class TaskMixer:
    """Picks the task of each batch with probability proportional to its ratio."""

    def __init__(self, ratios: dict[str, float]):
        if any(r <= 0 for r in ratios.values()):
            raise UserError(f"task ratios must be positive, got {ratios}")
        self.names = list(ratios)
        weights = np.array([ratios[n] for n in self.names], dtype=np.float64)
        self.probs = weights / weights.sum()

    def pick(self, rng: np.random.Generator) -> str:
        return self.names[int(rng.choice(len(self.names), p=self.probs))]
