"""visual_prompt: SPHINX-V's referring object classification. An annotated frame of a collected dataset
(`python -m collect.annotate`), one kind of mark per sample (`kinds`: point, region), 1 to num_prompt_slots (10)
of its objects, each marked: a point is a pixel of the object's mask drawn uniformly, a region its box with
SPHINX-V's noise (vlm.prompt_encoder.jitter_box); "Please identify the labels of each marked point in the image."
-> "<Mark 1>: alien\\n<Mark 2>: shield" (<Region i> for boxes). `form` says how the marks reach the model
(vlm.marks): in the visual prompt encoder's slots (encoder), written in the question (text) or drawn onto the
frame (overlay).

Objects are drawn with every class of the frame equally likely (a SpaceInvaders frame holds up to 36 aliens and
one cannon), without repeats; the number of marks is uniform in 1..min(slots, objects).

Validation: `val_samples` prompts of each kind on the held-out episodes (boxes without noise), the answer
generated greedily; label accuracy per mark for each kind, against always naming the most frequent label.

    <stage>/visual_prompt_validation.json
"""

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from collect.annotations import AnnotatedFrames, FrameObject
from collect.sources import ImageSources
from core.errors import UserError
from core.schema import positive
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
    visible,
)
from vlm import VLM, jitter_box, marks, normalize_box, normalize_point, prompts
from vlm.tokenizer import encode_answer

SEED_MAX = 2**62  # the box noise generator's seed is drawn below this
VALIDATION_FILE = "visual_prompt_validation.json"
VALIDATION_SEED = 0  # which held-out prompts are validated on: the same ones for every model
VALIDATION_BATCH = 16  # prompts per generate() call
ANSWER_MARGIN = 8  # tokens generated past the longest true answer: room for a wrong, longer label
METRIC_PREFIX = "visual_prompt_"


def check_kinds(key: str, kinds) -> None:
    if not kinds or any(kind not in marks.KIND_CODES for kind in kinds) or len(set(kinds)) < len(kinds):
        raise UserError(f"{key}={list(kinds)}: give a list of distinct kinds among {', '.join(marks.KIND_CODES)}")


@dataclass
class VisualPromptOptions:
    ratio: float = setting(1.0, check=positive)
    batch_size: int = setting(16, minimum=1)  # prompts (frames) per micro-batch
    kinds: list[str] = setting((prompts.POINT, prompts.REGION), check=check_kinds)  # each sample one of these
    val_samples: int = setting(32, minimum=1)  # held-out prompts of each kind validated on
    form: str = setting(marks.DEFAULT_FORM, choices=tuple(marks.FORMS))  # how the marks reach the model


def mark(
    obj: FrameObject, kind: str, width: int, height: int, rng: np.random.Generator, noise: torch.Generator | None
) -> list[float]:
    """The slot coordinates (x0, y0, x1, y1) in [0, 1] marking `obj`: a point (x, y, x, y) on a uniformly drawn pixel
    of its mask, or its box, with SPHINX-V's noise when `noise` is given."""
    if kind == prompts.POINT:
        ys, xs = np.nonzero(obj.mask)
        pick = int(rng.integers(len(xs)))
        x, y = normalize_point(int(xs[pick]), int(ys[pick]), width, height)
        return [x, y, x, y]
    box = torch.tensor(normalize_box(*obj.box, width, height), dtype=torch.float32)  # [4]
    return (box if noise is None else jitter_box(box, noise)).tolist()


def class_balanced(objects: list[FrameObject], count: int, rng: np.random.Generator) -> list[FrameObject]:
    """`count` distinct objects, each draw giving every class present the same chance."""
    per_label = Counter(obj.label for obj in objects)
    weights = np.array([1 / per_label[obj.label] for obj in objects])
    picked = rng.choice(len(objects), size=count, replace=False, p=weights / weights.sum())
    return [objects[int(i)] for i in picked]


@register_task("visual_prompt")
@dataclass
class VisualPromptTask(Task):
    """A batch of `batch_size` frames, each with its marks in the encoder's slots and one kind of mark."""

    pool: FramePool
    kinds: list[str]
    val_samples: int
    form: str = marks.DEFAULT_FORM
    validation: list[AnnotatedFrames] | None = None
    val_seeds: list[int] | None = None

    @classmethod
    def build(
        cls, options: dict, sources: ImageSources, game: str | None, val_seeds: list[int] | None
    ) -> "VisualPromptTask":
        settings = checked_options("visual_prompt", options, VisualPromptOptions)
        pool = FramePool(annotated_frames("visual_prompt", sources, game))
        validation = held_out_frames("visual_prompt", sources, game, val_seeds) if val_seeds else None
        held = list(val_seeds) if val_seeds else None
        return cls(pool, list(settings.kinds), settings.val_samples, settings.form, validation, held)

    def configure(self, model: VLM) -> None:
        """The model keeps the form its marks reached it in, the form eval.refer asks it in by default."""
        model.config.mark_form = self.form

    def draw(self, rng: np.random.Generator, slots: int, kind: str | None = None, noise: bool = True) -> dict:
        """A frame (`annotated`'s `index`-th) and 1..slots of its visible objects marked with `kind` (drawn from
        `kinds` when None) in the task's form: the sample (collate's keys; "frame" is what the model sees), the
        marks, the objects and their labels."""
        kind = kind or self.kinds[int(rng.integers(len(self.kinds)))]
        for _ in range(MAX_DRAWS):
            frames, index = self.pool.draw(rng)
            objects = visible(frames.objects(index))
            if objects:
                break
        else:
            raise no_frame_found("visual_prompt", "a visible object")
        chosen = class_balanced(objects, int(rng.integers(1, min(slots, len(objects)) + 1)), rng)
        frame = np.array(frames.frame(index))  # a writable copy: torch warns on read-only (mapped) arrays
        height, width = frame.shape[:2]
        generator = torch.Generator().manual_seed(int(rng.integers(SEED_MAX))) if noise else None
        coords = [mark(obj, kind, width, height, rng, generator) for obj in chosen]
        labels = [obj.label for obj in chosen]
        presented = marks.present(self.form, frame, coords, kind)
        return dict(
            frame=presented.frame,
            annotated=frames,
            index=index,
            kind=kind,
            marks=np.array(coords, dtype=np.float32),  # [k, 4]
            objects=chosen,
            labels=labels,
            answer=prompts.visual_prompt_answer(labels, kind),
            **presented.sample_keys(),
        )

    def sample(self, model: VLM, drawn: dict, answer: bool = True) -> dict:
        keys = ("prompt", "prompt_coords", "prompt_kinds") + (("answer",) if answer else ())
        return dict(images=model.preprocess(drawn["frame"][None]), **{key: drawn[key] for key in keys if key in drawn})

    def batch(self, model: VLM, rng: np.random.Generator, batch_size: int) -> dict:
        slots = model.config.num_prompt_slots
        return model.collate([self.sample(model, self.draw(rng, slots)) for _ in range(batch_size)])

    def loss(self, model: VLM, batch: dict) -> torch.Tensor:
        return model(**batch).loss

    def validate(self, load_model: Callable[[], VLM], stage_dir: Path) -> Validation | None:
        if self.validation is None:
            return None
        settings = {
            "seeds": self.val_seeds,
            "samples_per_kind": self.val_samples,
            "kinds": self.kinds,
            "form": self.form,
        }
        report = kept_report(stage_dir / VALIDATION_FILE, settings, lambda: self.validate_labels(load_model()))
        metrics = {f"{METRIC_PREFIX}accuracy_{kind}": report["accuracy"][kind] for kind in self.kinds}
        metrics[METRIC_PREFIX + "majority_accuracy"] = report["majority_accuracy"]
        return Validation(describe(report), metrics)

    @torch.inference_mode()
    def validate_labels(self, model: VLM) -> dict:
        """Label accuracy of the model's generated answers on val_samples held-out prompts of each kind."""
        held = VisualPromptTask(FramePool(self.validation), self.kinds, self.val_samples, self.form)
        rng = np.random.default_rng(VALIDATION_SEED)
        slots = model.config.num_prompt_slots
        correct, asked, true_labels, began = Counter(), Counter(), [], time.perf_counter()
        for kind in self.kinds:
            drawn = [held.draw(rng, slots, kind, noise=False) for _ in range(self.val_samples)]
            for start in range(0, len(drawn), VALIDATION_BATCH):
                chunk = drawn[start : start + VALIDATION_BATCH]
                batch = model.collate([held.sample(model, d, answer=False) for d in chunk], padding_side="left")
                longest = max(len(encode_answer(model.tokenizer, d["answer"])) for d in chunk)
                answers = model.generate(
                    [d["prompt"] for d in chunk],
                    images=batch["images"],
                    max_new_tokens=longest + ANSWER_MARGIN,
                    prompt_coords=batch.get("prompt_coords"),
                    prompt_kinds=batch.get("prompt_kinds"),
                    prompt_valid=batch.get("prompt_valid"),
                )
                for d, text in zip(chunk, answers):
                    named = prompts.parse_visual_prompt_answer(text, kind)
                    correct[kind] += sum(named.get(slot) == label for slot, label in enumerate(d["labels"]))
                    asked[kind] += len(d["labels"])
                    true_labels += d["labels"]
        majority, majority_count = Counter(true_labels).most_common(1)[0]
        return {
            "marks": dict(asked),
            "accuracy": {kind: correct[kind] / asked[kind] for kind in self.kinds},
            "majority_label": majority,
            "majority_accuracy": majority_count / len(true_labels),
            "seconds": round(time.perf_counter() - began, 1),
        }


def describe(report: dict) -> str:
    accuracies = ", ".join(
        f"{kind} {report['accuracy'][kind]:.3f} ({report['marks'][kind]} marks)" for kind in report["kinds"]
    )
    return (
        f"visual_prompt validation ({report['form']} marks), seeds {report['seeds']}: label accuracy {accuracies}; "
        f"always {report['majority_label']!r}: {report['majority_accuracy']:.3f}"
    )
