"""Behaviour cloning with a CNN: the first baseline a VLM policy has to beat.

The network is the Nature DQN CNN (Mnih et al. 2015; SB3's `NatureCNN` + a linear head over the game's
action codes) on the expert pipeline's view of the same frames the VLM sees: each raw frame in grey,
area-resized to the pipeline's side (SpaceInvaders 84, CarRacing 64), the game's frame stack (the first
frame repeated at an episode's start, as the VLM policy and the datasets do). Trained by `python -m
train.bc`; the checkpoint is a folder with `config.json` and `model.safetensors`.
"""

import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from agents.base import FrameStackPolicy, Observation
from agents.registry import register_policy
from core.errors import UserError, quoted
from core.files import write_atomically
from core.integrity import check_safetensors, damaged, read_json
from core.runs import model_name
from envs.games import GAMES, GameSpec

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FEATURES = 512  # NatureCNN's feature width
PIXEL_MAX = 255.0
CONV_LAYERS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))  # NatureCNN's convolutions: (channels, kernel, stride)


def grey_frames(frames: np.ndarray, side: int) -> np.ndarray:
    """uint8 RGB frames [..., H, W, 3] -> uint8 grey [..., side, side] (cv2, as AtariWrapper's WarpFrame)."""
    flat = frames.reshape(-1, *frames.shape[-3:])
    grey = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (side, side), interpolation=cv2.INTER_AREA) for f in flat]
    return np.stack(grey).reshape(*frames.shape[:-3], side, side)


def min_side() -> int:
    """The smallest frame side NatureCNN's convolutions leave at least one pixel of (36)."""
    side = 1
    for _, kernel, stride in reversed(CONV_LAYERS):
        side = (side - 1) * stride + kernel
    return side


class NatureCNN(nn.Module):
    """[B, n_stack, side, side] uint8 -> action logits [B, n_actions]."""

    def __init__(self, n_stack: int, side: int, n_actions: int):
        super().__init__()
        layers, channels = [], n_stack
        for out_channels, kernel, stride in CONV_LAYERS:
            layers += [nn.Conv2d(channels, out_channels, kernel_size=kernel, stride=stride), nn.ReLU()]
            channels = out_channels
        self.features = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            flat = self.features(torch.zeros(1, n_stack, side, side)).shape[1]
        self.head = nn.Sequential(nn.Linear(flat, FEATURES), nn.ReLU(), nn.Linear(FEATURES, n_actions))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(frames.float() / PIXEL_MAX))


@dataclass
class BCConfig:
    game: str
    action_names: list[str]  # the codes the head scores, in order
    n_stack: int
    side: int
    seed: int = 0
    training: dict | None = None  # what `python -m train.bc` recorded: data, steps, samples, seconds, accuracy

    def build(self) -> NatureCNN:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return NatureCNN(self.n_stack, self.side, len(self.action_names))


def whole_number(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def checked_bc_config(values: dict) -> BCConfig:
    """The BCConfig a config.json holds, its fields' types and ranges checked: a ValueError (or a TypeError for
    missing or unknown fields) says which is wrong."""
    config = BCConfig(**values)
    if config.game not in GAMES:
        raise ValueError(f"game={config.game!r} is not one of {', '.join(GAMES)}")
    names = config.action_names
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise ValueError(f"action_names={names!r} is not a list of action words")
    for name, minimum in (("n_stack", 1), ("side", min_side()), ("seed", 0)):
        value = getattr(config, name)
        if not whole_number(value) or value < minimum:
            raise ValueError(f"{name}={value!r} is not a whole number >= {minimum}")
    if config.training is not None and not isinstance(config.training, dict):
        raise ValueError(f"training={config.training!r} is not a record of the training run")
    return config


def is_bc_checkpoint(folder: Path) -> bool:
    """Whether `folder` holds a BC checkpoint's config.json (BCConfig's fields), e.g. one an earlier run wrote."""
    try:
        values = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False
    every = {field.name for field in fields(BCConfig)}
    required = {field.name for field in fields(BCConfig) if field.default is MISSING}
    return isinstance(values, dict) and required <= values.keys() <= every


def save_bc(folder: Path, model: NatureCNN, config: BCConfig) -> None:
    """The checkpoint folder, written under a temporary name and renamed into place."""

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        (tmp / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2))
        save_model(model, str(tmp / WEIGHTS_FILE))

    write_atomically(folder, write)


def load_bc(folder: Path) -> tuple[NatureCNN, BCConfig]:
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"checkpoint={folder} is not a BC checkpoint (no {', '.join(missing)}): "
            "train one with `python -m train.bc game=<game> data=[<dataset>] out=<folder>`"
        )
    check_safetensors(folder / WEIGHTS_FILE, "checkpoint")
    try:
        config = checked_bc_config(read_json(folder / CONFIG_FILE, "checkpoint"))
        model = config.build()
    except (TypeError, ValueError, RuntimeError) as error:
        raise UserError(
            f"checkpoint={folder} is not a BC checkpoint ({error}): {CONFIG_FILE} is not BCConfig's"
        ) from None
    try:
        load_model(model, str(folder / WEIGHTS_FILE))
    except RuntimeError as error:  # tensors missing, unexpected or of another shape
        raise damaged(folder / WEIGHTS_FILE, "checkpoint", quoted(error)) from None
    return model.eval(), config


@register_policy("bc")
class BCPolicy(FrameStackPolicy):
    """Plays a `python -m train.bc` checkpoint greedily (the most likely action code), in the game's default
    pipeline. checkpoint=: its folder."""

    options = ("checkpoint",)

    @classmethod
    def build(cls, spec: GameSpec, checkpoint: str | None = None) -> "BCPolicy":
        if checkpoint is None:
            raise UserError(
                f"policy=bc needs checkpoint=<folder>: train one with `python -m train.bc game={spec.name} ...`"
            )
        return cls(checkpoint, spec)

    def __init__(self, checkpoint: str | Path, spec: GameSpec):
        path = Path(checkpoint)
        self.model, self.config = load_bc(path)
        if self.config.game != spec.name or tuple(self.config.action_names) != spec.action_names:
            raise UserError(f"checkpoint={checkpoint} was trained for {self.config.game}, not {spec.name}")
        super().__init__(self.config.n_stack, path / WEIGHTS_FILE)
        self.spec = spec
        self.policy_id = f"bc-{model_name(path)}"

    @torch.inference_mode()
    def act(self, observation: Observation):
        stack = self.stacked(grey_frames(observation.frame, self.config.side))  # [n_stack, side, side]
        logits = self.model(torch.from_numpy(stack)[None])  # [1, n_actions]
        return self.spec.codec.decode(int(logits.argmax(-1)))
