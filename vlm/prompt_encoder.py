"""SPHINX-V visual prompt encoder: points and boxes in a fixed number of slots -> LLM tokens.

Coordinates are (x, y), normalised to [0, 1] once, by the caller (see normalize_point and
normalize_box): the encoder does not shift them again. Each slot holds 4 numbers
(x0, y0, x1, y1); a point uses (x0, y0) only. Every corner gets a random Fourier encoding
(as in SAM) plus a learnable type embedding (point / box corner 1 / box corner 2); a slot is
the concatenation of its two corners, and a point is duplicated into both halves with the point
type. Pad slots drop their coordinates entirely and carry only the pad embedding, valid slots
add the valid embedding. Linear + LayerNorm map the slot into the LLM width.
"""

import math

import torch
from torch import nn

KIND_POINT = 0
KIND_BOX = 1
CORNER_POINT, CORNER_BOX_1, CORNER_BOX_2 = 0, 1, 2
NUM_CORNER_TYPES = 3
PAD, VALID = 0, 1

BOX_SHIFT_FRACTION = 1 / 8  # SPHINX-V box noise: centre shifted by up to w/8, h/8
BOX_SCALE_RANGE = (0.85, 1.15)  # and w, h scaled by U(0.85, 1.15)


class VisualPromptEncoder(nn.Module):
    def __init__(self, llm_dim: int, num_slots: int, fourier_features: int, fourier_scale: float, seed: int):
        super().__init__()
        self.num_slots = num_slots
        generator = torch.Generator().manual_seed(seed)
        # A fixed random projection, saved with the weights so a reload reproduces it.
        self.register_buffer("frequencies", fourier_scale * torch.randn(2, fourier_features, generator=generator))
        corner_dim = 2 * fourier_features
        self.corner_type = nn.Embedding(NUM_CORNER_TYPES, corner_dim)
        self.validity = nn.Embedding(2, 2 * corner_dim)
        self.proj = nn.Linear(2 * corner_dim, llm_dim)
        self.norm = nn.LayerNorm(llm_dim)

    def fourier(self, xy: torch.Tensor) -> torch.Tensor:
        """[..., 2] in [0, 1] -> [..., 2F]."""
        angles = 2 * math.pi * (2 * xy - 1) @ self.frequencies  # [..., F]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def forward(self, coords: torch.Tensor, kinds: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """coords [B, S, 4] (x0, y0, x1, y1), kinds [B, S] (KIND_POINT/KIND_BOX), valid [B, S] bool -> [B, S, D]."""
        coords = coords.to(self.frequencies.dtype)
        is_box = kinds == KIND_BOX  # [B, S]
        first = coords[..., :2]
        second = torch.where(is_box[..., None], coords[..., 2:], first)  # points duplicate their corner
        type_1 = torch.where(is_box, CORNER_BOX_1, CORNER_POINT)
        type_2 = torch.where(is_box, CORNER_BOX_2, CORNER_POINT)
        corners = torch.cat(
            [self.fourier(first) + self.corner_type(type_1), self.fourier(second) + self.corner_type(type_2)], dim=-1
        )  # [B, S, 4F]
        valid = valid.bool()
        slots = torch.where(valid[..., None], corners, torch.zeros_like(corners)) + self.validity(valid.long())
        return self.norm(self.proj(slots))  # [B, S, D]


def normalize_point(x: float, y: float, width: int, height: int) -> tuple[float, float]:
    """Pixel indices -> [0, 1], at the pixel centre (the only half-pixel shift applied anywhere)."""
    return (x + 0.5) / width, (y + 0.5) / height


def normalize_box(
    x0: float, y0: float, x1: float, y1: float, width: int, height: int
) -> tuple[float, float, float, float]:
    """Box in pixel edge coordinates (x1, y1 exclusive; 0, 0, W, H is the whole image) -> [0, 1]."""
    return x0 / width, y0 / height, x1 / width, y1 / height


def jitter_box(box: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """SPHINX-V box noise on normalised (x0, y0, x1, y1) boxes [..., 4]; result clipped to [0, 1]."""
    x0, y0, x1, y1 = box.unbind(-1)
    w, h = x1 - x0, y1 - y0
    shift = (2 * torch.rand(*box.shape[:-1], 2, generator=generator) - 1) * BOX_SHIFT_FRACTION
    low, high = BOX_SCALE_RANGE
    scale = low + (high - low) * torch.rand(*box.shape[:-1], 2, generator=generator)
    cx = (x0 + x1) / 2 + shift[..., 0] * w
    cy = (y0 + y1) / 2 + shift[..., 1] * h
    w, h = w * scale[..., 0], h * scale[..., 1]
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1).clamp(0.0, 1.0)
