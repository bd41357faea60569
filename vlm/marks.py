"""How marked points and boxes reach the model: the three forms SPHINX-V's Table 9 compares.

    encoder  the visual prompt encoder's slots (coordinates and kind), named <Mark i> / <Region i> in the answer
    text     the coordinates written in the question, on PVP's 64x64 grid as PVP writes a location:
             "<Mark 1> loc: [y,x]", "<Region 1> loc: [y0,x0,y1,x1]"
    overlay  each mark alpha-blended onto the frame in MARK_COLOURS[i]: a disc for a point, an outline for a box

A mark is (x0, y0, x1, y1) normalised to [0, 1] (vlm.prompt_encoder's convention; a point fills both corners).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vlm import prompts
from vlm.prompt_encoder import KIND_BOX, KIND_POINT

DEFAULT_FORM = "encoder"  # SPHINX-V's own: the visual_prompt task's unless told, and a model's that records none
KIND_CODES = {prompts.POINT: KIND_POINT, prompts.REGION: KIND_BOX}  # the encoder's slot kind of each mark kind
GRID = prompts.RECONSTRUCT_SIZE  # the text form's coordinates: cells of PVP's 64x64 grid
# Mark i's colour in the overlay form: ten saturated colours far apart, in a fixed order the model learns.
MARK_COLOURS = (
    (255, 0, 255),
    (0, 255, 255),
    (255, 255, 0),
    (255, 0, 0),
    (0, 0, 255),
    (0, 255, 0),
    (255, 128, 0),
    (128, 0, 255),
    (255, 255, 255),
    (0, 128, 128),
)
OVERLAY_ALPHA = 0.6  # the mark's weight in the blend
POINT_RADIUS_FRACTION = 0.02  # of the frame's shorter side (SpaceInvaders 160 px: radius 3; CarRacing 96 px: 2)
BOX_LINE_FRACTION = 0.0125  # of the frame's shorter side (SpaceInvaders: 2 px; CarRacing: 1 px)


@dataclass
class Presented:
    """One sample's marks in a form: the frame the model sees, the question, and the encoder's slots (or None)."""

    frame: np.ndarray  # uint8 [H, W, 3]
    prompt: str
    prompt_coords: np.ndarray | None = None  # float32 [k, 4]
    prompt_kinds: np.ndarray | None = None  # int64 [k]

    def sample_keys(self) -> dict:
        """The collate keys of the question and the slots (vlm.collate), without the images."""
        if self.prompt_coords is None:
            return dict(prompt=self.prompt)
        return dict(prompt=self.prompt, prompt_coords=self.prompt_coords, prompt_kinds=self.prompt_kinds)


def in_slots(frame: np.ndarray, marks: list[list[float]], kind: str) -> Presented:
    coords = np.array(marks, dtype=np.float32).reshape(len(marks), 4)  # [k, 4]
    kinds = np.full(len(marks), KIND_CODES[kind], dtype=np.int64)  # [k]
    return Presented(frame, prompts.visual_prompt_question(kind), coords, kinds)


def grid_cell(value: float) -> int:
    return min(int(value * GRID), GRID - 1)


def in_text(frame: np.ndarray, marks: list[list[float]], kind: str) -> Presented:
    locations = []
    for x0, y0, x1, y1 in marks:
        corners = (y0, x0) if kind == prompts.POINT else (y0, x0, y1, x1)
        locations.append([grid_cell(value) for value in corners])
    return Presented(frame, prompts.visual_prompt_question(kind, in_slots=False, locations=locations))


def disc(height: int, width: int, x: float, y: float, radius: float) -> np.ndarray:
    """bool [H, W]: the pixels whose centres lie within `radius` pixels of (x, y) in pixel units."""
    ys, xs = np.mgrid[:height, :width]
    return (xs + 0.5 - x) ** 2 + (ys + 0.5 - y) ** 2 <= radius**2


def outline(height: int, width: int, box: list[float], line: int) -> np.ndarray:
    """bool [H, W]: a `line`-pixel frame just inside the pixel box (x0, y0, x1, y1), x1 and y1 exclusive."""
    x0, y0, x1, y1 = box
    x0, y0 = min(int(x0), width - 1), min(int(y0), height - 1)
    x1, y1 = max(int(np.ceil(x1)), x0 + 1), max(int(np.ceil(y1)), y0 + 1)
    inside = np.zeros((height, width), dtype=bool)
    inside[y0:y1, x0:x1] = True
    hollow = np.zeros_like(inside)
    hollow[y0 + line : y1 - line, x0 + line : x1 - line] = True
    return inside & ~hollow


def on_image(frame: np.ndarray, marks: list[list[float]], kind: str) -> Presented:
    if len(marks) > len(MARK_COLOURS):
        raise ValueError(f"{len(marks)} marks: the overlay has {len(MARK_COLOURS)} colours")
    height, width, _ = frame.shape
    side = min(height, width)
    blended = frame.astype(np.float32)  # [H, W, 3]
    for colour, (x0, y0, x1, y1) in zip(MARK_COLOURS, marks):
        if kind == prompts.POINT:
            where = disc(height, width, x0 * width, y0 * height, max(1.0, POINT_RADIUS_FRACTION * side))
        else:
            line = max(1, round(BOX_LINE_FRACTION * side))
            where = outline(height, width, [x0 * width, y0 * height, x1 * width, y1 * height], line)
        blended[where] = (1 - OVERLAY_ALPHA) * blended[where] + OVERLAY_ALPHA * np.array(colour, dtype=np.float32)
    marked = np.rint(blended).astype(np.uint8)
    return Presented(marked, prompts.visual_prompt_question(kind, in_slots=False))


FORMS: dict[str, Callable[[np.ndarray, list[list[float]], str], Presented]] = {
    "encoder": in_slots,
    "text": in_text,
    "overlay": on_image,
}


def present(form: str, frame: np.ndarray, marks: list[list[float]], kind: str) -> Presented:
    """`marks` (at most MARK_COLOURS of them for the overlay) on `frame` as `form` gives them to the model."""
    if form not in FORMS:
        raise ValueError(f"unknown mark form {form!r}: choose one of {', '.join(FORMS)}")
    if kind not in KIND_CODES:
        raise ValueError(f"unknown visual prompt kind {kind!r}; choose {prompts.POINT!r} or {prompts.REGION!r}")
    return FORMS[form](frame, marks, kind)
