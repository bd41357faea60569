"""python -m train recipe=pvp model=tiny data=[FOLDER,...]   (or: torchrun --nproc_per_node=N -m train ...)
python -m train recipe=game game=spaceinvaders data=[DATASET] init=none|CHECKPOINT

Runs the recipe's stages in order, each from the previous stage's final model; a stage already done
is skipped and one that was killed resumes from its latest checkpoint. With `val_seeds`, those
episodes are held out of training and the last stage's model is validated on them by each of the last
stage's tasks that has a validation metric (the game task: action accuracy and confusion matrix), which
also go to the stage's TensorBoard log (`validation/...`) and its curves.png.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from collect.sources import ImageSources
from core import files
from core.cli import command
from core.errors import UserError, quoted
from core.schema import existing_paths, option, positive, writable_folder
from core.seeds import SEED_MAX, check_seed_list, parse_seeds
from envs.games import GAMES, check_game, get_game
from train import checkpoint, curves
from train.loop import PRECISIONS, STRATEGIES, StageConfig, stage_title, start_distributed, train_stage
from train.tasks import build_tasks
from vlm import PRESETS, TRAINING_STAGES, VLM, VLMConfig, build_tokenizer, card, prompts
from vlm.checkpoint import checked_checkpoint_config, checkpoint_out, load_checked

NEW_MODEL = "none"  # init=none: the first stage starts from a new model of the `model` preset


def known_trainable(key: str, trainable) -> None:
    """A vlm.TRAINING_STAGES name or a list of parts."""
    if not isinstance(trainable, ListConfig | list) and trainable not in TRAINING_STAGES:
        raise UserError(f"{key}={trainable!r} is neither a list of parts nor one of {sorted(TRAINING_STAGES)}")


def vlm_config_fields(key: str, overrides: DictConfig) -> None:
    """VLMConfig fields with values it accepts."""
    try:
        VLMConfig.from_dict(OmegaConf.to_container(overrides))
    except (ValueError, TypeError) as error:
        raise UserError(f"{key}: {error}") from None


def init_checkpoint(key: str, init: str) -> None:
    """none (a new model) or a whole VLM checkpoint folder."""
    if init == NEW_MODEL:
        return
    path = Path(init).expanduser()
    if not path.is_dir():
        raise UserError(
            f"{key}={init} is not a checkpoint folder (VLM.save_pretrained writes one; each stage's is STAGE/final)"
        )
    checked_checkpoint_config(path, key)


@dataclass
class TaskMixing:
    """What every task's recipe entry holds; a task checks its own further options when it is built."""

    ratio: float = option(check=positive)
    batch_size: int = option(minimum=1)


@dataclass
class StageOptions:
    trainable: Any = option(check=known_trainable)
    tasks: dict[str, TaskMixing] = option()
    steps: int = option(minimum=1)
    lr: float = option(check=positive)
    warmup_steps: int = option(minimum=0)
    min_lr_ratio: float = option(minimum=0.0, maximum=1.0)
    weight_decay: float = option(minimum=0.0)
    grad_accum: int = option(minimum=1)
    max_grad_norm: float = option(check=positive)
    save_every: int = option(minimum=1)
    log_every: int = option(minimum=1)


@dataclass
class RecipeOptions:
    stages: dict[str, StageOptions] = option()


@dataclass
class ModelOptions:
    preset: str = option(choices=PRESETS)
    config: Any = option(check=vlm_config_fields)
    extra_trainable: list[str] = option()


@dataclass
class TrainConfig:
    data: list[str] = option(check=existing_paths)
    seeds: Any = option(check=check_seed_list)
    val_seeds: Any = option(check=check_seed_list)
    game: str | None = option(check=check_game)
    init: str | None = option(check=init_checkpoint)
    stages: list[str] | None = option()
    run: str = option()
    run_dir: str = option(check=writable_folder)
    out: str | None = option(check=checkpoint_out)
    seed: int = option(minimum=0, maximum=SEED_MAX)
    threads: int = option(minimum=1)
    precision: str = option(choices=PRECISIONS)
    strategy: str = option(choices=STRATEGIES)
    progress: bool = option()
    recipe: RecipeOptions = option()
    model: ModelOptions = option()


def game_texts() -> list[str]:
    """Game instructions and action words: the tiny tokenizer learns them as whole tokens."""
    return [
        f"{prompts.game_instruction(spec.objective, spec.tips, spec.action_names)} [{spec.name}] "
        f"{' '.join(spec.action_names)}"
        for spec in GAMES.values()
    ]


def new_model(model_cfg: DictConfig) -> VLM:
    """A new model of the preset with the `model.config` overrides; settings that do not make a model (e.g.
    no LLM layer for LoRA to adapt) are one UserError, raised before anything is written."""
    config = VLMConfig.preset(model_cfg.preset, **OmegaConf.to_container(model_cfg.config))
    tokenizer = None if config.llm_path else build_tokenizer(game_texts(), vocab_size=config.tokenizer_vocab_size)
    try:
        return VLM.from_config(config, tokenizer=tokenizer)
    except (ValueError, RuntimeError) as error:  # peft's refusals are ValueErrors
        raise UserError(f"model.config: these settings do not build a model ({quoted(error)})") from None


def stage_configs(cfg: DictConfig) -> list[StageConfig]:
    """The recipe's stages in order; `trainable` names a vlm.TRAINING_STAGES entry or lists parts."""
    stages = []
    for name, stage in cfg.recipe.stages.items():
        values = OmegaConf.to_container(stage, resolve=True)
        trainable = values.pop("trainable")
        if isinstance(trainable, str):
            trainable = [part for part, on in TRAINING_STAGES[trainable].items() if on]
        parts = list(dict.fromkeys([*trainable, *cfg.model.extra_trainable]))
        stages.append(StageConfig(name=name, trainable=parts, **values))
    if cfg.stages is not None:
        unknown = sorted(set(cfg.stages) - {s.name for s in stages})
        if unknown:
            raise UserError(
                f"stages={list(cfg.stages)}: {unknown} not in the recipe (its stages: {[s.name for s in stages]})"
            )
    return stages


def describe(summary: dict) -> str:
    return (
        f"{summary['stage']}: {summary['steps']} steps, {summary['samples']} samples "
        f"in {summary['train_seconds']:.0f} s "
        f"({summary['samples_per_s']} samples/s, {summary['world_size']} process(es)), "
        f"last losses {summary['last_losses']}"
    )


def log_validation(stage_dir: Path, metrics: dict[str, float]) -> None:
    """The validation metrics as TensorBoard scalars at the stage's last step, and its curves drawn again with
    them."""
    steps = checkpoint.read_summary(stage_dir)["steps"]
    curves.log_scalars(stage_dir / curves.TB_DIR, curves.validation_scalars(metrics), steps)
    curves.write_curves(stage_dir, stage_title(stage_dir))


@command("train", TrainConfig)
def main(cfg: DictConfig) -> None:
    runtime = start_distributed(int(cfg.seed), cfg.precision, bool(cfg.progress), cfg.strategy)
    torch.set_num_threads(int(cfg.threads))
    stages = stage_configs(cfg)
    game = None if cfg.game is None else get_game(cfg.game).name
    val_seeds = parse_seeds(cfg.val_seeds) or []
    sources = ImageSources([str(s) for s in cfg.data], parse_seeds(cfg.seeds), held_out=val_seeds)
    # Every stage's tasks and the validation are built now, so that an option of a later stage that cannot
    # work stops the command before the first stage trains.
    stage_tasks = {
        stage.name: build_tasks(stage.tasks, sources, game, val_seeds if stage is stages[-1] else None)
        for stage in stages
    }
    validators = stage_tasks[stages[-1].name][0]  # a task validates only where it was given val_seeds
    run_dir = Path(cfg.run_dir).expanduser() / cfg.run
    init = None if cfg.init in (None, NEW_MODEL) else Path(cfg.init).expanduser()
    previous = None if init is None else str(init)
    for stage in stages:
        stage_dir = run_dir / stage.name
        selected = cfg.stages is None or stage.name in cfg.stages
        if selected and not checkpoint.is_done(stage_dir):
            tasks, left_out = stage_tasks[stage.name]
            model = (load_checked(Path(previous), "init") if previous else new_model(cfg.model)).to(runtime.device)
            for stage_task in tasks.values():
                stage_task.task.configure(model)
            if runtime.is_main:
                print(
                    f"{stage.name}: training {stage.trainable} on {len(sources)} images, tasks {sorted(tasks)}"
                    + "".join(f"; {name} left out: {why}" for name, why in left_out.items())
                    + f"; from {previous or 'a new ' + cfg.model.preset + ' model'}; in {stage_dir}"
                )
            train_stage(model, stage, tasks, stage_dir, runtime)
        if checkpoint.is_done(stage_dir):
            previous = str(checkpoint.final_dir(stage_dir))
            if selected and runtime.is_main:
                print(describe(checkpoint.read_summary(stage_dir)))
    last_dir = run_dir / stages[-1].name
    if runtime.is_main and checkpoint.is_done(last_dir):

        def load_final() -> VLM:
            return VLM.from_pretrained(str(checkpoint.final_dir(last_dir))).to(runtime.device)

        metrics = {}
        for stage_task in validators.values():
            validation = stage_task.task.validate(load_final, last_dir)
            if validation is not None:
                print(validation.text)
                metrics |= validation.metrics
        if metrics:
            log_validation(last_dir, metrics)
            final = checkpoint.final_dir(last_dir)
            card.write_card(final, str(final))  # again, now with the validation
    if runtime.is_main and previous is not None:
        if cfg.out:
            files.write_atomically(Path(cfg.out).expanduser(), lambda tmp: shutil.copytree(previous, tmp))
            previous = cfg.out
        print(f"model: {previous}")


if __name__ == "__main__":
    main()
