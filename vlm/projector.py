"""Projector: join 4 neighbouring visual tokens, then one Linear into the LLM width (MiniGPT-v2)."""

import torch
from torch import nn

TOKENS_PER_GROUP = 4
MERGES = ("2x2", "1x4")


class Projector(nn.Module):
    def __init__(self, vision_dim: int, llm_dim: int, merge: str):
        super().__init__()
        if merge not in MERGES:
            raise ValueError(f"unknown merge {merge!r}; choose one of {MERGES}")
        self.merge = merge
        self.proj = nn.Linear(TOKENS_PER_GROUP * vision_dim, llm_dim)

    def num_tokens(self, grid_h: int, grid_w: int) -> int:
        """LLM tokens for a grid of patches; checks that the grid can be merged."""
        if self.merge == "2x2" and (grid_h % 2 or grid_w % 2):
            raise ValueError(f"2x2 merge needs an even patch grid, got {grid_h}x{grid_w}; change image_size")
        if self.merge == "1x4" and grid_w % TOKENS_PER_GROUP:
            raise ValueError(f"1x4 merge needs a grid width divisible by 4, got {grid_w}; change image_size")
        return grid_h * grid_w // TOKENS_PER_GROUP

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """[N, gh, gw, Dv] -> [N, gh*gw/4, D]; tokens stay in raster order of their groups."""
        n, gh, gw, dv = patches.shape
        num_tokens = self.num_tokens(gh, gw)
        if self.merge == "2x2":
            groups = patches.reshape(n, gh // 2, 2, gw // 2, 2, dv).permute(
                0, 1, 3, 2, 4, 5
            )  # [N, gh/2, gw/2, 2, 2, Dv]
        else:
            groups = patches  # consecutive row tokens are already adjacent in memory
        x = groups.reshape(n, num_tokens, TOKENS_PER_GROUP * dv)  # [N, T, 4*Dv]
        return self.proj(x.to(self.proj.weight.dtype))
