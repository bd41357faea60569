"""python -m train recipe=pvp model=tiny data=[FOLDER,...]   (or: torchrun --nproc_per_node=N -m train ...)
python -m train recipe=game game=spaceinvaders data=[DATASET] init=none|CHECKPOINT

Runs the recipe's stages in order, each from the previous stage's final model; a stage already done
is skipped and one that was killed resumes from its latest checkpoint. With `val_seeds`, those
episodes are held out of training and the last stage's model is validated on them (train/validate.py).
"""

import shutil
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from envs import GAMES, UserError, exit_on_user_error, get_game
from train import checkpoint
from train.data import ImageSources, open_collected, parse_seeds
from train.loop import PRECISIONS, StageConfig, start_distributed, train_stage
from train.tasks import GAME, build_tasks
from train.validate import confusion_table, read_report, validate, write_report
from vlm import TRAINING_STAGES, VLM, VLMConfig, build_tokenizer

NEW_MODEL = "none"  # init=none: the first stage starts from a new model of the `model` preset


def game_texts() -> list[str]:
    """Game instructions and action words: the tiny tokenizer learns them as whole tokens."""
    return [f"{spec.instruction} [{spec.name}] {' '.join(spec.action_names)}" for spec in GAMES.values()]


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
                    f"stage {name}: trainable={trainable!r} is neither a list of parts nor one of {sorted(TRAINING_STAGES)}"
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


def validation_dataset(sources: ImageSources, game: str | None, val_seeds: list[int]):
    """The held-out episodes of the one expert dataset of `game` among the sources."""
    if game is None:
        raise UserError(
            f"val_seeds={val_seeds} needs game=<{'|'.join(GAMES)}>: the game whose expert dataset is validated on"
        )
    datasets = sources.expert_datasets(game)
    if len(datasets) != 1:
        raise UserError(f"val_seeds needs exactly one expert dataset of {game} among data=, found {len(datasets)}")
    return open_collected(datasets[0].root, val_seeds)


def describe(summary: dict) -> str:
    return (
        f"{summary['stage']}: {summary['steps']} steps, {summary['samples']} samples in {summary['train_seconds']:.0f} s "
        f"({summary['samples_per_s']} samples/s, {summary['world_size']} process(es)), last losses {summary['last_losses']}"
    )


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    if cfg.precision not in PRECISIONS:
        raise UserError(f"precision={cfg.precision}: choose one of {', '.join(PRECISIONS)}")
    runtime = start_distributed(int(cfg.seed), cfg.precision, bool(cfg.progress))
    torch.set_num_threads(int(cfg.threads))
    stages = stage_configs(cfg)
    game = None if cfg.game is None else get_game(cfg.game).name
    val_seeds = parse_seeds(cfg.val_seeds) or []
    sources = ImageSources([str(s) for s in cfg.data], parse_seeds(cfg.seeds), held_out=val_seeds)
    validation = validation_dataset(sources, game, val_seeds) if val_seeds else None
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
            if GAME in tasks:
                tasks[GAME][0].configure(model)
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
    if runtime.is_main and validation is not None and checkpoint.is_done(last_dir):
        report = read_report(last_dir)
        if report is None or report["seeds"] != validation.seeds:
            report = validate(VLM.from_pretrained(str(checkpoint.final_dir(last_dir))).to(runtime.device), validation)
            write_report(report, last_dir)
        print(confusion_table(report))
    if runtime.is_main and previous is not None:
        if cfg.out:
            shutil.copytree(previous, Path(cfg.out).expanduser(), dirs_exist_ok=True)
            previous = cfg.out
        print(f"model: {previous}")


if __name__ == "__main__":
    main()
