"""What an object extractor returns for a stored frame (see envs/objects/__init__.py)."""

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Found:
    label: str  # a class word of the game's vocabulary (collect.annotations.LABELS)
    mask: np.ndarray  # bool [H, W]: its pixels in the stored frame, disjoint from the other objects'
    row: int | None = None  # SpaceInvaders aliens: 1 = top row ... 6 = bottom row


Checks = dict[str, list[int]]  # check name -> [count that agrees, count checked], summed over frames


@dataclass
class FrameObjects:
    objects: list[Found]
    checks: Checks = field(default_factory=dict)
    flagged: bool = False


def add_check(checks: Checks, name: str, agreeing: int, total: int) -> None:
    counts = checks.setdefault(name, [0, 0])
    counts[0] += int(agreeing)
    counts[1] += int(total)
