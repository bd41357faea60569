"""python -m eval.reconstruct checkpoint=DIR images=SOURCE n=8 [seeds=90000-90002] [out=results/reconstruct]

Reconstruction error (PAE-LaMM, eq. 1-2): the model is asked the RGB value at every one of the
64x64 locations of each image; RE = sum |pred - gt| / (H * W * 255), reported x100, with |pred - gt|
the mean over the three channels (the paper does not say how channels combine; summing them would
triple the number). An answer that does not parse as [r,g,b] counts as the maximum error.

Inference shares one image: the tokens common to all 4096 questions (bos, image block, the start of
the question) run once into a KV cache, which the questions (in chunks of `batch`) continue from;
answers are decoded greedily.
"""

import copy
import functools
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from collect.sources import ImageSources
from core.cli import command
from core.errors import UserError
from core.files import check_replaceable, write_atomically, write_json_atomically
from core.schema import option
from core.seeds import parse_seeds
from eval.options import RESULTS_FILE, ImageEvalConfig, is_own_output
from vlm import VLM, common_prefix_length, encode, prompts
from vlm.checkpoint import checked_checkpoint_config, load_checked
from vlm.decoding import greedy_continue

SIZE = prompts.RECONSTRUCT_SIZE
MAX_ANSWER_TOKENS = 16  # "[255,255,255]" and eos are 14 tokens with digits split one by one
RE_SCALE = 100  # the paper reports RE x100
PNG_UPSCALE = 4  # 64x64 is small to look at: each pixel becomes 4x4 in the PNGs
PNG_NAME = re.compile(r"\d{7}\.png")  # one per image, named by its index among the frames
is_reconstruction = functools.partial(is_own_output, result_key="mean_re", png_name=PNG_NAME)


def worst_answers(prediction: np.ndarray, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """prediction with every unanswered location [64, 64] (valid False) set to the value farthest from the target."""
    farthest = np.where(target < (prompts.RGB_MAX + 1) // 2, prompts.RGB_MAX, 0).astype(np.uint8)
    return np.where(valid[..., None], prediction, farthest)


def reconstruction_error(prediction: np.ndarray, target: np.ndarray) -> float:
    """RE x100 of uint8 [64, 64, 3] arrays."""
    diff = np.abs(prediction.astype(np.float64) - target.astype(np.float64))
    return float(RE_SCALE * diff.mean() / prompts.RGB_MAX)


class Reconstructor:
    """Asks a VLM the value at `locations` (default: all 64x64) of an image, by batched greedy decoding."""

    def __init__(self, model: VLM, batch: int, locations: list[tuple[int, int]] | None = None):
        self.model, self.batch = model, batch
        self.locations = locations or [(y, x) for y in range(SIZE) for x in range(SIZE)]
        ids = [
            encode(
                model.tokenizer,
                prompts.reconstruct_prompt(y, x),
                None,
                model.num_image_tokens,
                model.config.num_prompt_slots,
            )[0]
            for y, x in self.locations
        ]
        self.prefix_length = common_prefix_length(ids)
        self.prefix = torch.tensor(ids[0][: self.prefix_length], device=model.device)[None]  # [1, P]
        # Questions whose remaining tokens have the same length run together, without padding.
        by_length: dict[int, list[int]] = {}
        for index, row in enumerate(ids):
            by_length.setdefault(len(row), []).append(index)
        self.groups = [
            (indices, torch.tensor([ids[i][self.prefix_length :] for i in indices], device=model.device))
            for indices in by_length.values()
        ]

    @torch.inference_mode()
    def answers(self, frame: np.ndarray) -> list[str]:
        """uint8 [H, W, 3] -> the answer text at each location."""
        model = self.model
        image_tokens = model.encode_images(model.preprocess(frame[None]))  # [1, T, D]
        embeds = model.embed(self.prefix, image_tokens=image_tokens)  # [1, P, D]
        prefix_cache = model.llm(inputs_embeds=embeds, use_cache=True, logits_to_keep=1).past_key_values
        texts = [""] * len(self.locations)
        for indices, suffixes in self.groups:
            for start in range(0, len(indices), self.batch):
                chunk = indices[start : start + self.batch]
                for index, text in zip(chunk, self._decode(prefix_cache, suffixes[start : start + self.batch])):
                    texts[index] = text
        return texts

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [H, W, 3] -> (predicted image uint8 [64, 64, 3], bool [64, 64] where the answer parsed)."""
        prediction = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
        valid = np.zeros((SIZE, SIZE), dtype=bool)
        for (y, x), text in zip(self.locations, self.answers(frame)):
            rgb = prompts.parse_rgb(text)
            if rgb is not None:
                prediction[y, x], valid[y, x] = rgb, True
        return prediction, valid

    def _decode(self, prefix_cache, rows: torch.Tensor) -> list[str]:
        model, tokenizer = self.model, self.model.tokenizer
        n, length = rows.shape
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(n)
        positions = torch.arange(self.prefix_length, self.prefix_length + length, device=model.device).expand(
            n, -1
        )  # [n, Ls]
        logits = model.llm(
            input_ids=rows, position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1
        ).logits[:, -1]
        next_positions = torch.full((n,), self.prefix_length + length, device=model.device)
        return greedy_continue(model.llm, tokenizer, logits, cache, next_positions, MAX_ANSWER_TOKENS)


def side_by_side(target: np.ndarray, prediction: np.ndarray) -> Image.Image:
    """ground truth | reconstruction, each pixel PNG_UPSCALE x PNG_UPSCALE."""
    gap = np.full((SIZE, 1, 3), prompts.RGB_MAX, dtype=np.uint8)
    row = np.concatenate([target, gap, prediction], axis=1)
    return Image.fromarray(row).resize((row.shape[1] * PNG_UPSCALE, SIZE * PNG_UPSCALE), Image.NEAREST)


def evaluate_reconstruction(
    model: VLM, sources: ImageSources, n: int, seed: int, batch: int, out: Path, progress: bool = True
) -> dict:
    """RE of n images drawn (seeded) from sources; writes one PNG per image and results.json into out."""
    indices = sorted(np.random.default_rng(seed).choice(len(sources), size=n, replace=False).tolist())
    reconstructor = Reconstructor(model, batch)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    per_image = []
    for index in tqdm(indices, desc="reconstruct", unit="image", disable=not progress):
        frame = sources[index]
        target = prompts.reconstruction_target(frame)
        prediction, valid = reconstructor(frame)
        prediction = worst_answers(prediction, target, valid)
        png = out / f"{index:07d}.png"
        write_atomically(png, functools.partial(side_by_side(target, prediction).save, format="PNG"))
        per_image.append(
            {
                "index": index,
                "re": reconstruction_error(prediction, target),
                "unparsed": int((~valid).sum()),
                "png": png.name,
            }
        )
    seconds = time.perf_counter() - start
    return {
        "mean_re": float(np.mean([r["re"] for r in per_image])),
        "images": per_image,
        "questions": n * SIZE * SIZE,
        "seconds": round(seconds, 1),
        "questions_per_s": round(n * SIZE * SIZE / seconds, 1),
    }


def vlm_checkpoint(key: str, folder: str) -> None:
    checked_checkpoint_config(Path(folder).expanduser(), key)


@dataclass
class ReconstructConfig(ImageEvalConfig):
    checkpoint: str | None = option(check=vlm_checkpoint)


@command("reconstruct", ReconstructConfig)
def main(cfg: DictConfig) -> None:
    if cfg.checkpoint is None or cfg.images is None:
        raise UserError(
            "give checkpoint=DIR (a VLM checkpoint) and images=SOURCE (an image folder or a collected dataset)"
        )
    out = Path(cfg.out).expanduser()
    check_replaceable(out, "out", "reconstruction result", is_reconstruction, cfg.overwrite)
    torch.set_num_threads(cfg.threads)
    seeds = parse_seeds(cfg.seeds)
    sources = ImageSources([str(cfg.images)], seeds)
    if cfg.n > len(sources):
        raise UserError(f"n={cfg.n}: choose between 1 and the {len(sources)} frames the images hold")
    model = load_checked(Path(cfg.checkpoint).expanduser()).eval()
    result = evaluate_reconstruction(model, sources, cfg.n, cfg.seed, cfg.batch, out, cfg.progress)
    result = {"checkpoint": str(cfg.checkpoint), "source": str(cfg.images), "seeds": seeds, **result}
    write_json_atomically(out / RESULTS_FILE, result)
    print(
        f"RE x100 = {result['mean_re']:.2f} over {cfg.n} images ({result['questions']} questions, "
        f"{result['questions_per_s']} questions/s); PNGs (ground truth | reconstruction) and results.json in {out}"
    )


if __name__ == "__main__":
    main()
