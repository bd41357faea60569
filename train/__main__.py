"""python -m train recipe=pvp model=tiny data=[FOLDER,...]   (or: torchrun --nproc_per_node=N -m train ...)
python -m train recipe=game game=spaceinvaders data=[DATASET] init=none|CHECKPOINT

Runs the recipe's stages in order, each from the previous stage's final model; a stage already done
is skipped and one that was killed resumes from its latest checkpoint. With `val_seeds`, those
episodes are held out of training and the last stage's model is validated on them by each of the last
stage's tasks that has a validation metric (the game task: action accuracy and confusion matrix).
"""

import shutil
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from collect.sources import ImageSources
from core.cli import command
from core.errors import UserError
from core.seeds import parse_seeds
from envs.games import GAMES, get_game
from train import checkpoint
from train.loop import PRECISIONS, StageConfig, start_distributed, train_stage
from train.tasks import build_tasks
from vlm import TRAINING_STAGES, VLM, VLMConfig, build_tokenizer, prompts

NEW_MODEL = "none"  # init=none: the first stage starts from a new model of the `model` preset


def game_texts() -> list[str]:
    """Game instructions and action words: the tiny tokenizer learns them as whole tokens."""
    return [
        f"{prompts.game_instruction(spec.objective, spec.tips, spec.action_names)} [{spec.name}] "
        f"{' '.join(spec.action_names)}"
        for spec in GAMES.values()
    ]


def new_model(model_cfg: DictConfig) -> VLM:
    config = VLMConfig.preset(model_cfg.preset, **OmegaConf.to_container(model_cfg.config))
    tokenizer = None if config.llm_path else build_tokenizer(game_texts(), vocab_size=config.tokenizer_vocab_size)
    return VLM.from_config(config, tokenizer=tokenizer)


def stage_configs(cfg: DictConfig) -> list[StageConfig]:
    """The recipe's stages in order; `trainable` names a vlm.TRAINING_STAGES entry or lists parts."""
    stages = []
    for name, stage in cfg.recipe.stages.items():
        values = OmegaConf.to_container(stage, resolve=True)
        trainable = values.pop("trainable")
        if isinstance(trainable, str):
            if trainable not in TRAINING_STAGES:
                raise UserError(
                    f"stage {name}: trainable={trainable!r} is neither a list of parts "
                    f"nor one of {sorted(TRAINING_STAGES)}"
                )
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


@command("train")
def main(cfg: DictConfig) -> None:
    if cfg.precision not in PRECISIONS:
        raise UserError(f"precision={cfg.precision}: choose one of {', '.join(PRECISIONS)}")
    runtime = start_distributed(int(cfg.seed), cfg.precision, bool(cfg.progress))
    torch.set_num_threads(int(cfg.threads))
    stages = stage_configs(cfg)
    game = None if cfg.game is None else get_game(cfg.game).name
    val_seeds = parse_seeds(cfg.val_seeds) or []
    sources = ImageSources([str(s) for s in cfg.data], parse_seeds(cfg.seeds), held_out=val_seeds)
    # Built now so that a validation that cannot run stops the command before any training.
    validators = build_tasks(stages[-1].tasks, sources, game, val_seeds)[0] if val_seeds else {}
    run_dir = Path(cfg.run_dir).expanduser() / cfg.run
    init = None if cfg.init in (None, NEW_MODEL) else Path(cfg.init).expanduser()
    if init is not None and not init.is_dir():
        raise UserError(
            f"init={cfg.init} is not a checkpoint folder (VLM.save_pretrained writes one; each stage's is STAGE/final)"
        )
    previous = None if init is None else str(init)
    for stage in stages:
        stage_dir = run_dir / stage.name
        selected = cfg.stages is None or stage.name in cfg.stages
        if selected and not checkpoint.is_done(stage_dir):
            tasks, left_out = build_tasks(stage.tasks, sources, game)
            model = (VLM.from_pretrained(previous) if previous else new_model(cfg.model)).to(runtime.device)
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

        for stage_task in validators.values():
            report = stage_task.task.validate(load_final, last_dir)
            if report is not None:
                print(report)
    if runtime.is_main and previous is not None:
        if cfg.out:
            shutil.copytree(previous, Path(cfg.out).expanduser(), dirs_exist_ok=True)
            previous = cfg.out
        print(f"model: {previous}")


if __name__ == "__main__":
    main()
