"""segmentation: referring segmentation (PAE-LaMM §3.3). An annotated frame of a collected dataset
(`python -m collect.annotate`), one of its referring phrases ("the player's cannon", "the aliens in row 3",
"the road") that covers a cell of the 64x64 PVP grid, over which its mask is nearest-resized
(vlm.scoring.grid_targets), and a cell: "[segmentation] {phrase} loc: [y,x] mask: " -> "0|1". A fraction
`inside_fraction` of the cells is drawn inside the mask (the paper samples object pixels ~40 % of the time),
the rest outside it. `queries_per_image` cells of one (frame, phrase) are packed in a row (train/packing.py).

The task records in the model its class prior (inside_fraction and each phrase's mean fraction of the grid in
the training frames): a tiny object covers far less than 40 % of the grid, and vlm.scoring.MaskPredictor undoes
the difference when it decides.

Validation: the model's answer (0 or 1, vlm.scoring.MaskPredictor) at every grid cell for
`val_pairs` (frame, phrase) pairs of each annotated dataset's held-out episodes (a frame drawn uniformly, then
one of its phrases); cIoU (cumulative intersection / cumulative union) overall, per game and per object class
(collect.annotations.PHRASE_CLASSES). eval/segment.py asks every phrase of more frames.

    <stage>/segmentation_validation.json
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from collect.annotations import PHRASE_CLASSES, AnnotatedFrames, referring_phrases
from collect.sources import ImageSources
from core.errors import UserError
from core.schema import positive
from train.packing import pack, packed_loss
from train.tasks.base import Task, Validation, register_task
from train.tasks.grounding import (
    MAX_DRAWS,
    FramePool,
    annotated_frames,
    checked_options,
    held_out_frames,
    kept_report,
    no_frame_found,
    setting,
)
from vlm import VLM, prompts
from vlm.scoring import SIZE, MaskPredictor, ciou, grid_targets, overlap, phrase_coverage

VALIDATION_FILE = "segmentation_validation.json"
VALIDATION_SEED = 0  # which held-out frames are validated on: the same ones for every model
PRIOR_FRAMES, PRIOR_SEED = 2000, 0  # training frames drawn to measure each phrase's fraction of the grid
METRIC_PREFIX = "segmentation_"  # of the metrics logged beside the other tasks' (validation/segmentation_ciou)


@dataclass
class SegmentationOptions:
    ratio: float = setting(1.0, check=positive)
    batch_size: int = setting(64, minimum=1)  # questions per micro-batch
    queries_per_image: int = setting(16, minimum=1)  # grid cells asked about each (frame, phrase)
    inside_fraction: float = setting(0.4, minimum=0.0, maximum=1.0)  # of the cells drawn inside the phrase's mask
    val_pairs: int = setting(8, minimum=1)  # held-out (frame, phrase) pairs per annotated dataset validated on


def segmentation_question(phrase: str, target: np.ndarray, inside_fraction: float, rng: np.random.Generator) -> dict:
    """One question about `phrase` with bool [64, 64] target: a cell inside the mask with probability
    inside_fraction, else outside it (from the other side when one side has no cell)."""
    inside = bool(rng.random() < inside_fraction)
    cells = np.flatnonzero(target.ravel() == inside)
    if not len(cells):
        cells = np.flatnonzero(target.ravel() != inside)
    y, x = divmod(int(rng.choice(cells)), SIZE)
    return dict(
        prompt=prompts.segmentation_prompt(phrase, y, x),
        answer=prompts.segmentation_answer(bool(target[y, x])),
        y=y,
        x=x,
    )


@register_task("segmentation")
@dataclass
class SegmentationTask(Task):
    """A batch of `batch_size` questions: batch_size / queries_per_image (frame, phrase) pairs, each asked at
    queries_per_image cells."""

    pool: FramePool
    queries_per_image: int
    inside_fraction: float
    val_pairs: int
    validation: list[AnnotatedFrames] | None = None  # the held-out episodes' frames
    val_seeds: list[int] | None = None

    @classmethod
    def build(
        cls, options: dict, sources: ImageSources, game: str | None, val_seeds: list[int] | None
    ) -> "SegmentationTask":
        settings = checked_options("segmentation", options, SegmentationOptions)
        if settings.batch_size % settings.queries_per_image:
            raise UserError(
                f"tasks.segmentation.batch_size={settings.batch_size} is not a multiple of "
                f"queries_per_image={settings.queries_per_image}"
            )
        pool = FramePool(annotated_frames("segmentation", sources, game))
        validation = held_out_frames("segmentation", sources, game, val_seeds) if val_seeds else None
        return cls(
            pool,
            settings.queries_per_image,
            settings.inside_fraction,
            settings.val_pairs,
            validation,
            list(val_seeds) if val_seeds else None,
        )

    def configure(self, model: VLM) -> None:
        """The model keeps the prior it is trained under (vlm.scoring.label_shift_threshold undoes it)."""
        model.config.segmentation_inside_fraction = self.inside_fraction
        model.config.segmentation_phrase_fractions = phrase_fractions(self.pool, PRIOR_FRAMES, PRIOR_SEED)

    def draw(self, rng: np.random.Generator) -> dict:
        """A frame (`annotated`'s `index`-th), one of its phrases on the grid (uniformly), the phrase's 64x64 target
        and queries_per_image questions about it."""
        for _ in range(MAX_DRAWS):
            frames, index = self.pool.draw(rng)
            targets = grid_targets(referring_phrases(frames.game, frames.objects(index)))
            if targets:
                break
        else:
            raise no_frame_found("segmentation", "a referring phrase on the 64x64 grid")
        phrase = sorted(targets)[int(rng.integers(len(targets)))]
        target = targets[phrase]  # [64, 64] bool
        questions = [
            segmentation_question(phrase, target, self.inside_fraction, rng) for _ in range(self.queries_per_image)
        ]
        return dict(
            frame=np.array(frames.frame(index)),  # a writable copy: torch warns on read-only (mapped) arrays
            annotated=frames,
            index=index,
            phrase=phrase,
            target=target,
            questions=questions,
        )

    def batch(self, model: VLM, rng: np.random.Generator, batch_size: int) -> dict:
        groups = []
        for _ in range(batch_size // self.queries_per_image):
            drawn = self.draw(rng)
            questions = [(q["prompt"], q["answer"]) for q in drawn["questions"]]
            groups.append((model.preprocess(drawn["frame"][None]), questions))
        return pack(model, groups)

    def loss(self, model: VLM, batch: dict) -> torch.Tensor:
        return packed_loss(model, batch)

    def validate(self, load_model: Callable[[], VLM], stage_dir: Path) -> Validation | None:
        if self.validation is None:
            return None
        settings = {"seeds": self.val_seeds, "pairs_per_dataset": self.val_pairs}
        report = kept_report(
            stage_dir / VALIDATION_FILE, settings, lambda: validate_masks(load_model(), self.validation, self.val_pairs)
        )
        metrics = {METRIC_PREFIX + "ciou": report["ciou"]}
        metrics |= {f"{METRIC_PREFIX}ciou_{game}": value for game, value in report["ciou_per_game"].items()}
        return Validation(describe(report), metrics)


def phrase_fractions(pool: FramePool, frames: int, seed: int) -> dict[str, float]:
    """{phrase: its mean fraction of the 64x64 grid} over the frames among `frames` drawn (seeded) that show it."""
    rng = np.random.default_rng(seed)
    drawn = (pool.draw(rng) for _ in range(frames))
    coverage = phrase_coverage(grid_targets(referring_phrases(a.game, a.objects(index))) for a, index in drawn)
    return {phrase: float(covered.mean() / present) for phrase, (covered, present) in sorted(coverage.items())}


def validate_masks(model: VLM, held_out: list[AnnotatedFrames], pairs_per_dataset: int) -> dict:
    """cIoU of the model's masks on `pairs_per_dataset` (frame, phrase) pairs of each dataset: a frame drawn
    uniformly, then one of its phrases (a seeded draw, the same for every model)."""
    predictor = MaskPredictor(model)
    rng = np.random.default_rng(VALIDATION_SEED)
    counts: dict[str, dict[str, list[list[int]]]] = {"all": {}, "game": {}, "class": {}}  # name -> [I's, U's]
    asked, start = [], time.perf_counter()
    for annotated in held_out:
        for _ in range(pairs_per_dataset):
            index = int(rng.integers(len(annotated)))
            targets = grid_targets(referring_phrases(annotated.game, annotated.objects(index)))
            if not targets:
                continue
            phrase = sorted(targets)[int(rng.integers(len(targets)))]
            predicted = predictor(annotated.frame(index), [phrase])[phrase]
            intersection, union = overlap(predicted, targets[phrase])
            for group, name in (("all", "all"), ("game", annotated.game), ("class", PHRASE_CLASSES[phrase])):
                pair = counts[group].setdefault(name, [[], []])
                pair[0].append(intersection)
                pair[1].append(union)
            asked.append({"game": annotated.game, "seed": annotated.seed_of(index), "index": index, "phrase": phrase})
    seconds = time.perf_counter() - start
    return {
        "ciou": ciou(*counts["all"].get("all", [[], []])),
        "ciou_per_game": {name: ciou(*pair) for name, pair in counts["game"].items()},
        "ciou_per_class": {name: ciou(*pair) for name, pair in sorted(counts["class"].items())},
        "pairs_per_dataset": pairs_per_dataset,
        "pairs": asked,
        "seconds": round(seconds, 1),
        "questions_per_s": round(len(asked) * SIZE * SIZE / max(seconds, 1e-9), 1),
    }


def describe(report: dict) -> str:
    classes = ", ".join(f"{name} {value:.3f}" for name, value in report["ciou_per_class"].items())
    games = ", ".join(f"{name} {value:.3f}" for name, value in report["ciou_per_game"].items())
    return (
        f"segmentation validation, seeds {report['seeds']}: cIoU {report['ciou']:.3f} over {len(report['pairs'])} "
        f"(frame, phrase) pairs ({games}); per class: {classes}"
    )
