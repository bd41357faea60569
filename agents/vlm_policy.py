"""A fine-tuned VLM as a policy: stacked frames -> game prompt -> the most likely legal action."""

import sys
from pathlib import Path

from agents.base import FrameStackPolicy, Observation
from agents.registry import register_policy
from core.errors import UserError
from core.runs import model_name
from envs.games import GameSpec
from vlm import FrameCache, VLMConfig, prompts
from vlm.checkpoint import SHIPPED_DIR, checked_checkpoint_config, load_checked
from vlm.model import WEIGHTS_FILE


def shipped_checkpoint(spec: GameSpec) -> Path:
    return SHIPPED_DIR / f"game_{spec.name}"


def check_trained_for(config: VLMConfig, spec: GameSpec, checkpoint) -> None:
    """Refuse a checkpoint trained for other games (or other action words); warn for one that does not say."""
    if not config.games:
        print(f"warning: checkpoint={checkpoint} does not record the games it was trained for", file=sys.stderr)
    elif spec.name not in config.games:
        raise UserError(
            f"checkpoint={checkpoint} was trained for {', '.join(config.games)}, not {spec.name}: "
            f"give a checkpoint of {spec.name} or game={'|'.join(config.games)}"
        )
    elif list(config.games[spec.name]) != list(spec.action_names):
        raise UserError(
            f"checkpoint={checkpoint} was trained on the {spec.name} action words {config.games[spec.name]}, "
            f"not {list(spec.action_names)}: train it again on a dataset of this version"
        )


def game_prompt(config: VLMConfig, spec: GameSpec) -> str:
    """The game template for `spec` with the instruction `config` was trained with: what training and play both ask."""
    instruction = prompts.game_instruction(spec.objective, spec.tips, spec.action_names)
    return prompts.game_prompt(spec.n_stack, instruction if config.game_instruction == "paper" else "", spec.name)


@register_policy("vlm")
class VLMPolicy(FrameStackPolicy):
    """Plays by constrained choice among the game's action words, in the game's default pipeline.

    checkpoint=: a folder written by `python -m train` (default: the game's shipped checkpoints/game_<game>).
    The stack repeats an episode's first frame, as the collected datasets do; each frame goes through
    the vision tower once (FrameCache). It counts how often the model's unconstrained greedy answer
    would not have been a legal action.
    """

    options = ("checkpoint",)

    @classmethod
    def build(cls, spec: GameSpec, checkpoint: str | None = None) -> "VLMPolicy":
        if checkpoint is None:
            if not shipped_checkpoint(spec).is_dir():
                raise UserError(
                    f"no VLM checkpoint ships for {spec.name}: fine-tune one with "
                    f"`python -m train recipe=game game={spec.name} ...` and pass checkpoint=<its folder>"
                )
            checkpoint = shipped_checkpoint(spec)
        return cls(checkpoint, spec)

    def __init__(self, checkpoint: str | Path, spec: GameSpec):
        path = Path(checkpoint)
        check_trained_for(checked_checkpoint_config(path), spec, checkpoint)
        super().__init__(spec.n_stack, path / WEIGHTS_FILE)
        self.model = load_checked(path)
        self.model.merge_lora()  # plain linear layers play a little faster
        self.spec = spec
        self.policy_id = f"vlm-{model_name(path)}"
        self.prompt = game_prompt(self.model.config, spec)
        self.candidates = list(spec.action_names)
        self.cache = FrameCache(self.model, capacity=2 * spec.n_stack)
        self.decisions = 0
        self.greedy_illegal = 0

    def act(self, observation: Observation):
        tokens = self.cache(self.stacked(observation.frame))  # [n_stack, T, D]
        choice = self.model.choose(self.prompt, self.candidates, image_tokens=tokens[None])
        self.decisions += 1
        self.greedy_illegal += int(not bool(choice.greedy_legal[0]))
        return self.spec.codec.decode(int(choice.index[0]))

    def report(self) -> dict:
        return {"decisions": self.decisions, "greedy_illegal": self.greedy_illegal}

    def summarize_report(self, counts: dict) -> dict:
        return counts | {"greedy_illegal_rate": counts["greedy_illegal"] / max(counts["decisions"], 1)}
