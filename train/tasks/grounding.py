"""What the grounding tasks (segmentation, visual_prompt) share: the annotated frames among the sources, their
held-out frames, and the check of a task's options. No task is registered here."""

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from collect.annotations import ANNOTATE_COMMAND, AnnotatedFrames, FrameObject, read_meta
from collect.dataset import episode_infos, read_dataset_metadata
from collect.sources import ImageSources
from core.errors import UserError
from core.files import write_json_atomically
from core.schema import option, validate
from train.tasks.base import NoData

MAX_DRAWS = 1000  # frames drawn before giving up on finding one with something to ask about


def setting(default, **rules) -> dataclasses.Field:
    """A task option with a default: core.schema.option's rules (minimum, maximum, choices, check)."""
    return dataclasses.field(default=default, metadata=option(**rules).metadata)


def checked_options(task: str, options: dict, schema: type):
    """A task's recipe entry as an instance of `schema` (a dataclass of `setting`s), each option checked as the
    command checks its own (core.schema); an option the task does not have is refused."""
    known = [field.name for field in dataclasses.fields(schema)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UserError(
            f"tasks.{task}.{unknown[0]} is not an option of the {task} task: its options are {', '.join(known)}"
        )
    defaults = {field.name: field.default for field in dataclasses.fields(schema)}
    cfg = OmegaConf.create({**defaults, **options})
    validate(cfg, schema, f"tasks.{task}.")
    return schema(**OmegaConf.to_container(cfg))


def has_annotations(root: Path) -> bool:
    """Whether `python -m collect.annotate` annotated the dataset (damaged annotations are a UserError)."""
    return read_meta(root) is not None


def annotated_frames(task: str, sources: ImageSources, game: str | None) -> list[AnnotatedFrames]:
    """The annotated frames of every collected dataset among the sources (of `game` if given), of the episodes the
    sources train on; NoData, naming the command that annotates them, when none is annotated."""
    datasets = [d for d in sources.datasets if game in (None, d.spec.name)]
    # The sources have checked the datasets' files already.
    annotated = [AnnotatedFrames(d.root, seeds=d.seeds, verify=False) for d in datasets if has_annotations(d.root)]
    if annotated:
        return annotated
    if not datasets:
        raise NoData(f"no collected dataset{' of ' + game if game else ''} among the sources for {task}")
    raise NoData(
        f"no collected dataset among the sources has object annotations for {task}: run "
        f"{ANNOTATE_COMMAND.format(root=datasets[0].root)}"
    )


def held_out_frames(task: str, sources: ImageSources, game: str | None, val_seeds: list[int]) -> list[AnnotatedFrames]:
    """The annotated frames of the `val_seeds` episodes, of every annotated dataset among the sources (of `game` if
    given) that holds them all."""
    held = []
    for dataset in sources.datasets:
        if game in (None, dataset.spec.name) and has_annotations(dataset.root):
            seeds = {episode.seed for episode in episode_infos(read_dataset_metadata(dataset.root))}
            if set(val_seeds) <= seeds:
                # The sources checked every episode file of the dataset, held-out ones included, at open.
                held.append(AnnotatedFrames(dataset.root, seeds=list(val_seeds), verify=False))
    if not held:
        raise UserError(
            f"val_seeds={list(val_seeds)}: no annotated dataset{' of ' + game if game else ''} among data= holds "
            f"those episodes, which {task} validates on"
        )
    return held


class FramePool:
    """Frames of several annotated datasets, drawn uniformly over all their frames."""

    def __init__(self, annotated: list[AnnotatedFrames]):
        self.annotated = annotated
        self.ends = np.cumsum([len(frames) for frames in annotated])  # [n_datasets]

    def __len__(self) -> int:
        return int(self.ends[-1])

    def locate(self, index: int) -> tuple[AnnotatedFrames, int]:
        which = int(np.searchsorted(self.ends, index, side="right"))
        return self.annotated[which], int(index - (self.ends[which - 1] if which else 0))

    def draw(self, rng: np.random.Generator) -> tuple[AnnotatedFrames, int]:
        return self.locate(int(rng.integers(len(self))))


def visible(objects: list[FrameObject]) -> list[FrameObject]:
    """The objects with at least one pixel in the frame (an object can be listed while it is hidden)."""
    return [obj for obj in objects if obj.mask.any()]


def no_frame_found(task: str, what: str) -> UserError:
    return UserError(f"{task}: {MAX_DRAWS} annotated frames drawn and none had {what}: are the annotations empty?")


def kept_report(path: Path, settings: dict, measure: Callable[[], dict]) -> dict:
    """The validation report at `path` when it was measured with `settings` (each key's value in it), else
    measure()'s with `settings` recorded in it, written there: a resumed stage does not validate twice."""
    report = json.loads(path.read_text()) if path.is_file() else None
    if report is None or any(report.get(key) != value for key, value in settings.items()):
        report = {**measure(), **settings}
        write_json_atomically(path, report)
    return report
