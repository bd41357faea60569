"""One-file extension points: a policy and a training task registered from this test file are played
and trained by the project's own commands, with nothing else in the project changed."""

import json
import re
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import run_command
from PIL import Image
from test_train import MICRO_OVERRIDES, compose_train

from agents import Observation, Policy, load_policy, register_policy
from agents.rollout import play_episode
from agents.takeover import TakeoverPolicy
from collect.__main__ import main as collect_main
from collect.dataset import CollectedDataset
from collect.sources import ImageSources
from core.errors import UserError
from envs import get_game
from eval.__main__ import main as eval_main
from train.__main__ import main as train_main
from train.tasks import NoData, Task, Validation, register_task
from vlm import VLM, prompts

SEED = 7
SPACEINVADERS = get_game("spaceinvaders")
BLACK = "[0,0,0]"


@register_policy("cycle")
class CyclePolicy(Policy):
    """Plays the action codes 0, 1, 2, ... in turn."""

    def __init__(self, spec):
        self.spec = spec
        self.policy_id = f"cycle-{spec.name}"
        self.step = 0

    def reset(self, seed: int) -> None:
        self.step = 0

    def act(self, observation: Observation):
        code = self.step % len(self.spec.action_names)
        self.step += 1
        return self.spec.codec.decode(code)


@register_task("answer_black")
@dataclass
class AnswerBlackTask(Task):
    """Any image, location (0, 0): answer black. Validated by asking once more."""

    sources: ImageSources
    validates: bool

    @classmethod
    def build(cls, options, sources, game, val_seeds):
        if not len(sources):
            raise NoData("no images")
        return cls(sources, bool(val_seeds))

    def batch(self, model, rng, batch_size):
        frames = [self.sources[int(rng.integers(len(self.sources)))] for _ in range(batch_size)]
        prompt = prompts.reconstruct_prompt(0, 0)
        return model.collate([dict(images=model.preprocess(f[None]), prompt=prompt, answer=BLACK) for f in frames])

    def loss(self, model, batch):
        return model(**batch).loss

    def validate(self, load_model, stage_dir):
        if not self.validates:
            return None
        model: VLM = load_model()
        answer = model.generate(prompts.reconstruct_prompt(0, 0), images=model.preprocess(self.sources[0][None])[None])
        (stage_dir / "answer_black.json").write_text(json.dumps({"answer": answer[0]}))
        return Validation(f"answer_black validation: {answer[0]!r}", {"answer_black": float(answer[0] == BLACK)})


def test_a_policy_registered_here_is_played_by_eval_collect_and_takeover(tmp_path):
    run_command(
        eval_main, "eval", "game=spaceinvaders", "policy=cycle", "episodes=1", f"seed={SEED}", "video=false",
        f"out={tmp_path / 'eval'}",
    )  # fmt: skip
    report = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert report["policy"] == "cycle-spaceinvaders" and report["seeds"] == [SEED]

    run_command(collect_main, "collect", "game=spaceinvaders", "policy=cycle", "episodes=1", f"seed={SEED}",
                f"out={tmp_path / 'data'}")  # fmt: skip
    dataset = CollectedDataset(tmp_path / "data")
    assert dataset.policy_kind == "cycle" and dataset.episodes[0].episode_return == report["return"]["mean"]
    n_actions = len(SPACEINVADERS.action_names)
    assert np.array_equal(dataset.action_codes, np.arange(len(dataset)) % n_actions)

    first_codes = []
    takeover = TakeoverPolicy(load_policy("cycle", SPACEINVADERS), load_policy("random", SPACEINVADERS), k=3)
    play_episode(takeover, SPACEINVADERS, SEED, on_step=lambda step: first_codes.append(int(step.action)))
    assert first_codes[:3] == [0, 1, 2]


def test_a_policy_is_refused_an_option_it_does_not_read_and_listed_by_name():
    with pytest.raises(UserError, match=re.escape("checkpoint=x is read by policy=bc|dagger|vlm, not by policy=cycle")):
        load_policy("cycle", SPACEINVADERS, checkpoint="x")
    with pytest.raises(UserError, match="unknown policy 'nope': choose one of bc, cycle, dagger, expert, random, vlm"):
        load_policy("nope", SPACEINVADERS)


def test_a_task_registered_here_is_trained_and_validated_by_the_training_command(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for index in range(2):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(images / f"{index}.png")
    stage = "recipe.stages.pvp_stage1"
    cfg = compose_train(
        "recipe=pvp_stage1", f"data=[{images}]", f"run_dir={tmp_path / 'runs'}", "run=black", "progress=false",
        "val_seeds=[0]", f"~{stage}.tasks.pvp", f"+{stage}.tasks.answer_black={{ratio: 1.0, batch_size: 2}}",
        f"{stage}.steps=2", *MICRO_OVERRIDES,
    )  # fmt: skip
    train_main.__wrapped__(cfg)
    out = capsys.readouterr().out
    stage_dir = tmp_path / "runs" / "black" / "pvp_stage1"
    summary = json.loads((stage_dir / "summary.json").read_text())
    assert list(summary["tasks"]) == ["answer_black"] and set(summary["last_losses"]) == {"answer_black"}
    answer = json.loads((stage_dir / "answer_black.json").read_text())["answer"]
    assert f"answer_black validation: {answer!r}" in out
