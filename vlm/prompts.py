"""Task templates (the papers' exact formats), answer formatting and parsing.

Image features replace IMAGE_MARKER; the visual prompt encoder's slot tokens replace
PROMPT_MARKER, which sits between the image block and the text.
"""

import re

import numpy as np
from PIL import Image

IMAGE_MARKER = "<ImageHere>"
PROMPT_MARKER = "<PromptHere>"
IMAGE_BLOCK = f"<Img>{IMAGE_MARKER}</Img>"

RECONSTRUCT_SIZE = 64  # PVP targets are the input image downsampled to 64x64
RGB_MAX = 255

POINT, REGION = "point", "region"
PROMPT_NAMES = {POINT: "Mark", REGION: "Region"}

_RGB = re.compile(r"\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]")
_MASK = re.compile(r"[01]")


def reconstruct_prompt(y: int, x: int) -> str:
    return f"{IMAGE_BLOCK} [reconstruct] loc: [{y},{x}] rgb: "


def reconstruct_answer(rgb) -> str:
    r, g, b = (int(v) for v in rgb)
    return f"[{r},{g},{b}]"


def parse_rgb(text: str) -> tuple[int, int, int] | None:
    """The first "[r,g,b]" in text, each clipped to 0..255; None when there is none."""
    match = _RGB.search(text)
    if match is None:
        return None
    r, g, b = (min(int(v), RGB_MAX) for v in match.groups())
    return r, g, b


def reconstruction_target(frame: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [64, 64, 3], PIL's default resampling (as the paper's reference code)."""
    return np.asarray(Image.fromarray(frame).resize((RECONSTRUCT_SIZE, RECONSTRUCT_SIZE)))


def segmentation_prompt(phrase: str, y: int, x: int) -> str:
    return f"{IMAGE_BLOCK} [segmentation] {phrase} loc: [{y},{x}] mask: "


def segmentation_answer(inside: bool) -> str:
    return "1" if inside else "0"


def parse_mask(text: str) -> int | None:
    match = _MASK.search(text)
    return None if match is None else int(match.group())


GAME_INSTRUCTIONS = ("paper", "none")  # VLMConfig.game_instruction


def game_instruction(objective: str, tips: str, action_names) -> str:
    """PAE-LaMM's game instruction: the objective, tips and the action space, from a game's own words."""
    return f"{objective} Tips: {tips} Action Space: {', '.join(action_names)}."


def game_prompt(num_frames: int, instruction: str, game_id: str) -> str:
    """One image block per stacked frame (oldest first), then the instruction (if any) and game id."""
    text = " ".join(part for part in (instruction, f"[{game_id}]") if part)
    return IMAGE_BLOCK * num_frames + f" {text} choose an action from Action Space: "


def visual_prompt_question(kind: str, in_slots: bool = True, locations: list[list[int]] = ()) -> str:
    """SPHINX-V's question; the marks in the encoder's slots (PROMPT_MARKER) or, when not, each mark's location
    written after the image ("<Mark 1> loc: [y,x]") if given (vlm.marks)."""
    if kind not in PROMPT_NAMES:
        raise ValueError(f"unknown visual prompt kind {kind!r}; choose {POINT!r} or {REGION!r}")
    marker = PROMPT_MARKER if in_slots else ""
    written = "".join(
        f" {prompt_reference(kind, i)} loc: [{','.join(map(str, location))}]" for i, location in enumerate(locations)
    )
    return f"{IMAGE_BLOCK}{marker}{written} Please identify the labels of each marked {kind} in the image."


def prompt_reference(kind: str, index: int) -> str:
    """How the text names slot `index` (0-based): <Mark 1>, <Region 3>, ..."""
    return f"<{PROMPT_NAMES[kind]} {index + 1}>"


def visual_prompt_answer(labels: list[str], kind: str) -> str:
    return "\n".join(f"{prompt_reference(kind, i)}: {label}" for i, label in enumerate(labels))


def parse_visual_prompt_answer(text: str, kind: str) -> dict[int, str]:
    """{0-based slot: label} for every "<Mark i>: label" line."""
    pattern = re.compile(rf"<{PROMPT_NAMES[kind]} (\d+)>:\s*(.*)")
    labels = {}
    for line in text.splitlines():
        match = pattern.match(line.strip())
        if match:
            labels[int(match.group(1)) - 1] = match.group(2).strip()
    return labels
