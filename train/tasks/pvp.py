"""pvp: pixel value prediction (PAE-LaMM). A random image of the sources, a uniform location on its 64x64
target, "[reconstruct] loc: [y,x] rgb: " -> "[r,g,b]"."""

from dataclasses import dataclass

import numpy as np
import torch

from collect.sources import ImageSources
from core.errors import UserError
from train.packing import pack, packed_loss
from train.tasks.base import Task, register_task
from vlm import VLM, prompts


def pvp_question(frame: np.ndarray, rng: np.random.Generator) -> dict:
    """One PVP question about frame uint8 [H, W, 3]: a uniform location on its 64x64 target."""
    target = prompts.reconstruction_target(frame)  # [64, 64, 3] uint8
    y, x = (int(v) for v in rng.integers(0, prompts.RECONSTRUCT_SIZE, size=2))
    return dict(
        prompt=prompts.reconstruct_prompt(y, x),
        answer=prompts.reconstruct_answer(target[y, x]),
        y=y,
        x=x,
        target=target,
    )


@register_task("pvp")
@dataclass
class PVPTask(Task):
    """A batch of `batch_size` questions: batch_size / queries_per_image random images, each asked at
    queries_per_image uniform locations, packed so each image is encoded once (train/packing.py)."""

    sources: ImageSources
    queries_per_image: int

    @classmethod
    def build(cls, options: dict, sources: ImageSources, game: str | None, val_seeds: list[int] | None) -> "PVPTask":
        batch_size, queries_per_image = int(options["batch_size"]), int(options["queries_per_image"])
        if queries_per_image < 1:
            raise UserError(f"pvp queries_per_image={queries_per_image}: give a whole number >= 1")
        if batch_size % queries_per_image:
            raise UserError(f"pvp batch_size {batch_size} is not a multiple of queries_per_image {queries_per_image}")
        return cls(sources, queries_per_image)

    def batch(self, model: VLM, rng: np.random.Generator, batch_size: int) -> dict:
        groups = []
        for _ in range(batch_size // self.queries_per_image):
            frame = self.sources[int(rng.integers(len(self.sources)))]
            questions = [pvp_question(frame, rng) for _ in range(self.queries_per_image)]
            groups.append((model.preprocess(frame[None]), [(q["prompt"], q["answer"]) for q in questions]))
        return pack(model, groups)

    def loss(self, model: VLM, batch: dict) -> torch.Tensor:
        return packed_loss(model, batch)
