"""The interface every player implements: reset(seed), then act(observation) -> env action."""

import hashlib
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from envs.games import GameSpec


@dataclass
class Observation:
    """What a policy may look at after each env step."""

    frame: np.ndarray  # [H, W, 3] uint8, the raw frame the VLM sees (FrameTap)
    agent_obs: np.ndarray  # the expert pipeline's observation, batched: [1, ...]
    episode_start: bool  # True after a reset of the pipeline (including life-loss pseudo-resets)


class Policy(ABC):
    """A player. Registered with `@register_policy(name)` (agents/registry.py), every command can play it.

    `options` names the command-line options its `build` reads (e.g. `expert`, `checkpoint`,
    `deterministic`); a command refuses an option that the chosen policy does not read.
    """

    name: ClassVar[str]  # the registry name, set by @register_policy: policy=<name> on the command line
    options: ClassVar[tuple[str, ...]] = ()
    policy_id: str  # names the policy in results files and datasets: "<name>-..."
    # The env pipeline the policy was trained in (an expert's config.yml) and its VecNormalize stats
    # folder; None plays in the game's default pipeline, which every other policy shares.
    pipeline: dict | None = None
    stats_dir: Path | None = None

    @classmethod
    def build(cls, spec: GameSpec, **options) -> "Policy":
        """The policy for a command line: `options` holds each name in `cls.options` (None when not given)."""
        return cls(spec, **options)

    @abstractmethod
    def reset(self, seed: int) -> None:
        """Start an episode; everything random in the policy is seeded from `seed`."""

    @abstractmethod
    def act(self, observation: Observation):
        """The env action to take: an int for Atari, a float array [3] for CarRacing."""

    def label(self, action):
        """The action a dataset records for the step just taken, whose code a learner imitates: the action
        itself, or for a policy whose actions another one labels (DAgger) the labeller's."""
        return action

    @property
    def fingerprint(self) -> str | None:
        """sha256 of what decides the actions (the weights), so datasets tell two agents apart; None if nothing does."""
        return None

    def report(self) -> dict:
        """Policy-specific counts since the policy was built, which add up across episodes and worker processes
        (e.g. how often a VLM's free answer was illegal)."""
        return {}

    def summarize_report(self, counts: dict) -> dict:
        """results.json's policy_report from counts added up over the episodes (rates derived here)."""
        return counts


class FrameStackPolicy(Policy):
    """A learned policy that looks at the last `n_stack` frames (the first one repeated at an episode's start,
    as the datasets store them) and is fingerprinted by its weights file."""

    def __init__(self, n_stack: int, weights: Path):
        self.frames: deque[np.ndarray] = deque(maxlen=n_stack)
        self.weights_sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()

    @property
    def fingerprint(self) -> str:
        return self.weights_sha256

    def reset(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.frames.clear()

    def stacked(self, frame: np.ndarray) -> np.ndarray:
        """Push this step's frame; -> the stack [n_stack, ...], oldest first."""
        if not self.frames:
            self.frames.extend([frame] * (self.frames.maxlen - 1))
        self.frames.append(frame)
        return np.stack(self.frames)
