"""python -m eval.refer checkpoint=DIR images=DATASET seeds=[27,28,29] n=200 [out=results/refer]

Referring object classification (SPHINX-V's protocol, after Ferret's on LVIS) on held-out annotated frames. n
objects are drawn (with `seed`): a frame, a label present in it, an object of that label (each uniformly, so
every class is asked, not mostly the 36 aliens). Each object is marked twice as mark 1 (`form`, vlm.marks: the
visual prompt encoder's first slot, the coordinates in the question or the mark drawn onto the frame), once by a
point (a random pixel of its mask) and once by its box, and asked
visual_prompt_question(kind); the model chooses between "<Mark 1>: {its label}" and "<Mark 1>: {a distractor}"
(another label of the game, drawn uniformly), whichever answer (tokens and eos) is the more likely. The two
candidates are put in a random (seeded) order and a tie goes to the first, so that a model that cannot tell them
apart scores 50 % in expectation. Every label's answer is scored, so the accuracy among all of the game's labels
is reported beside the two-way one.

results.json: "accuracy_point" and "accuracy_box" with their counts, a 95 % bootstrap interval and per-class
accuracies, every prompt's scores; PNGs of the first `pngs` objects with both marks drawn.
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

from collect.annotations import LABELS, AnnotatedFrames
from core.cli import command
from core.errors import UserError
from core.files import write_atomically, write_json_atomically
from core.schema import option
from eval.options import RESULTS_FILE, ImageEvalConfig
from eval.segment import described, load_grounding_model, prepared
from eval.stats import bootstrap_ci
from vlm import VLM, marks, normalize_box, normalize_point, prompts
from vlm.scoring import choose_after_prefix

KINDS = {"point": prompts.POINT, "box": prompts.REGION}  # result name -> the mark's kind
PNG_NAME = re.compile(r"object_\d{5}\.png")  # one per drawn object, numbered in drawing order
PNG_UPSCALE = 3  # each frame pixel becomes 3x3 pixels in the PNGs
CAPTION_HEIGHT = 28  # pixels below the frames, two lines of text
MARK_COLOUR = (255, 0, 255)
POINT_RADIUS = 2  # frame pixels
GAP = 4  # pixels between the two frames of a PNG
DRAWS_PER_OBJECT = 100  # frames tried per object asked for before concluding that the frames hold no objects


def draw_objects(frames: AnnotatedFrames, n: int, rng: np.random.Generator) -> list[dict]:
    """n prompted objects: frame, label, object, the point and box marking it, the distractor and the order."""
    labels = LABELS[frames.game]
    drawn = []
    for _ in range(DRAWS_PER_OBJECT * n):
        if len(drawn) == n:
            break
        index = int(rng.integers(len(frames)))
        objects = [item for item in frames.objects(index) if item.mask.any()]
        if not objects:
            continue
        present = sorted({item.label for item in objects}, key=labels.index)
        label = present[int(rng.integers(len(present)))]
        of_label = [item for item in objects if item.label == label]
        item = of_label[int(rng.integers(len(of_label)))]
        ys, xs = np.nonzero(item.mask)
        pixel = int(rng.integers(len(ys)))
        others = [other for other in labels if other != label]
        distractor = others[int(rng.integers(len(others)))]
        candidates = [label, distractor] if rng.integers(2) == 0 else [distractor, label]
        drawn.append(
            {
                "index": index,
                "seed": frames.seed_of(index),
                "label": label,
                "row": item.row,
                "point": [int(xs[pixel]), int(ys[pixel])],
                "box": list(item.box),
                "distractor": distractor,
                "candidates": candidates,
            }
        )
    if len(drawn) < n:
        raise UserError(f"the annotated frames hold too few objects to draw {n} (found {len(drawn)}): lower n=")
    return drawn


def slot_coords(item: dict, kind: str, width: int, height: int) -> list[float]:
    """The normalised (x0, y0, x1, y1) of the object's mark; a point fills both corners (the encoder reads one)."""
    if kind == "point":
        x, y = normalize_point(*item["point"], width, height)
        return [x, y, x, y]
    return list(normalize_box(*item["box"], width, height))


class Referrer:
    """log-likelihood of every label's answer for one object marked as mark 1 in `form` (vlm.marks)."""

    def __init__(self, model: VLM, labels: tuple[str, ...], batch: int, form: str):
        self.model, self.labels, self.batch, self.form = model, labels, batch, form
        self.encoded: tuple[np.ndarray, torch.Tensor] | None = None  # the last frame seen and its image tokens
        self.answers = {
            kind: [prompts.visual_prompt_answer([label], mark_kind) for label in labels]
            for kind, mark_kind in KINDS.items()
        }

    @torch.inference_mode()
    def image_tokens(self, frame: np.ndarray) -> torch.Tensor:
        """[1, T, D]; encoded once while the same frame is asked about (the overlay draws a new one each time)."""
        if self.encoded is None or self.encoded[0] is not frame:
            self.encoded = frame, self.model.encode_images(self.model.preprocess(frame[None]))
        return self.encoded[1]

    @torch.inference_mode()
    def __call__(self, frame: np.ndarray, kind: str, coords: list[float]) -> dict[str, float]:
        """-> {label: log P(answer naming it)} for the object of `frame` marked by `coords` as a `kind`."""
        model = self.model
        presented = marks.present(self.form, frame, [coords], KINDS[kind])
        tokens = self.image_tokens(presented.frame)
        sample = presented.sample_keys()
        batch = model.collate([sample])
        embeds = model.embed(
            batch["input_ids"].to(model.device), image_tokens=tokens, prompt_coords=batch.get("prompt_coords"),
            prompt_kinds=batch.get("prompt_kinds"), prompt_valid=batch.get("prompt_valid"),
        )  # [1, L, D]  # fmt: skip
        scores = choose_after_prefix(model, embeds, [[]], self.answers[kind], self.batch)[0]  # [C]
        return dict(zip(self.labels, scores.tolist()))


def judged(scores: dict[str, float], item: dict) -> dict:
    """The two-way choice (the first candidate wins a tie) and the choice among all labels."""
    first, second = item["candidates"]
    chosen = first if scores[first] >= scores[second] else second
    best = max(scores, key=scores.get)
    return {
        "scores": scores,
        "chosen": chosen,
        "correct": chosen == item["label"],
        "best_of_all": best,
        "correct_of_all": best == item["label"],
    }


def marked(frame: np.ndarray, item: dict, kind: str) -> Image.Image:
    """The frame, PNG_UPSCALE x, with the object's point or box drawn."""
    height, width, _ = frame.shape
    image = Image.fromarray(frame).resize((width * PNG_UPSCALE, height * PNG_UPSCALE), Image.NEAREST)
    draw = ImageDraw.Draw(image)
    if kind == "point":
        cx, cy = ((v + 0.5) * PNG_UPSCALE for v in item["point"])
        r = POINT_RADIUS * PNG_UPSCALE
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=MARK_COLOUR, width=1)
    else:
        x0, y0, x1, y1 = item["box"]
        draw.rectangle(
            (x0 * PNG_UPSCALE, y0 * PNG_UPSCALE, x1 * PNG_UPSCALE - 1, y1 * PNG_UPSCALE - 1), outline=MARK_COLOUR
        )
    return image


def object_panel(frame: np.ndarray, item: dict) -> Image.Image:
    """point mark | box mark, and below them what was asked and chosen."""
    point, box = marked(frame, item, "point"), marked(frame, item, "box")
    panel = Image.new("RGB", (2 * point.width + GAP, point.height + CAPTION_HEIGHT), (0, 0, 0))
    panel.paste(point, (0, 0))
    panel.paste(box, (point.width + GAP, 0))
    verdict = {True: "right", False: "wrong"}
    lines = [
        f"{item['candidates'][0]} or {item['candidates'][1]}? (it is: {item['label']})",
        "point: {} ({}), box: {} ({})".format(
            item["point_result"]["chosen"],
            verdict[item["point_result"]["correct"]],
            item["box_result"]["chosen"],
            verdict[item["box_result"]["correct"]],
        ),
    ]
    ImageDraw.Draw(panel).multiline_text((2, point.height + 2), "\n".join(lines), fill=(255, 255, 255))
    return panel


def accuracies(items: list[dict], kind: str, labels: tuple[str, ...]) -> dict:
    correct = [float(item[f"{kind}_result"]["correct"]) for item in items]
    low, high = bootstrap_ci([correct])
    per_class = {
        label: float(np.mean([c for c, item in zip(correct, items) if item["label"] == label]))
        for label in labels
        if any(item["label"] == label for item in items)
    }
    return {
        f"accuracy_{kind}": float(np.mean(correct)),
        f"accuracy_{kind}_ci95_low": low,
        f"accuracy_{kind}_ci95_high": high,
        f"correct_{kind}": int(sum(correct)),
        f"count_{kind}": len(correct),
        f"accuracy_{kind}_per_class": per_class,
        f"accuracy_{kind}_all_labels": float(np.mean([item[f"{kind}_result"]["correct_of_all"] for item in items])),
    }


def evaluate_referring(
    model: VLM,
    frames: AnnotatedFrames,
    n: int,
    seed: int,
    batch: int,
    pngs: int,
    out: Path,
    progress: bool = True,
    form: str = marks.DEFAULT_FORM,
) -> dict:
    """Referring classification accuracy on n objects drawn (seeded) from `frames`, each as a point and as a box,
    marked in `form`; PNGs of the first `pngs` objects into out."""
    items = draw_objects(frames, n, np.random.default_rng(seed))
    labels = LABELS[frames.game]
    referrer = Referrer(model, labels, batch, form)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for number, item in enumerate(tqdm(items, desc="refer", unit="object", disable=not progress)):
        frame = frames.frame(item["index"])
        height, width, _ = frame.shape
        for kind in KINDS:
            scores = referrer(frame, kind, slot_coords(item, kind, width, height))
            item[f"{kind}_result"] = judged(scores, item)
        if number < pngs:
            item["png"] = f"object_{number:05d}.png"
            write_atomically(out / item["png"], functools.partial(object_panel(frame, item).save, format="PNG"))
    seconds = time.perf_counter() - start
    prompts_asked = len(KINDS) * n
    return {
        "form": form,
        "objects": n,
        "prompts": prompts_asked,
        **accuracies(items, "point", labels),
        **accuracies(items, "box", labels),
        "seconds": round(seconds, 2),
        "seconds_per_prompt": round(seconds / prompts_asked, 4),
        "prompts_per_s": round(prompts_asked / seconds, 1),
        "items": items,
    }


@dataclass
class ReferConfig(ImageEvalConfig):
    pngs: int = option(minimum=0)
    form: str | None = option(choices=tuple(marks.FORMS))


@command("refer", ReferConfig)
def main(cfg: DictConfig) -> None:
    what = "referring classification result"
    checkpoint, out, frames = prepared(cfg, "visual_prompt", "accuracy_point", PNG_NAME, what)
    model = load_grounding_model(checkpoint)
    form = cfg.form or model.config.mark_form
    result = evaluate_referring(model, frames, cfg.n, cfg.seed, cfg.batch, cfg.pngs, out, cfg.progress, form)
    result = {**described(cfg, checkpoint, frames), **result}
    write_json_atomically(out / RESULTS_FILE, result)
    print(
        f"referring classification over {cfg.n} objects ({form} marks): points {result['accuracy_point']:.1%} "
        f"(95 % CI {result['accuracy_point_ci95_low']:.1%}-{result['accuracy_point_ci95_high']:.1%}), "
        f"boxes {result['accuracy_box']:.1%} "
        f"(95 % CI {result['accuracy_box_ci95_low']:.1%}-{result['accuracy_box_ci95_high']:.1%}); "
        f"{result['prompts_per_s']} prompts/s; PNGs (marks drawn) and results.json in {out}"
    )


if __name__ == "__main__":
    main()
