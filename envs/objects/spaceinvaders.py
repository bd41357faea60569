"""SpaceInvaders' objects, decoded from the ALE RAM after each decision and cut out of the stored frame by colour.

The RAM layout is OCAtari's (github.com/k4ntz/OC_Atari, ocatari/ram/spaceinvaders.py, commit 99c8746):
formation x = ram[26], formation y = ram[16] (aliens at y = 31 + 2 ram[16] + 18 (row - 1)), alien columns 16 px
apart; cannon x = ram[28]; UFO ("satellite") x = ram[30] (0 and 180: none); alien shots y = ram[81:83],
x = ram[83:85]; the player's shot y = ram[85], x = ram[87] (a shot at y = 2 ram + 3, visible for 20 < y < 195);
shields fixed at x = 42 + 32 i, y = 157..175, drawn while bit 6 of ram[24] is set (they vanish when the
aliens come down to them). Checked here against the pixels: the row bytes ram[18:24] hold one
row each, ram[23] the top row (row 1) and ram[18] the bottom one, bit c = column c from the left (OCAtari's
comments count rows from the bottom; its drawing code reads them the other way).

A stored frame is the max of the last two raw frames of the decision and the RAM is read after the last, so a
moving object can show at two positions: each object's mask is the pixels of its colour in a window around its
RAM box, wide enough to hold both. An alien just shot keeps exploding in its slot for a few frames after the RAM
clears its bit: the slot's alien-coloured pixels are still the alien (checks count these as `exploding`).
"""

import numpy as np

from envs.objects import EXTRACTORS
from envs.objects.base import Found, FrameObjects, add_check

# Colours of the ALE palette as SpaceInvaders draws them (RGB).
BACKGROUND = (0, 0, 0)
COLOURS = {
    "cannon": (50, 132, 50),
    "alien": (134, 134, 29),
    "shield": (181, 83, 40),
    "player shot": (142, 142, 142),
    "alien shot": (142, 142, 142),
    "ufo": (151, 25, 122),
}
P1_SCORE_COLOUR = (50, 132, 50)  # the cannon's green
SCORE_ROWS = 20  # the scores are drawn in rows 10..19; the UFO flies there, and they are hidden meanwhile
HUD_COLOUR = (162, 134, 56)  # player 2's score and the lives left (drawn at x 84..95, y 185..194 after a loss)
GROUND_TOP = 195  # rows from here down are the ground, the lives and a marker: not objects
FRAME_HEIGHT, FRAME_WIDTH = 210, 160

# RAM addresses (OCAtari's).
FORMATION_Y, FORMATION_X, CANNON_X, UFO_X = 16, 26, 28, 30
VISIBILITY, SHIELDS_VISIBLE = 24, 0x40  # bit 6 of ram[24] is set while the shields are drawn (checked on pixels)
TOP_ROW_BYTE = 23  # ram[23] is row 1 (top), ram[18] row 6 (bottom)
ALIEN_SHOT_Y, ALIEN_SHOT_X = (81, 82), (83, 84)
PLAYER_SHOT_Y, PLAYER_SHOT_X = 85, 87
NO_UFO = (0, 180)

# Geometry (pixels), from OCAtari and checked on the pixels.
ROWS, COLUMNS = 6, 6
ALIEN_TOP, ROW_PITCH, COLUMN_PITCH, ALIEN_SIZE = 31, 18, 16, 10  # an alien's RAM box is 8 wide, 10 high
ALIEN_WIDTH = 8
CANNON_TOP, CANNON_WIDTH, CANNON_HEIGHT = 185, 7, 10
UFO_TOP, UFO_WIDTH, UFO_HEIGHT = 12, 7, 8
SHOT_HEIGHT = 10
SHOT_VISIBLE = (20, 195)  # a shot's y strictly between these is on screen
SHIELD_LEFT, SHIELD_PITCH, SHIELD_TOP, SHIELD_WIDTH, SHIELD_HEIGHT = 42, 32, 157, 8, 18
SHIELDS = 3
# How far outside its RAM box an object's pixels reach in a stored frame (left, top, right, bottom): the motion
# between the two pooled raw frames, measured on expert episodes. Aliens step 2-4 px sideways, the cannon up to 6;
# shots move up to 8 px a frame. Each window stays clear of its neighbours (aliens are 8 px apart, rows 8 px).
MARGINS = {
    "alien": (4, 2, 4, 2),
    "cannon": (6, 0, 6, 0),  # rows stop above the ground marker at y = 196
    "ufo": (2, 1, 2, 1),
    "player shot": (1, 4, 1, 4),
    "alien shot": (1, 4, 1, 4),
    "shield": (1, 0, 1, 0),
}
EXPLAINED_FLAG = 0.95  # a frame whose objects explain less of its non-background pixels is flagged


def colour_mask(frame: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return (frame == np.array(colour, dtype=np.uint8)).all(-1)  # [H, W]


def window(box: tuple[int, int, int, int], label: str) -> tuple[slice, slice]:
    """The (rows, columns) slices of a RAM box (x, y, width, height) widened by the class's margins."""
    x, y, width, height = box
    left, top, right, bottom = MARGINS[label]
    return (
        slice(max(y - top, 0), min(y + height + bottom, FRAME_HEIGHT)),
        slice(max(x - left, 0), min(x + width + right, FRAME_WIDTH)),
    )


def alien_slots(ram: np.ndarray) -> list[tuple[int, int, bool, tuple[int, int, int, int]]]:
    """(row, column, alive per RAM, RAM box) of all 36 formation slots, row 1 = top."""
    slots = []
    for row in range(1, ROWS + 1):
        bits = int(ram[TOP_ROW_BYTE + 1 - row])
        y = ALIEN_TOP + 2 * int(ram[FORMATION_Y]) + (row - 1) * ROW_PITCH
        for column in range(COLUMNS):
            x = int(ram[FORMATION_X]) - 1 + column * COLUMN_PITCH
            slots.append((row, column, bool(bits >> column & 1), (x, y, ALIEN_WIDTH, ALIEN_SIZE)))
    return slots


def shot_box(y_byte: int, x_byte: int) -> tuple[int, int, int, int] | None:
    y = 2 * int(y_byte) + 3
    if not SHOT_VISIBLE[0] < y < SHOT_VISIBLE[1]:
        return None
    return int(x_byte) - 2, y, 1, min(SHOT_HEIGHT, SHOT_VISIBLE[1] - y)


def ram_objects(ram: np.ndarray) -> list[tuple[str, int | None, bool, tuple[int, int, int, int]]]:
    """(label, alien row, on screen per RAM, RAM box (x, y, width, height)) of every object the RAM places, in
    the order masks are cut: an earlier object keeps a pixel that two windows share."""
    found = [("cannon", None, True, (int(ram[CANNON_X]) - 1, CANNON_TOP, CANNON_WIDTH, CANNON_HEIGHT))]
    found += [("player shot", None, True, box) for box in [shot_box(ram[PLAYER_SHOT_Y], ram[PLAYER_SHOT_X])] if box]
    for y_byte, x_byte in zip(ALIEN_SHOT_Y, ALIEN_SHOT_X):
        found += [("alien shot", None, True, box) for box in [shot_box(ram[y_byte], ram[x_byte])] if box]
    if int(ram[UFO_X]) not in NO_UFO:
        found.append(("ufo", None, True, (int(ram[UFO_X]) - 1, UFO_TOP, UFO_WIDTH, UFO_HEIGHT)))
    found += [("alien", row, alive, box) for row, _, alive, box in alien_slots(ram)]
    for shield in range(SHIELDS):
        box = (SHIELD_LEFT + shield * SHIELD_PITCH, SHIELD_TOP, SHIELD_WIDTH, SHIELD_HEIGHT)
        found.append(("shield", None, bool(ram[VISIBILITY] & SHIELDS_VISIBLE), box))
    return found


def play_area_pixels(frame: np.ndarray) -> np.ndarray:
    """bool [H, W]: the non-background pixels that should belong to an object (not the scores, ground, lives)."""
    pixels = ~colour_mask(frame, BACKGROUND) & ~colour_mask(frame, HUD_COLOUR)
    pixels[GROUND_TOP:] = False
    pixels[:SCORE_ROWS] &= ~colour_mask(frame[:SCORE_ROWS], P1_SCORE_COLOUR)
    return pixels


def frame_objects(frame: np.ndarray, ram: np.ndarray) -> FrameObjects:
    """The objects of a stored frame (uint8 [210, 160, 3]) from the RAM after its decision."""
    taken = np.zeros(frame.shape[:2], dtype=bool)  # [H, W]
    colours = {label: colour_mask(frame, colour) for label, colour in COLOURS.items()}
    objects, checks = [], {}
    for label, row, on_screen, box in ram_objects(ram):
        rows, columns = window(box, label)
        mask = np.zeros_like(taken)
        mask[rows, columns] = colours[label][rows, columns] & ~taken[rows, columns]
        present = bool(mask.any())
        if on_screen:
            add_check(checks, f"found/{label}", present, 1)
            x, y, width, height = box
            nominal = colours[label][max(y, 0) : y + height, max(x, 0) : x + width]
            add_check(checks, f"colour/{label}", nominal.sum(), nominal.size)
        elif present and label == "alien":
            add_check(checks, "exploding/alien", 1, 1)
        elif present:
            add_check(checks, f"unexpected/{label}", 1, 1)
        if present:
            objects.append(Found(label, mask, row))
            taken |= mask
    wanted = play_area_pixels(frame)
    explained = int((wanted & taken).sum())
    add_check(checks, "explained", explained, int(wanted.sum()))
    flagged = explained < EXPLAINED_FLAG * wanted.sum()
    add_check(checks, "flagged frames", int(flagged), 1)
    return FrameObjects(objects, checks, flagged)


@EXTRACTORS.register("spaceinvaders")
class SpaceInvadersObjects:
    source = "ale-ram"

    def __init__(self, env):
        self.ale = env.unwrapped.ale

    def __call__(self, frame: np.ndarray) -> FrameObjects:
        return frame_objects(frame, self.ale.getRAM())
