"""Bad input, as a new user types it: every row is one command, its overrides and the line it must print.

Each row runs the command's own `main` in this process and expects exit code 2, exactly one line on stderr
that starts with `error: ` and contains the expected text, no traceback, and nothing written. To add a case,
add a row; `{name}` in an override is a path from the `damaged` fixture (broken checkpoints, expert
folders, datasets and images) or `{tmp}`, a fresh folder.
"""

import json
import os
import pickle
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import conftest
import numpy as np
import pytest
from conftest import REPO_ROOT, run_module
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from rl_zoo3.utils import get_saved_hyperparams
from safetensors.torch import load_file, save_file, save_model

import collect.__main__
import eval.__main__
import eval.reconstruct
import experts.train
import train.__main__
import train.bc
import train.dagger
import vlm.export
from agents.bc_policy import BCConfig, is_bc_checkpoint, save_bc
from agents.vlm_policy import check_trained_for
from core import files
from core.errors import UserError
from envs.games import get_game
from envs.pipeline import load_vecnormalize
from envs.zoo import saved_hyperparams
from train.tasks.game import GameTask
from vlm import VLMConfig
from vlm.checkpoint import checked_checkpoint_config

COMMANDS = {  # name: (main, its config)
    "eval": (eval.__main__.main, "eval"),
    "collect": (collect.__main__.main, "collect"),
    "train": (train.__main__.main, "train"),
    "train.bc": (train.bc.main, "bc"),
    "train.dagger": (train.dagger.main, "dagger"),
    "eval.reconstruct": (eval.reconstruct.main, "reconstruct"),
    "experts.train": (experts.train.main, "train_expert"),
    "vlm.export": (vlm.export.main, "vlm_export"),
}
SHIPPED_CR = REPO_ROOT / "checkpoints" / "game_carracing"
SHIPPED_PVP = REPO_ROOT / "checkpoints" / "pvp_tiny"
SHIPPED_SI_EXPERT = REPO_ROOT / "experts" / "ppo" / "SpaceInvadersNoFrameskip-v4_1"
SI_AGENT = SHIPPED_SI_EXPERT / "SpaceInvadersNoFrameskip-v4.zip"
CR_EXPERT = REPO_ROOT / "experts" / "ppo_lstm" / "CarRacing-v3_1"
CR_AGENT = CR_EXPERT / "CarRacing-v3.zip"
IMAGES = "images={images}"
SI_RANDOM = ["game=spaceinvaders", "policy=random"]
BC_CHECKPOINT = ["game=carracing", "policy=bc"]
DAGGER_CR = ["game=carracing", "init=" + str(SHIPPED_CR), "data=[{damaged_dataset}]"]

TABLE = [
    # overrides: types, ranges, choices
    ("eval", ["episodes=abc"], "episodes='abc' is not a whole number"),
    ("eval", ["episodes=0"], "episodes=0 is out of range"),
    ("eval", ["episodes=2.5"], "episodes=2.5 is not a whole number"),
    ("eval", ["seed=-5"], "seed=-5 is out of range: give a whole number >= 0"),
    ("eval", ["seed=4294967296"], "seed=4294967296 is out of range: give a whole number >= 0 and <= 4294967295"),
    ("eval", ["video=no"], "video='no': give true or false"),
    ("eval", ["fast_env=1"], "fast_env=1: give true or false"),
    ("eval", ["sticky_actions=maybe"], "sticky_actions='maybe': give true or false"),
    ("eval", ["workers=0"], "workers=0 is out of range"),
    ("eval", ["workers=two"], "workers='two' is not a whole number"),
    ("eval", ["game=pong"], "unknown game 'pong'"),
    ("eval", ["policy=dqn"], "unknown policy 'dqn'"),
    ("eval", ["policy=dagger", "beta=2"], "beta=2 is out of range: give a number >= 0.0 and <= 1.0"),
    ("eval", ["policy=expert", "deterministic=sometimes"], "deterministic='sometimes': give true or false"),
    ("eval", ["game=carracing", "sticky_actions=true"], "sticky_actions=true: carracing has no sticky-action"),
    ("collect", ["episodes=abc"], "episodes='abc' is not a whole number"),
    ("collect", ["seed=-5"], "seed=-5 is out of range"),
    ("collect", ["overwrite=yes"], "overwrite='yes': give true or false"),
    ("collect", ["repair=1"], "repair=1: give true or false"),
    ("collect", ["workers=-1"], "workers=-1 is out of range"),
    ("collect", ["episodes=3", "seed=4294967294"], "would play seeds up to 4294967296, past the largest seed"),
    ("eval", ["episodes=2", "seed=4294967295"], "give seed <= 4294967294"),
    ("train.dagger", [*DAGGER_CR, "rollout_seed=4294967290"], "rollout_seed=4294967290 with 40 episodes would play"),
    ("train", ["data=[{tmp}/none]"], "does not exist"),
    ("train", ["data=[{images}]", "seeds=[a,b]"], "seeds=['a', 'b']: give a list like"),
    ("train", ["data=[{images}]", "seeds=5-2"], "seeds='5-2': give a list like"),
    ("train", ["data=[{images}]", "val_seeds=-1"], "val_seeds=-1: give a list like"),
    ("train", ["data=[{images}]", "recipe.stages.pvp_stage1.steps=-3"], "recipe.stages.pvp_stage1.steps=-3 is out"),
    ("train", ["data=[{images}]", "recipe.stages.pvp_stage1.lr=0"], "recipe.stages.pvp_stage1.lr=0 is out of range"),
    ("train", ["data=[{images}]", "recipe.stages.pvp_stage2.warmup_steps=x"], "warmup_steps='x' is not a whole"),
    ("train", ["data=[{images}]", "recipe.stages.pvp_stage1.tasks.pvp.batch_size=0"], "batch_size=0 is out of"),
    ("train", ["data=[{images}]", "recipe.stages.pvp_stage3.tasks.game.ratio=-1"], "ratio=-1 is out of range"),
    ("train", ["data=[{images}]", "recipe.stages.pvp_stage1.min_lr_ratio=2"], "min_lr_ratio=2 is out of range"),
    ("train", ["data=[{images}]", "recipe.stages.pvp_stage3.tasks.pvp.queries_per_image=0"], "queries_per_image"),
    ("train", ["data=[{images}]", "recipe.stages.pvp_stage1.trainable=all"], "is neither a list of parts nor"),
    ("train", ["data=[{images}]", "precision=fp8"], "precision='fp8': choose one of auto, bf16, fp32"),
    ("train", ["data=[{images}]", "progress=no"], "progress='no': give true or false"),
    ("train", ["data=[{images}]", "threads=0"], "threads=0 is out of range"),
    ("train", ["data=[{images}]", "game=pong"], "unknown game 'pong'"),
    ("train", ["data=[{images}]", "model=tiny", "+model.config.vision_stem=round"], "vision_stem='round'"),
    ("train", ["data=[{images}]", "model=tiny", "+model.config.colour=1"], "unknown VLMConfig fields ['colour']"),
    ("train", ["data=[{images}]", "stages=[pvp_stage9]"], "['pvp_stage9'] not in the recipe"),
    ("train", ["data=[{images}]", "model=tiny", "+model.config.llm_layers=0"], "these settings do not build a model"),
    ("train.bc", ["game=spaceinvaders", "data=[{images}]", "steps=-3"], "steps=-3 is out of range"),
    ("train.bc", ["game=spaceinvaders", "data=[{images}]", "lr=-1"], "lr=-1 is out of range"),
    ("train.bc", ["game=spaceinvaders", "data=[{images}]", "seed=99999999999"], "seed=99999999999 is out of range"),
    ("train.dagger", ["game=carracing", "init=" + str(SHIPPED_CR), "data=[{images}]"], "is not a collected dataset"),
    ("train.dagger", ["game=carracing", "init=" + str(SHIPPED_CR), "data=[{damaged_dataset}]"], "holds spaceinvaders"),
    ("train.dagger", ["game=spaceinvaders", "init={si_checkpoint}", "data=[{damaged_dataset}]"], "no dataset in data="),
    ("eval.reconstruct", ["checkpoint=" + str(SHIPPED_CR), IMAGES, "n=0"], "n=0 is out of range"),
    ("eval.reconstruct", ["checkpoint=" + str(SHIPPED_CR), IMAGES, "batch=x"], "batch='x' is not a whole number"),
    ("eval.reconstruct", ["checkpoint=" + str(SHIPPED_CR), IMAGES, "seeds=[x]"], "seeds=['x']: give a list"),
    ("experts.train", ["steps=-3"], "steps=-3 is out of range"),
    ("experts.train", ["algo=ppo2"], "algo='ppo2': choose one of"),
    ("experts.train", ["save_every=0"], "save_every=0 is out of range"),
    ("experts.train", ["init={tmp}/none.zip"], "is not an agent zip"),
    ("experts.train", ["hyperparams=foo"], "hyperparams='foo' is not a group of hyperparameters: give e.g."),
    ("experts.train", ["hyperparams={{n_stepz:8}}"], "hyperparams: n_stepz is not a hyperparameter of ppo_lstm"),
    ("experts.train", ["hyperparams={{n_steps:-3}}"], "hyperparams: n_steps=-3 is not a whole number >= 1"),
    ("experts.train", ["hyperparams={{gamma:2}}"], "hyperparams: gamma=2 is not a number in [0, 1]"),
    ("experts.train", ["hyperparams={{learning_rate:fast}}"], "learning_rate='fast' is not a number > 0 or a linear"),
    ("experts.train", ["hyperparams={{ent_coef:high}}"], "ent_coef='high' is not a number (the zoo's recipe has"),
    ("experts.train", ["export_only=true"], "carracing_ppo_lstm_seed0 holds no checkpoint to export: train it"),
    # output folders that cannot be written: refused before any episode or step
    ("eval", ["policy=random", "out={blocker}/results"], "not a writable folder"),
    ("collect", ["policy=random", "out={blocker}/data"], "not a writable folder"),
    ("train", ["data=[{images}]", "run_dir={blocker}/runs"], "not a writable folder"),
    ("eval.reconstruct", ["checkpoint=" + str(SHIPPED_CR), IMAGES, "out={blocker}/r"], "not a writable folder"),
    # files read without validation: damaged checkpoints, expert folders, images, datasets
    ("eval", ["policy=vlm", "checkpoint={truncated_weights}"], "model.safetensors is damaged"),
    ("eval", ["policy=vlm", "checkpoint={malformed_config}"], "config.json is damaged"),
    ("eval", ["policy=vlm", "checkpoint={incomplete_config}"], "config.json is damaged (no llm section)"),
    ("eval", ["policy=vlm", "checkpoint={truncated_tokenizer}"], "tokenizer.json is damaged"),
    ("eval", ["policy=vlm", "checkpoint={renamed_tensor}"], "does not load (Error(s) in loading"),
    ("eval", ["policy=vlm", "checkpoint={games_list}"], "is not {game: [action words]}"),
    ("eval", ["+episode=1"], "episode is not an option of eval: see configs/eval.yaml"),
    ("eval", ["policy=random", "out="], "out is empty: give the folder to write to"),
    ("train", ["data=[{images}]", "out=" + str(SHIPPED_CR)], "is a shipped checkpoint: write to a new folder"),
    ("vlm.export", ["checkpoint=" + str(SHIPPED_CR), "lora=merged", "out=" + str(SHIPPED_PVP)], "is a shipped"),
    ("train", ["data=[{images}]", "init={truncated_weights}"], "model.safetensors is damaged"),
    ("eval", ["game=carracing", "policy=bc", "checkpoint={truncated_bc}"], "model.safetensors is damaged"),
    ("eval", ["game=carracing", "policy=bc", "checkpoint={bc_config_of_another_net}"], "model.safetensors is damaged"),
    ("eval", ["game=carracing", "policy=bc", "checkpoint=" + str(SHIPPED_CR)], "is not a BC checkpoint"),
    ("eval.reconstruct", ["checkpoint={truncated_weights}", IMAGES], "model.safetensors is damaged"),
    ("eval.reconstruct", ["checkpoint=" + str(SHIPPED_CR), "images={bad_images}"], "is not a readable image"),
    ("eval", ["game=carracing", "policy=expert", "expert={truncated_stats}"], "is not readable VecNormalize"),
    ("eval", ["game=carracing", "policy=expert", "expert={truncated_zip}"], "does not load"),
    ("train", ["data=[{damaged_dataset}]", "run=x"], "does not match its CRC32"),
    ("train", ["data=[{blocker}]"], "a_file is a file, not a folder: give a folder of PNG/JPEG images"),
    ("experts.train", ["init={not_an_agent}"], "agent.zip is not an agent zip (Error: the file"),
    ("experts.train", ["algo=ppo", "init=" + str(CR_AGENT)], "RecurrentActorCriticCnnPolicy, a policy ppo does not"),
    ("experts.train", ["algo=ppo", "init=" + str(SI_AGENT)], "sees Box(0, 255, (4, 84, 84), uint8), but carracing's"),
    ("eval", [*BC_CHECKPOINT, "checkpoint={bc_side_8}"], "(side=8 is not a whole number >= 36): config.json is"),
    ("eval", [*BC_CHECKPOINT, "checkpoint={bc_no_stack}"], "(n_stack=0 is not a whole number >= 1)"),
    ("eval", [*BC_CHECKPOINT, "checkpoint={bc_stack_as_text}"], "(n_stack='2' is not a whole number >= 1)"),
    ("eval", [*BC_CHECKPOINT, "checkpoint={bc_actions_as_text}"], "(action_names='NOOP' is not a list of action"),
    # dataset indexes that parse but are not what collect writes
    ("train", ["data=[{index_without_crc32}]", "run=x"], "is damaged (episode 0 has no crc32); restore it, or"),
    ("collect", [*SI_RANDOM, "out={index_length_many}"], "(episode 0 has length='many'): restore it, or pass"),
    ("eval.reconstruct", ["checkpoint=" + str(SHIPPED_CR), "images={index_vlmplay_null}"], "entry is None, not an"),
    ("train", ["data=[{episode_metadata_list}]", "run=x"], "metadata.json holds a list, not an object; re-collect"),
    # silent wrong work: a checkpoint of one game played on another
    ("eval", ["game=spaceinvaders", "policy=vlm", "checkpoint=" + str(SHIPPED_CR)], "was trained for carracing"),
    # code in an expert folder: refused, never run
    ("eval", ["game=carracing", "policy=expert", "expert={crafted_args}"], "args.yml is malformed"),
    ("eval", ["game=carracing", "policy=expert", "expert={crafted_config}"], "config.yml is unreadable"),
    ("eval", ["game=carracing", "policy=expert", "expert={crafted_stats}"], "which VecNormalize statistics never"),
    ("eval", ["game=carracing", "policy=expert", "expert={unknown_wrapper}"], "env pipeline does not fit the agent"),
    ("eval", ["game=carracing", "policy=expert", "expert={other_frame_stack}"], "Unexpected observation shape"),
    # artifacts it did not create: a shipped expert is not replaced
    ("experts.train", ["game=spaceinvaders", "algo=ppo", "out=" + str(SHIPPED_SI_EXPERT)], "this run did not export"),
    ("train.bc", ["game=spaceinvaders", "data=[{images}]", "out={vlm_checkpoint}"], "holds no BC checkpoint (README"),
    ("train.bc", ["game=carracing", "data=[{images}]", "out={expert_folder}"], "holds no BC checkpoint (CarRacing"),
    ("eval.reconstruct", ["checkpoint=" + str(SHIPPED_CR), IMAGES, "out={eval_output}"], "holds no reconstruction"),
]


class RunsCode:
    """Unpickled, it would create the file SENTINEL: a vecnormalize.pkl that runs code."""

    def __reduce__(self):
        return (Path.touch, (Path(SENTINEL),))


SENTINEL = "/tmp/vlmplay_bad_input_sentinel"
CRAFTED_YAML = f"!!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ['{SENTINEL}']]\n"


def copy_checkpoint(root: Path, name: str) -> Path:
    folder = root / name
    shutil.copytree(SHIPPED_CR, folder, ignore=shutil.ignore_patterns("*.png"))
    return folder


def copy_expert(root: Path, name: str) -> Path:
    folder = root / name / "CarRacing-v3_1"
    shutil.copytree(CR_EXPERT, folder, ignore=shutil.ignore_patterns("*.csv", "*.png"))
    return folder


def truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def link_frames(source: str, target: str) -> None:
    """copytree's copy of a dataset file: the episode files (frames) as hard links, the JSON files as copies."""
    if source.endswith(".arrow"):
        os.link(source, target)
    else:
        shutil.copy2(source, target)


def copy_dataset(dataset: Path, root: Path, name: str) -> Path:
    folder = root / name
    shutil.copytree(dataset, folder, copy_function=link_frames)
    return folder


def edit_json(path: Path, edit) -> None:
    value = json.loads(path.read_text())
    edit(value)
    path.write_text(json.dumps(value))


def edit_index(folder: Path, edit) -> Path:
    edit_json(folder / "data" / "metadata.json", edit)
    return folder


def edit_first_episode(folder: Path, edit) -> Path:
    return edit_index(folder, lambda metadata: edit(metadata["vlmplay"]["episodes"][0]))


def save_bc_with_config(folder: Path, config: BCConfig, change: dict) -> Path:
    """A BC checkpoint whose config.json was changed by hand: weights of `config`, fields of `change`."""
    save_bc(folder, config.build(), config)
    edit_json(folder / "config.json", lambda values: values.update(change))
    return folder


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("damaged")
    paths = {"images": root / "images", "bad_images": root / "bad_images", "blocker": root / "a_file"}
    paths["blocker"].write_text("")
    paths["images"].mkdir()
    shutil.copy(REPO_ROOT / "checkpoints" / "game_carracing" / "confusion.png", paths["images"] / "frame.png")
    paths["bad_images"].mkdir()
    (paths["bad_images"] / "frame.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")

    paths["truncated_weights"] = copy_checkpoint(root, "truncated_weights")
    truncate(paths["truncated_weights"] / "model.safetensors")
    paths["malformed_config"] = copy_checkpoint(root, "malformed_config")
    truncate(paths["malformed_config"] / "config.json")
    paths["incomplete_config"] = copy_checkpoint(root, "incomplete_config")
    (paths["incomplete_config"] / "config.json").write_text('{"vlm": {}, "vision": {}}')

    paths["si_checkpoint"] = REPO_ROOT / "checkpoints" / "game_spaceinvaders"
    paths["truncated_tokenizer"] = copy_checkpoint(root, "truncated_tokenizer")
    truncate(paths["truncated_tokenizer"] / "tokenizer.json")
    paths["renamed_tensor"] = copy_checkpoint(root, "renamed_tensor")  # whole, but its names are not the model's
    weights = load_file(paths["renamed_tensor"] / "model.safetensors")
    first = sorted(weights)[0]
    weights[first + "_renamed"] = weights.pop(first)
    save_file(weights, paths["renamed_tensor"] / "model.safetensors")
    paths["games_list"] = copy_checkpoint(root, "games_list")
    config = json.loads((paths["games_list"] / "config.json").read_text())
    config["vlm"]["games"] = ["carracing"]
    (paths["games_list"] / "config.json").write_text(json.dumps(config))
    spec = get_game("carracing")
    bc_config = BCConfig(spec.name, list(spec.action_names), spec.n_stack, spec.pipeline_side)
    paths["truncated_bc"] = root / "truncated_bc"
    save_bc(paths["truncated_bc"], bc_config.build(), bc_config)
    truncate(paths["truncated_bc"] / "model.safetensors")
    paths["bc_side_8"] = save_bc_with_config(root / "bc_side_8", bc_config, {"side": 8})
    paths["bc_no_stack"] = save_bc_with_config(root / "bc_no_stack", bc_config, {"n_stack": 0})
    paths["bc_stack_as_text"] = save_bc_with_config(root / "bc_stack_as_text", bc_config, {"n_stack": "2"})
    paths["bc_actions_as_text"] = save_bc_with_config(root / "bc_actions_as_text", bc_config, {"action_names": "NOOP"})
    paths["bc_config_of_another_net"] = root / "bc_config_of_another_net"
    save_bc(paths["bc_config_of_another_net"], bc_config.build(), bc_config)
    other = replace(bc_config, side=2 * bc_config.side)  # the weights of a wider network than config.json says
    save_model(other.build(), str(paths["bc_config_of_another_net"] / "model.safetensors"))

    paths["truncated_stats"] = copy_expert(root, "truncated_stats")
    truncate(paths["truncated_stats"] / "CarRacing-v3" / "vecnormalize.pkl")
    paths["truncated_zip"] = copy_expert(root, "truncated_zip")
    truncate(paths["truncated_zip"] / "CarRacing-v3.zip")
    paths["crafted_args"] = copy_expert(root, "crafted_args")
    (paths["crafted_args"] / "CarRacing-v3" / "args.yml").write_text(CRAFTED_YAML)
    paths["crafted_config"] = copy_expert(root, "crafted_config")
    (paths["crafted_config"] / "CarRacing-v3" / "config.yml").write_text(CRAFTED_YAML)
    for name, old, new in [
        ("unknown_wrapper", "GrayscaleObservation", "NoSuchWrapper"),
        ("other_frame_stack", "- - frame_stack\n    - 2", "- - frame_stack\n    - 3"),
    ]:
        paths[name] = copy_expert(root, name)
        config_yml = paths[name] / "CarRacing-v3" / "config.yml"
        assert old in config_yml.read_text()
        config_yml.write_text(config_yml.read_text().replace(old, new))
    paths["crafted_stats"] = copy_expert(root, "crafted_stats")
    (paths["crafted_stats"] / "CarRacing-v3" / "vecnormalize.pkl").write_bytes(pickle.dumps(RunsCode()))

    paths["not_an_agent"] = root / "agent.zip"
    shutil.copy(SHIPPED_CR / "config.json", paths["not_an_agent"])
    paths["vlm_checkpoint"] = copy_checkpoint(root, "vlm_checkpoint")
    paths["expert_folder"] = copy_expert(root, "expert_folder")
    paths["eval_output"] = root / "eval_output"
    result = run_module("eval", *SI_RANDOM, "episodes=1", "video=false", f"out={paths['eval_output']}")
    assert result.returncode == 0, result.stderr

    dataset = paths["dataset"] = root / "dataset"
    result = run_module("collect", *SI_RANDOM, "episodes=1", f"out={dataset}")
    assert result.returncode == 0, result.stderr
    paths["damaged_dataset"] = root / "damaged_dataset"
    shutil.copytree(dataset, paths["damaged_dataset"])
    episode = next((paths["damaged_dataset"] / "data" / "0").glob("*.arrow"))
    data = bytearray(episode.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the frames
    episode.write_bytes(bytes(data))
    paths["index_without_crc32"] = edit_first_episode(
        copy_dataset(dataset, root, "index_without_crc32"), lambda entry: entry.pop("crc32")
    )
    paths["index_length_many"] = edit_first_episode(
        copy_dataset(dataset, root, "index_length_many"), lambda entry: entry.update(length="many")
    )
    paths["index_vlmplay_null"] = edit_index(
        copy_dataset(dataset, root, "index_vlmplay_null"), lambda metadata: metadata.update(vlmplay=None)
    )
    paths["episode_metadata_list"] = copy_dataset(dataset, root, "episode_metadata_list")
    episode_metadata = paths["episode_metadata_list"] / "data" / "0" / "metadata.json"
    episode_metadata.write_text(json.dumps([json.loads(episode_metadata.read_text())]))
    return paths


def run_command(name: str, overrides: list[str], capsys) -> tuple[int, str]:
    main, config = COMMANDS[name]
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name=config, overrides=overrides)
    with pytest.raises(SystemExit) as exit_:
        main.__wrapped__(cfg)
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("command, overrides, expected", TABLE, ids=[f"{c} {' '.join(o)}" for c, o, _ in TABLE])
def test_bad_input_is_one_clear_line_before_any_work(damaged, tmp_path, capsys, command, overrides, expected):
    paths = {key: str(value) for key, value in damaged.items()} | {"tmp": str(tmp_path / "t")}
    out = tmp_path / "out"
    defaults = {  # where each command would write: it must stay absent
        "eval": [f"out={out}"],
        "collect": [f"out={out}"],
        "train": [f"run_dir={out}", "run=bad"],
        "train.bc": [f"run_dir={out}"],
        "train.dagger": [f"run_dir={out}"],
        "eval.reconstruct": [f"out={out}"],
        "experts.train": [f"run_dir={out}", "progress=false"],
        "vlm.export": [],  # its rows give out=
    }[command]
    Path(SENTINEL).unlink(missing_ok=True)
    code, err = run_command(command, defaults + [o.format(**paths) for o in overrides], capsys)
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    assert not out.exists() and not (tmp_path / "t").exists()
    assert not Path(SENTINEL).exists(), "a file of the expert folder ran code"


HYDRA_REFUSALS = [  # Hydra's own checks, before the schema's: run as a user types them
    ("eval", "foo=1", "error: foo is not an option of eval: see configs/eval.yaml"),
    ("eval", "episodes=[", "error: cannot read the override 'episodes=['"),
    ("train", "model=huge", "error: model=huge: there is no configs/model/huge.yaml; choose one of full, tiny"),
    ("eval", "--episodes", "error: --episodes: options are key=value, e.g. episodes=VALUE"),
    ("eval", "-m", "error: -m: sweeps are not supported"),
]


@pytest.mark.parametrize("command, override, expected", HYDRA_REFUSALS, ids=[o for _, o, _ in HYDRA_REFUSALS])
def test_overrides_hydra_refuses_are_one_clear_line(tmp_path, command, override, expected):
    result = run_module(command, override, f"hydra.run.dir={tmp_path / 'hydra'}")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(expected), result.stderr
    assert not (tmp_path / "hydra").exists()


def test_the_shipped_expert_is_untouched_by_a_refused_export():
    zip_file = SHIPPED_SI_EXPERT / "SpaceInvadersNoFrameskip-v4.zip"
    assert zip_file.is_file() and len(list(SHIPPED_SI_EXPERT.glob("*.monitor.csv"))) == 8


def test_experts_train_exports_to_a_new_folder_unless_told_to_replace(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(experts.train, "EXPERTS_DIR", tmp_path)
    run_dir, shipped = tmp_path / "runs" / "run", tmp_path / "ppo" / "Env-v0_1"
    shipped.mkdir(parents=True)
    (shipped / "Env-v0.zip").write_text("shipped")
    default = OmegaConf.create({"algo": "ppo", "out": "", "overwrite": False})
    assert experts.train.export_folder(default, "Env-v0", run_dir) == tmp_path / "ppo" / "Env-v0_2"
    (shipped / "progress.json").write_text(json.dumps({"exported_by": str(run_dir.resolve())}))  # its own export
    assert experts.train.export_folder(default, "Env-v0", run_dir) == shipped
    (shipped / "progress.json").unlink()
    explicit = OmegaConf.create({"algo": "ppo", "out": str(shipped), "overwrite": False})
    with pytest.raises(UserError, match="this run did not export"):
        experts.train.export_folder(explicit, "Env-v0", run_dir)
    explicit.overwrite = True
    assert experts.train.export_folder(explicit, "Env-v0", run_dir) == shipped
    assert "warning: replacing the shipped expert" in capsys.readouterr().err


def test_collect_refuses_an_episode_whose_metadata_is_not_an_object(damaged, capsys):
    """collect checks each listed episode behind a progress bar (erased in a terminal): its last line is the error."""
    folder = damaged["episode_metadata_list"]
    before = (folder / "data" / "0" / "metadata.json").read_text()
    code, err = run_command("collect", [*SI_RANDOM, f"out={folder}"], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2 and "error: " in last and "metadata.json holds a list, not an object: nothing was changed" in last
    assert (folder / "data" / "0" / "metadata.json").read_text() == before


def test_train_bc_replaces_its_own_checkpoint_and_another_folder_only_when_told(damaged, tmp_path, capsys):
    common = ["game=spaceinvaders", f"data=[{damaged['dataset']}]", "imitate=[random]", "val_seeds=null", "steps=2",
              "batch_size=4", "progress=false"]  # fmt: skip
    out = tmp_path / "bc"
    for _ in range(2):  # the same command again replaces the checkpoint it wrote
        conftest.run_command(train.bc.main, "bc", *common, f"out={out}")
    assert is_bc_checkpoint(out) and (out / "model.safetensors").is_file()

    vlm = copy_checkpoint(tmp_path, "vlm")
    before = sorted(path.name for path in vlm.iterdir())
    code, err = run_command("train.bc", [*common, f"out={vlm}"], capsys)
    assert code == 2 and "holds no BC checkpoint" in err and sorted(p.name for p in vlm.iterdir()) == before
    conftest.run_command(train.bc.main, "bc", *common, f"out={vlm}", "overwrite=true")
    assert is_bc_checkpoint(vlm) and not (vlm / "tokenizer.json").exists()


def test_reconstruct_writes_into_its_own_output_and_another_folder_only_when_told(damaged, tmp_path):
    def check(folder: Path, overwrite: bool = False) -> None:
        files.check_replaceable(folder, "out", "reconstruction result", eval.reconstruct.is_reconstruction, overwrite)

    own = tmp_path / "reconstruction"
    own.mkdir()
    (own / "0000003.png").write_bytes(b"")
    (own / "0000007.png.tmp").write_bytes(b"")  # what a killed run left
    (own / "results.json").write_text(json.dumps({"mean_re": 1.5, "images": []}))
    check(own)
    check(tmp_path / "new")
    with pytest.raises(UserError, match="no reconstruction result \\(results.json, returns.png\\): choose another"):
        check(damaged["eval_output"])
    check(damaged["eval_output"], overwrite=True)
    (own / "notes.txt").write_text("the user's")
    with pytest.raises(UserError, match="0000003.png, 0000007.png.tmp, notes.txt, results.json"):
        check(own)


def test_a_folder_replaced_by_a_killed_writer_comes_back_whole(tmp_path):
    """A multi-file checkpoint is switched as a folder; a kill between its two renames loses neither."""
    target = tmp_path / "checkpoint"

    def write(pair: str):
        def into(tmp: Path) -> None:
            tmp.mkdir()
            (tmp / "model.zip").write_text(pair)
            (tmp / "vecnormalize.pkl").write_text(pair)

        return into

    files.write_atomically(target, write("old"))
    files.write_atomically(target, write("new"))
    assert {p.read_text() for p in target.iterdir()} == {"new"} and sorted(tmp_path.iterdir()) == [target]
    target.rename(tmp_path / "checkpoint.old")  # killed after the first rename of a switch
    (tmp_path / "checkpoint.tmp").mkdir()
    files.clean_partial(tmp_path)
    assert {p.read_text() for p in target.iterdir()} == {"new"} and sorted(tmp_path.iterdir()) == [target]


def test_a_game_checkpoint_records_its_games_and_an_old_one_warns(capsys):
    spec = get_game("carracing")
    task = GameTask(datasets=[SimpleNamespace(spec=spec)])
    model = SimpleNamespace(config=VLMConfig())
    task.configure(model)
    assert model.config.games == {"carracing": list(spec.action_names)}
    check_trained_for(model.config, spec, "x")
    with pytest.raises(UserError, match="was trained for carracing, not spaceinvaders"):
        check_trained_for(model.config, get_game("spaceinvaders"), "x")
    check_trained_for(VLMConfig(), spec, "old")  # saved before checkpoints recorded their games
    assert "warning: checkpoint=old does not record the games" in capsys.readouterr().err
    assert checked_checkpoint_config(SHIPPED_CR).games == {"carracing": list(spec.action_names)}


def test_expert_files_are_read_safely_and_as_rl_zoo3_reads_them():
    params = CR_EXPERT / "CarRacing-v3"
    zoo, _ = get_saved_hyperparams(str(params), norm_reward=False, test_mode=True)
    assert saved_hyperparams(params) == zoo
    stats = load_vecnormalize(params / "vecnormalize.pkl")
    with open(params / "vecnormalize.pkl", "rb") as file:
        unrestricted = pickle.load(file)
    assert np.array_equal(stats.ret_rms.var, unrestricted.ret_rms.var) and stats.clip_obs == unrestricted.clip_obs
