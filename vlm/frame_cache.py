"""Play-time cache of per-frame image tokens.

Consecutive observations of a game share all but one frame (a stack of N frames moves on by
one), and a frame's image tokens depend on that frame alone, so each frame needs the vision
tower and projector once. Frames are keyed by their pixels: no frame indices to keep in step
with the env, and a reset (whose first stack repeats one frame) just works.
"""

from collections import OrderedDict

import numpy as np
import torch

from vlm.model import VLM


class FrameCache:
    def __init__(self, model: VLM, capacity: int = 16):
        """capacity: frames kept, least recently used dropped first; at least the frames of one
        call (n_stack x batch) to get any reuse."""
        self.model = model
        self.capacity = capacity
        self.tokens: OrderedDict[bytes, torch.Tensor] = OrderedDict()  # frame pixels -> [T, D]
        self.hits = 0
        self.misses = 0

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 frames [..., H, W, 3] -> image tokens [..., T, D], encoding only frames not seen recently."""
        frames = np.ascontiguousarray(frames)
        flat = frames.reshape(-1, *frames.shape[-3:])  # [N, H, W, 3]
        keys = [frame.tobytes() for frame in flat]
        new = list({key: i for i, key in enumerate(keys) if key not in self.tokens}.values())
        self.misses += len(new)
        self.hits += len(keys) - len(new)
        if new:
            with torch.inference_mode():
                encoded = self.model.encode_images(self.model.preprocess(flat[new]))  # [n, T, D]
            self.tokens.update(zip((keys[i] for i in new), encoded))
        for key in keys:
            self.tokens.move_to_end(key)
        tokens = torch.stack([self.tokens[key] for key in keys])  # [N, T, D]
        while len(self.tokens) > self.capacity:
            self.tokens.popitem(last=False)
        return tokens.reshape(*frames.shape[:-3], *tokens.shape[-2:])

    def clear(self) -> None:
        """Forget every frame (needed after the model's weights change)."""
        self.tokens.clear()
