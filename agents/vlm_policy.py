"""A fine-tuned VLM as a policy: stacked frames -> game prompt -> the most likely legal action."""

from collections import deque
from pathlib import Path

import numpy as np
import torch

from agents.base import Observation, Policy
from envs import GameSpec, UserError
from train.checkpoint import FINAL_DIR
from vlm import VLM, FrameCache


class VLMPolicy(Policy):
    """Plays by constrained choice among the game's action words, in the game's default pipeline.

    The stack repeats an episode's first frame, as the collected datasets do; each frame goes
    through the vision tower once (FrameCache). It counts how often the model's unconstrained
    greedy answer would not have been a legal action.
    """

    def __init__(self, checkpoint: str | Path, spec: GameSpec):
        path = Path(checkpoint)
        if not (path / "config.json").is_file():
            raise UserError(
                f"checkpoint={checkpoint} is not a VLM checkpoint (no config.json): "
                "give a folder written by `python -m train recipe=game`"
            )
        self.model = VLM.from_pretrained(str(path))
        self.model.merge_lora()  # plain linear layers play a little faster
        self.spec = spec
        # A training run's model lives in RUN/STAGE/final: name it by its run.
        self.policy_id = f"vlm-{path.parents[1].name if path.name == FINAL_DIR else path.name}"
        self.prompt = self.model.game_prompt(spec)
        self.candidates = list(spec.action_names)
        self.cache = FrameCache(self.model, capacity=2 * spec.n_stack)
        self.frames: deque[np.ndarray] = deque(maxlen=spec.n_stack)
        self.decisions = 0
        self.greedy_illegal = 0

    def reset(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.frames.clear()

    def act(self, observation: Observation):
        if not self.frames:
            self.frames.extend([observation.frame] * (self.spec.n_stack - 1))
        self.frames.append(observation.frame)
        tokens = self.cache(np.stack(self.frames))  # [n_stack, T, D]
        choice = self.model.choose(self.prompt, self.candidates, image_tokens=tokens[None])
        self.decisions += 1
        self.greedy_illegal += int(not bool(choice.greedy_legal[0]))
        return self.spec.codec.decode(int(choice.index[0]))

    def report(self) -> dict:
        return {
            "decisions": self.decisions,
            "greedy_illegal": self.greedy_illegal,
            "greedy_illegal_rate": self.greedy_illegal / max(self.decisions, 1),
        }
