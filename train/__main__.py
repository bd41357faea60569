"""python -m train recipe=pvp model=tiny data=[FOLDER,...]   (or: torchrun --nproc_per_node=N -m train ...)

Runs the recipe's stages in order, each from the previous stage's final model; a stage already done
is skipped and one that was killed resumes from its latest checkpoint.
"""
import shutil
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from envs import GAMES, UserError, exit_on_user_error
from train import checkpoint
from train.data import ImageSources, parse_seeds
from train.loop import PRECISIONS, StageConfig, start_distributed, train_stage
from train.tasks import build_tasks
from vlm import TRAINING_STAGES, VLM, VLMConfig, build_tokenizer


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
                raise UserError(f"stage {name}: trainable={trainable!r} is neither a list of parts nor one of {sorted(TRAINING_STAGES)}")
            trainable = [part for part, on in TRAINING_STAGES[trainable].items() if on]
        parts = list(dict.fromkeys([*trainable, *cfg.model.extra_trainable]))
        stages.append(StageConfig(name=name, trainable=parts, **values))
    if cfg.stages is not None:
        unknown = sorted(set(cfg.stages) - {s.name for s in stages})
        if unknown:
            raise UserError(f"stages={list(cfg.stages)}: {unknown} not in the recipe (its stages: {[s.name for s in stages]})")
    return stages


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
    sources = ImageSources([str(s) for s in cfg.data], parse_seeds(cfg.seeds))
    run_dir = Path(cfg.run_dir).expanduser() / cfg.run
    if cfg.init is not None and not Path(cfg.init).expanduser().is_dir():
        raise UserError(f"init={cfg.init} is not a checkpoint folder (VLM.save_pretrained writes one; each stage's is STAGE/final)")
    previous = None if cfg.init is None else str(Path(cfg.init).expanduser())
    for stage in stages:
        stage_dir = run_dir / stage.name
        selected = cfg.stages is None or stage.name in cfg.stages
        if selected and not checkpoint.is_done(stage_dir):
            tasks, left_out = build_tasks(stage.tasks, sources)
            model = (VLM.from_pretrained(previous) if previous else new_model(cfg.model)).to(runtime.device)
            if runtime.is_main:
                print(f"{stage.name}: training {stage.trainable} on {len(sources)} images, tasks {sorted(tasks)}"
                      + "".join(f"; {name} left out: {why}" for name, why in left_out.items())
                      + f"; from {previous or 'a new ' + cfg.model.preset + ' model'}; in {stage_dir}")
            train_stage(model, stage, tasks, stage_dir, runtime)
        if checkpoint.is_done(stage_dir):
            previous = str(checkpoint.final_dir(stage_dir))
            if selected and runtime.is_main:
                print(describe(checkpoint.read_summary(stage_dir)))
    if runtime.is_main and previous is not None:
        if cfg.out:
            shutil.copytree(previous, Path(cfg.out).expanduser(), dirs_exist_ok=True)
            previous = cfg.out
        print(f"model: {previous}")


if __name__ == "__main__":
    main()
