"""Action codecs: env actions <-> discrete action codes <-> action words the VLM answers with."""

from dataclasses import dataclass
from itertools import product

import numpy as np


@dataclass(frozen=True)
class DiscreteCodec:
    """An env whose actions are already discrete: code == env action."""

    names: tuple[str, ...]

    def encode(self, env_action) -> int:
        return int(np.asarray(env_action).reshape(()))

    def decode(self, code: int) -> int:
        return int(code)


@dataclass(frozen=True)
class GridCodec:
    """Continuous (steer, gas, brake) snapped to a grid.

    Each action is one steering level combined with one pedal (gas level, coasting or braking).
    `encode` picks the grid action nearest to the continuous one (after clipping to the action
    space), weighting the dimensions equally.
    """

    steer: tuple[tuple[str, float], ...]
    pedal: tuple[tuple[str, float, float], ...]  # (word, gas, brake)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"{s}_{p}" for (s, _), (p, _, _) in product(self.steer, self.pedal))

    @property
    def table(self) -> np.ndarray:
        """[n_actions, 3] env action of each code."""
        return np.array(
            [(steer, gas, brake) for (_, steer), (_, gas, brake) in product(self.steer, self.pedal)],
            dtype=np.float32,
        )

    def encode(self, env_action) -> int:
        action = np.clip(np.asarray(env_action, dtype=np.float32).reshape(3), [-1, 0, 0], [1, 1, 1])
        return int(np.argmin(np.abs(self.table - action).sum(axis=1)))

    def decode(self, code: int) -> np.ndarray:
        return self.table[code].copy()
