"""python -m eval.segment checkpoint=DIR images=DATASET seeds=[27,28,29] n=8 [out=results/segment]

Referring segmentation (PAE-LaMM section 3.3) on held-out annotated frames: for each of n frames (drawn with
`seed`) and each referring phrase present in it, the model is asked "[segmentation] {phrase} loc: [y,x] mask: "
at every cell of the 64x64 grid (the PVP grid) and answers 0 or 1, no decoding (vlm.scoring.MaskPredictor): 1 where
the log-odds of the two answers (each one's token and eos) pass the threshold that undoes the class prior its
segmentation training asked under (a cell inside a mask 40 % of the time, far more than a small object covers;
label_shift=false: the likelier answer, as does a model that records no prior). The ground truth is the phrase's mask on
that grid (a cell is inside when the nearest-resized mask pixel is: vlm.scoring.grid_targets, as training
draws it). A phrase whose mask covers no cell of the grid (a shot thinner than a cell) has nothing to segment
there and is left out (counted in results.json).

cIoU = sum of intersections / sum of unions over every (frame, phrase) pair (cumulative IoU, as LISA and
PAE-LaMM report it), overall and per class (collect.annotations.PHRASE_CLASSES); mIoU, the mean of the pairs'
IoUs, beside it; a 95 % bootstrap interval of cIoU over frames. One PNG per frame: a row per phrase, ground
truth | prediction over the 64x64 frame.
"""

import functools
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image, ImageDraw
from tqdm import tqdm

from collect.annotations import PHRASE_CLASSES, AnnotatedFrames, referring_phrases
from core import REPO_ROOT
from core.cli import command
from core.errors import UserError
from core.files import check_replaceable, write_atomically, write_json_atomically
from core.schema import option
from core.seeds import parse_seeds
from eval.options import RESULTS_FILE, ImageEvalConfig, is_own_output
from eval.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE
from vlm import VLM, prompts
from vlm.checkpoint import checked_checkpoint_config, load_checked
from vlm.scoring import SIZE, MaskPredictor, ciou, grid_targets, overlap, phrase_coverage

SHIPPED_CHECKPOINT = REPO_ROOT / "checkpoints" / "grounding"
TRAIN_HINT = (
    "train one with `python -m train recipe={recipe} init=checkpoints/pvp_tiny data=[<annotated datasets>] "
    "out=<folder>` (recipe=grounding trains both grounding tasks; see eval/README.md) "
    "or give checkpoint=<a VLM checkpoint folder>"
)
PNG_NAME = re.compile(r"\d{7}\.png")  # one per frame, named by its index among the annotated frames
PNG_UPSCALE = 4  # each grid cell becomes 4x4 pixels in the PNGs
CAPTION_HEIGHT = 12  # pixels above each row of a PNG, for its phrase
GROUND_TRUTH_COLOUR, PREDICTION_COLOUR = (0, 255, 0), (255, 0, 255)
MASK_OPACITY = 0.6  # how strongly a mask's colour covers the frame in the PNGs
DIM = 0.5  # the frame under the masks is dimmed so that the mask colours stand out


def bootstrap_ciou(intersections: list[list[int]], unions: list[list[int]]) -> tuple[float, float]:
    """Percentile bootstrap interval of cIoU, resampling frames (each frame's pairs together): cIoU is a ratio
    of sums, not a mean, so eval.stats.bootstrap_ci does not apply."""
    per_frame_i = np.array([sum(i) for i in intersections], dtype=np.float64)  # [F]
    per_frame_u = np.array([sum(u) for u in unions], dtype=np.float64)  # [F]
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    picked = rng.integers(len(per_frame_i), size=(BOOTSTRAP_RESAMPLES, len(per_frame_i)))  # [R, F]
    union = per_frame_u[picked].sum(axis=1)  # [R]
    ratios = per_frame_i[picked].sum(axis=1) / np.where(union > 0, union, np.nan)
    tail = (1 - CONFIDENCE) / 2
    low, high = np.nanquantile(ratios, [tail, 1 - tail])
    return float(low), float(high)


def overlay(target: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """The 64x64 frame uint8 [64, 64, 3], dimmed, with `mask` bool [64, 64] painted over it."""
    dimmed = target.astype(np.float64) * DIM
    painted = np.where(mask[..., None], (1 - MASK_OPACITY) * dimmed + MASK_OPACITY * np.array(colour), dimmed)
    return painted.round().astype(np.uint8)


def frame_panel(target: np.ndarray, rows: list[tuple[str, np.ndarray, np.ndarray]]) -> Image.Image:
    """One row per (phrase, ground truth, prediction): its phrase above, ground truth | prediction, each cell
    PNG_UPSCALE x PNG_UPSCALE."""
    gap = np.full((SIZE, 1, 3), prompts.RGB_MAX, dtype=np.uint8)
    width = (2 * SIZE + 1) * PNG_UPSCALE
    panel = Image.new("RGB", (width, len(rows) * (CAPTION_HEIGHT + SIZE * PNG_UPSCALE)), (0, 0, 0))
    draw = ImageDraw.Draw(panel)
    for r, (phrase, truth, prediction) in enumerate(rows):
        top = r * (CAPTION_HEIGHT + SIZE * PNG_UPSCALE)
        draw.text((2, top), phrase, fill=(255, 255, 255))
        row = np.concatenate(
            [overlay(target, truth, GROUND_TRUTH_COLOUR), gap, overlay(target, prediction, PREDICTION_COLOUR)], axis=1
        )
        panel.paste(Image.fromarray(row).resize((width, SIZE * PNG_UPSCALE), Image.NEAREST), (0, top + CAPTION_HEIGHT))
    return panel


def draw_frames(count: int, n: int, seed: int) -> list[int]:
    """n distinct frame indices among `count`, drawn with `seed`, in order."""
    return sorted(np.random.default_rng(seed).choice(count, size=n, replace=False).tolist())


def evaluate_segmentation(
    model: VLM,
    frames: AnnotatedFrames,
    n: int,
    seed: int,
    batch: int,
    out: Path,
    progress: bool = True,
    label_shift: bool = True,
) -> dict:
    """cIoU of the model on n frames drawn (seeded) from `frames`; writes one PNG per frame into out."""
    indices = draw_frames(len(frames), n, seed)
    predictor = MaskPredictor(model, batch, label_shift)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    per_frame, empty_on_grid = [], 0
    for index in tqdm(indices, desc="segment", unit="frame", disable=not progress):
        frame = frames.frame(index)
        masks = referring_phrases(frames.game, frames.objects(index))
        truths = grid_targets(masks)
        empty_on_grid += len(masks) - len(truths)
        predictions = predictor(frame, list(truths)) if truths else {}
        pairs = [scored_pair(phrase, truth, predictions[phrase]) for phrase, truth in truths.items()]
        png = out / f"{index:07d}.png"
        if pairs:
            rows = [(phrase, truth, predictions[phrase]) for phrase, truth in truths.items()]
            panel = frame_panel(prompts.reconstruction_target(frame), rows)
            write_atomically(png, functools.partial(panel.save, format="PNG"))
        per_frame.append(
            {"index": index, "seed": frames.seed_of(index), "pairs": pairs, "png": png.name if pairs else None}
        )
    seconds = time.perf_counter() - start
    questions = SIZE * SIZE * sum(len(frame["pairs"]) for frame in per_frame)
    phrases = sorted({pair["phrase"] for frame in per_frame for pair in frame["pairs"]})
    return {
        **ciou_summary(per_frame),
        "label_shift": label_shift,
        "decision": decision(model, label_shift),
        "thresholds": {phrase: round(predictor.threshold(phrase), 4) for phrase in phrases},
        "phrases_empty_on_grid": empty_on_grid,
        **timing(seconds, n, questions),
        "images": per_frame,
    }


def scored_pair(phrase: str, truth: np.ndarray, prediction: np.ndarray) -> dict:
    """One (frame, phrase) pair's counts: cIoU sums their intersections and unions."""
    intersection, union = overlap(prediction, truth)
    return {
        "phrase": phrase,
        "class": PHRASE_CLASSES[phrase],
        "intersection": intersection,
        "union": union,
        "iou": intersection / union,
        "truth_cells": int(truth.sum()),
        "predicted_cells": int(prediction.sum()),
    }


def location_prior(frames: AnnotatedFrames, n: int, seed: int) -> dict[str, np.ndarray]:
    """{phrase: bool [64, 64]} the cells each phrase covers in at least half of the frames it is in, over n frames
    of `frames` (drawn with `seed`): a mask that looks at no image, the chance level of a segmentation."""
    drawn = draw_frames(len(frames), min(n, len(frames)), seed)
    coverage = phrase_coverage(grid_targets(referring_phrases(frames.game, frames.objects(i))) for i in drawn)
    return {phrase: 2 * covered >= present for phrase, (covered, present) in coverage.items()}


def evaluate_prior(prior: dict[str, np.ndarray], frames: AnnotatedFrames, n: int, seed: int) -> dict:
    """cIoU of the location prior's masks on the frames evaluate_segmentation draws (same n and seed); a phrase the
    prior never saw is predicted empty."""
    per_frame = []
    for index in draw_frames(len(frames), n, seed):
        truths = grid_targets(referring_phrases(frames.game, frames.objects(index)))
        pairs = [scored_pair(p, truth, prior.get(p, np.zeros_like(truth))) for p, truth in truths.items()]
        per_frame.append({"index": index, "pairs": pairs})
    return ciou_summary(per_frame)


def decision(model: VLM, label_shift: bool) -> str:
    """How a cell was decided, for results.json."""
    if not label_shift:
        return "the likelier answer (label_shift=false)"
    if model.config.segmentation_inside_fraction is None:
        return "the likelier answer (the model records no segmentation prior to correct)"
    return (
        f"log-odds above logit({model.config.segmentation_inside_fraction}) - logit(the phrase's grid fraction): "
        "the training prior undone (vlm.scoring.label_shift_threshold)"
    )


def ciou_summary(per_frame: list[dict]) -> dict:
    """cIoU overall and per class, mIoU, the bootstrap interval of cIoU and the pair counts."""
    pairs = [pair for frame in per_frame for pair in frame["pairs"]]
    if not pairs:
        raise UserError("none of the frames drawn holds an object the 64x64 grid shows: draw more frames (n=)")
    classes = sorted({pair["class"] for pair in pairs})
    low, high = bootstrap_ciou(
        [[p["intersection"] for p in f["pairs"]] for f in per_frame],
        [[p["union"] for p in f["pairs"]] for f in per_frame],
    )
    of_class = {c: [p for p in pairs if p["class"] == c] for c in classes}
    return {
        "ciou": ciou([p["intersection"] for p in pairs], [p["union"] for p in pairs]),
        "ciou_ci95_low": low,
        "ciou_ci95_high": high,
        "ciou_per_class": {
            c: ciou([p["intersection"] for p in ps], [p["union"] for p in ps]) for c, ps in of_class.items()
        },
        "miou": float(np.mean([p["iou"] for p in pairs])),
        "pairs": len(pairs),
        "pairs_per_class": {c: len(ps) for c, ps in of_class.items()},
    }


def timing(seconds: float, frames: int, questions: int) -> dict:
    return {
        "seconds": round(seconds, 2),
        "seconds_per_frame": round(seconds / frames, 3),
        "questions": questions,
        "questions_per_s": round(questions / seconds, 1),
    }


def grounding_checkpoint(checkpoint: str | None, recipe: str) -> Path:
    """The checkpoint folder to evaluate (None: the shipped grounding checkpoint), checked whole; a missing one
    says how to train one with `recipe`."""
    path = SHIPPED_CHECKPOINT if checkpoint is None else Path(checkpoint).expanduser()
    if not path.exists():
        what = "the grounding checkpoint does not ship yet" if checkpoint is None else f"checkpoint={checkpoint}"
        raise UserError(f"{what}: {path} does not exist; {TRAIN_HINT.format(recipe=recipe)}")
    checked_checkpoint_config(path)
    return path


def load_grounding_model(path: Path) -> VLM:
    """The checkpoint's VLM in eval mode, LoRA merged (plain linear layers score faster)."""
    model = load_checked(path).eval()
    if model.config.lora_r:
        model.merge_lora()
    return model


def annotated_frames(images: str | None, seeds) -> AnnotatedFrames:
    if images is None:
        raise UserError("give images=DATASET: a collected dataset annotated with `python -m collect.annotate`")
    path = Path(images).expanduser()
    if not path.is_dir():
        raise UserError(f"images={images}: {path} is not a folder; give a collected dataset folder")
    return AnnotatedFrames(path, parse_seeds(seeds))


def prepared(cfg: DictConfig, recipe: str, result_key: str, png_name: re.Pattern, what: str):
    """(checkpoint, out, frames) of a grounding evaluation, each checked before the model loads: the checkpoint
    (None: the shipped one; a missing one names `recipe` to train it), out= (empty, or this command's own output
    whose results.json holds `result_key`), the annotated frames of `seeds`."""
    checkpoint = grounding_checkpoint(cfg.checkpoint, recipe)
    out = Path(cfg.out).expanduser()
    own = functools.partial(is_own_output, result_key=result_key, png_name=png_name)
    check_replaceable(out, "out", what, own, cfg.overwrite)
    torch.set_num_threads(cfg.threads)
    return checkpoint, out, annotated_frames(cfg.images, cfg.seeds)


def described(cfg: DictConfig, checkpoint: Path, frames: AnnotatedFrames) -> dict:
    """What results.json says of the run before its measurements."""
    return {
        "checkpoint": str(checkpoint),
        "source": str(cfg.images),
        "game": frames.game,
        "seeds": frames.seeds,
        "seed": cfg.seed,
    }


@dataclass
class SegmentConfig(ImageEvalConfig):
    label_shift: bool = option()


@command("segment", SegmentConfig)
def main(cfg: DictConfig) -> None:
    checkpoint, out, frames = prepared(cfg, "segmentation", "ciou", PNG_NAME, "segmentation result")
    if cfg.n > len(frames):
        raise UserError(f"n={cfg.n}: choose between 1 and the {len(frames)} annotated frames of the seeds asked for")
    model = load_grounding_model(checkpoint)
    result = evaluate_segmentation(model, frames, cfg.n, cfg.seed, cfg.batch, out, cfg.progress, cfg.label_shift)
    result = {**described(cfg, checkpoint, frames), "frames": cfg.n, **result}
    write_json_atomically(out / RESULTS_FILE, result)
    per_class = ", ".join(f"{c} {v:.3f}" for c, v in result["ciou_per_class"].items())
    print(
        f"cIoU = {result['ciou']:.3f} (95 % CI {result['ciou_ci95_low']:.3f}-{result['ciou_ci95_high']:.3f}; "
        f"{per_class}) over {cfg.n} frames, {result['pairs']} phrases; {result['seconds_per_frame']} s/frame; "
        f"PNGs (ground truth | prediction) and results.json in {out}"
    )


if __name__ == "__main__":
    main()
