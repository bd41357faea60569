"""Train an RL-Zoo3 expert with the zoo's own hyperparameters, resumably.

    python -m experts.train game=carracing algo=ppo_lstm steps=4000000

rl_zoo3 builds the envs, hyperparameters and model; this module adds what a 2-core machine needs:
a checkpoint (model + VecNormalize stats) every `save_every` steps in a run folder outside the work
tree, and a resume that continues the step counter and learning-rate schedule where they stopped.
At the end (or with `export_only=true`) the agent is exported in RL-Zoo3's folder layout.
"""

import argparse
import inspect
import io
import json
import pickle
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import rl_zoo3
import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from rl_zoo3 import ALGOS
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.utils import get_wrapper_class
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecTransposeImage

from core import REPO_ROOT
from core.cli import command
from core.errors import UserError
from core.files import clean_partial, write_atomically, write_json_atomically, write_text_atomically
from core.schema import option, writable_folder
from core.seeds import SEED_MAX
from envs.fast_car_racing import register_fast_car_racing
from envs.games import GameSpec, check_game, get_game
from envs.zoo import (
    ARGS_FILE,
    CONFIG_FILE,
    MONITOR_GLOB,
    VECNORMALIZE_FILE,
    agent_zip,
    is_atari,
    params_dir,
    read_zoo_yaml,
)
from experts.learning_curve import plot_learning_curve, read_monitors

ZOO_HYPERPARAMS = Path(rl_zoo3.__file__).parent / "hyperparams"
EXPERTS_DIR = REPO_ROOT / "experts"  # the default export: experts/ALGO/ENV_N in the checkout
OPTIMIZER_MEMBER = "policy.optimizer.pth"  # SB3's name for the optimizer state inside an agent zip
PROGRESS_FILE = "progress.json"
EXPORTED_BY = "exported_by"  # progress.json of an export: the run folder that wrote it
# Hyperparameters rl_zoo3's ExperimentManager takes out of a recipe before the rest go to the algorithm class.
ZOO_KEYS = {
    "n_envs",
    "n_timesteps",
    "normalize",
    "frame_stack",
    "env_wrapper",
    "vec_env_wrapper",
    "callback",
    "monitor_kwargs",
    "env_kwargs",
    "noise_type",
    "noise_std",
}
SET_BY_THE_ZOO = {"self", "env", "seed", "verbose", "device", "tensorboard_log", "_init_setup_model"}
# Hyperparameters that count something (envs, steps, samples, epochs): whole numbers >= 1 (learning_starts >= 0).
COUNT_KEYS = {"n_envs", "n_timesteps", "n_steps", "batch_size", "n_epochs", "frame_stack", "buffer_size"}
COUNT_KEYS |= {"gradient_steps", "train_freq", "target_update_interval"}
START_KEYS = {"learning_starts"}
FRACTION_KEYS = {"gamma", "gae_lambda", "tau", "exploration_fraction"}  # in [0, 1]
SCHEDULE_KEYS = {"learning_rate", "clip_range"}  # a number > 0, or the zoo's linear schedule "lin_<start>"
LINEAR_SCHEDULE_PREFIX = "lin_"


def is_schedule(value) -> bool:
    if isinstance(value, str) and value.startswith(LINEAR_SCHEDULE_PREFIX):
        value = value.removeprefix(LINEAR_SCHEDULE_PREFIX)
        try:
            value = float(value)
        except ValueError:
            return False
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


# What reading a file that is not an SB3 agent zip raises.
ZIP_ERRORS = (
    ValueError,
    KeyError,
    RuntimeError,
    EOFError,
    OSError,
    ImportError,
    zipfile.BadZipFile,
    pickle.UnpicklingError,
)


def not_an_agent_zip(key: str, path: str, why: str = "") -> UserError:
    return UserError(f"{key}={path} is not an agent zip{why}: give the ENV.zip of an RL-Zoo3 folder")


def agent_file(key: str, path: str) -> None:
    if path and not Path(path).expanduser().is_file():
        raise not_an_agent_zip(key, path)


def optional_folder(key: str, path: str) -> None:
    if path:
        writable_folder(key, path)


@dataclass
class TrainExpertConfig:
    game: str = option(check=check_game)
    algo: str = option(choices=ALGOS)
    steps: int = option(minimum=1)
    seed: int = option(minimum=0, maximum=SEED_MAX)
    fast_env: bool = option()
    init: str = option(check=agent_file)
    save_every: int = option(minimum=1)
    threads: int = option(minimum=1)
    progress: bool = option()
    hyperparams: Any = option()
    export_only: bool = option()
    run_dir: str = option(check=writable_folder)
    out: str = option(check=optional_folder)
    overwrite: bool = option()


class RunState:
    """The files of one resumable run: `checkpoint/model.zip`, `checkpoint/vecnormalize.pkl`, `progress.json`.

    The checkpoint folder is replaced as a whole (core.files), so its model and statistics are always a pair."""

    def __init__(self, run_dir: Path, env_id: str):
        self.run_dir = run_dir
        self.env_id = env_id  # the env it trains on now; the checkpoint also resumes on a twin env
        self.checkpoint_dir = run_dir / "checkpoint"
        self.model_path = self.checkpoint_dir / "model.zip"
        self.stats_path = self.checkpoint_dir / VECNORMALIZE_FILE
        self.progress_path = run_dir / PROGRESS_FILE

    def stage_stats_for_zoo(self) -> None:
        """rl_zoo3 resumes with the stats it finds at `dirname(agent)/ENV/vecnormalize.pkl`."""
        if self.stats_path.is_file():
            zoo_path = params_dir(self.model_path.parent, self.env_id) / VECNORMALIZE_FILE
            zoo_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.stats_path, zoo_path)

    @property
    def history_dir(self) -> Path:
        """Training episodes of the runs this one continues (their monitor files), for the learning curve."""
        return self.run_dir / "history"

    def adopt(self, agent_zip: Path, stats: Path) -> None:
        """Start this run from another agent, with its VecNormalize stats and, when it is an export of
        this command, its history: progress.json (steps, wall time, segments) and monitor files."""

        def write(tmp: Path) -> None:
            tmp.mkdir(parents=True)
            shutil.copy(agent_zip, tmp / self.model_path.name)
            if stats.is_file():
                shutil.copy(stats, tmp / self.stats_path.name)

        write_atomically(self.checkpoint_dir, write)
        folder = agent_zip.parent
        if (folder / PROGRESS_FILE).is_file():
            write_atomically(self.progress_path, lambda tmp: shutil.copy(folder / PROGRESS_FILE, tmp))
        self.history_dir.mkdir(exist_ok=True)
        for monitor in folder.glob(MONITOR_GLOB):
            shutil.copy(monitor, self.history_dir / monitor.name)

    def monitors(self) -> list[Path]:
        """Every monitor file with at least one finished episode: adopted history first, then this run's."""
        files = sorted(self.history_dir.glob(MONITOR_GLOB)) + sorted((self.run_dir / "zoo").rglob(MONITOR_GLOB))
        return [m for m in files if len(read_monitors([m])[1])]

    def progress(self) -> dict:
        if self.progress_path.is_file():
            return json.loads(self.progress_path.read_text())
        return {"steps": 0, "wall_time_s": 0.0, "segments": []}

    def save(self, model, progress: dict) -> None:
        """Write the checkpoint folder (model and stats) as a new folder switched into place, then progress."""
        stats = model.get_vec_normalize_env()

        def write(tmp: Path) -> None:
            tmp.mkdir(parents=True)
            model.save(tmp / self.model_path.name)
            if stats is not None:
                stats.save(str(tmp / self.stats_path.name))

        write_atomically(self.checkpoint_dir, write)
        write_json_atomically(self.progress_path, progress)


class PeriodicCheckpoint(BaseCallback):
    def __init__(self, state: RunState, save_every: int, progress: dict):
        super().__init__()
        self.state = state
        self.save_every = save_every
        self.progress = progress
        self.last_saved = progress["steps"]
        self.segment_start = time.time()
        self.wall_time_before = progress["wall_time_s"]

    def save(self) -> None:
        self.progress["steps"] = int(self.num_timesteps)
        self.progress["wall_time_s"] = self.wall_time_before + time.time() - self.segment_start
        self.progress["segments"][-1]["end_steps"] = int(self.num_timesteps)
        self.state.save(self.model, self.progress)
        self.last_saved = self.num_timesteps

    def _on_step(self) -> bool:
        if self.num_timesteps - self.last_saved >= self.save_every:
            self.save()
        return True


def zoo_hyperparams(algo: str, zoo_env_id: str) -> dict:
    entries = yaml.safe_load((ZOO_HYPERPARAMS / f"{algo}.yml").read_text())
    if zoo_env_id in entries:
        return entries[zoo_env_id]
    if is_atari(zoo_env_id) and "atari" in entries:
        return entries["atari"]
    raise UserError(f"RL-Zoo3 has no {algo} hyperparameters for {zoo_env_id}: choose another algo=")


def algo_keys(algo: str) -> set[str]:
    """The hyperparameters a recipe of `algo` may set: its class's constructor arguments and rl_zoo3's own."""
    parameters = inspect.signature(ALGOS[algo].__init__).parameters.values()
    named = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named - SET_BY_THE_ZOO | ZOO_KEYS


def checked_overrides(cfg: DictConfig, recipe: dict) -> dict:
    """`hyperparams=`, the overrides of the zoo's `recipe`: a mapping of hyperparameters `algo` takes."""
    if cfg.hyperparams is None:
        return {}
    if not isinstance(cfg.hyperparams, DictConfig):
        raise UserError(
            f"hyperparams={cfg.hyperparams!r} is not a group of hyperparameters: give e.g. "
            "hyperparams={n_steps: 64, batch_size: 64}"
        )
    overrides = OmegaConf.to_container(cfg.hyperparams)
    unknown = sorted(set(overrides) - algo_keys(cfg.algo))
    if unknown:
        raise UserError(
            f"hyperparams: {', '.join(map(str, unknown))} is not a hyperparameter of {cfg.algo} "
            f"({ALGOS[cfg.algo].__name__}) or of RL-Zoo3: see rl_zoo3/hyperparams/{cfg.algo}.yml for the names"
        )
    for key, value in overrides.items():
        check_hyperparameter(key, value, recipe.get(key))
    return overrides


def check_hyperparameter(key: str, value, recipe_value) -> None:
    """One override's value: a number where the zoo's recipe has one, and within its range where it has one."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    wanted = None
    if key in COUNT_KEYS and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        wanted = "a whole number >= 1"
    elif key in START_KEYS and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        wanted = "a whole number >= 0"
    elif key in FRACTION_KEYS and not (is_number and 0 <= value <= 1):
        wanted = "a number in [0, 1]"
    elif key in SCHEDULE_KEYS and not is_schedule(value):
        schedule = f"{LINEAR_SCHEDULE_PREFIX}<start>, e.g. {LINEAR_SCHEDULE_PREFIX}2.5e-4"
        wanted = f"a number > 0 or a linear schedule {schedule}"
    elif isinstance(recipe_value, int | float) and not isinstance(recipe_value, bool) and not is_number:
        wanted = f"a number (the zoo's recipe has {recipe_value})"
    if wanted:
        raise UserError(f"hyperparams: {key}={value!r} is not {wanted}")


def training_observation_space(env_id: str, recipe: dict) -> gym.Space:
    """What the agent sees in the env rl_zoo3 builds from `recipe`: its env wrappers, frame stack and the
    channel-first transpose SB3 adds to images (normalisation keeps the space)."""
    venv = make_vec_env(
        env_id,
        n_envs=1,
        wrapper_class=get_wrapper_class(recipe),
        vec_env_cls=DummyVecEnv,
        env_kwargs=recipe.get("env_kwargs"),
    )
    if recipe.get("frame_stack"):
        venv = VecFrameStack(venv, int(recipe["frame_stack"]))
    space = venv.observation_space
    venv.close()
    if is_image_space(space) and not is_image_space_channels_first(space):
        space = VecTransposeImage.transpose_space(space)
    return space


def check_init_agent(cfg: DictConfig, spec: GameSpec, env_id: str, recipe: dict) -> None:
    """`init=` is an SB3 agent zip of `algo` that sees what this run's env shows, before it is copied in."""
    path = Path(cfg.init).expanduser()
    try:
        data, _, _ = load_from_zip_file(path, device="cpu")
    except ZIP_ERRORS as error:
        raise not_an_agent_zip("init", cfg.init, f" ({error})") from None
    if not data or "observation_space" not in data or "policy_class" not in data:
        raise not_an_agent_zip("init", cfg.init, " (it holds no SB3 agent data)")
    if data["policy_class"] not in ALGOS[cfg.algo].policy_aliases.values():
        raise UserError(
            f"init={cfg.init} holds an agent of {data['policy_class'].__name__}, a policy {cfg.algo} does not train: "
            f"give an agent of algo={cfg.algo}, or the algo= it was trained with"
        )
    expected = training_observation_space(env_id, recipe)
    if data["observation_space"] != expected:
        raise UserError(
            f"init={cfg.init} sees {data['observation_space']}, but {spec.name}'s {cfg.algo} pipeline shows "
            f"{expected}: give an agent trained on {spec.name} with this recipe"
        )


def build_manager(cfg: DictConfig, state: RunState, progress: dict, init: str) -> ExperimentManager:
    spec = get_game(cfg.game)
    conf_file = state.run_dir / "hyperparams.yml"
    # The zoo keys hyperparameters by env id: the fast twin trains with the original env's recipe.
    write_text_atomically(conf_file, yaml.safe_dump({state.env_id: zoo_hyperparams(cfg.algo, spec.env_id)}))
    args = argparse.Namespace(
        algo=cfg.algo,
        env=state.env_id,
        seed=cfg.seed,
        n_timesteps=cfg.steps,
        trained_agent=init,
        conf_file=str(conf_file),
        env_kwargs=None,
        eval_env_kwargs=None,
        vec_env="dummy",
        device="cpu",
        hyperparams=None,
        save_freq=-1,
        eval_freq=-1,
        log_folder=str(state.run_dir / "zoo"),
    )
    return ExperimentManager(
        args,
        cfg.algo,
        state.env_id,
        str(state.run_dir / "zoo"),
        n_timesteps=int(cfg.steps),
        eval_freq=-1,
        save_freq=-1,
        trained_agent=init,
        config=str(conf_file),
        # A different seed per segment, so a resumed run does not replay the tracks it began with.
        seed=int(cfg.seed) + progress["steps"],
        log_interval=-1,
        verbose=0,
        device="cpu",
        show_progress=bool(cfg.progress),
        hyperparams=OmegaConf.to_container(cfg.hyperparams) if cfg.hyperparams else None,
    )


def save_policy_only(model, path: Path) -> None:
    """The agent zip without Adam's moment estimates (2/3 of a zip): same policy, and still loadable
    and trainable (`init=`), with an empty optimizer state."""
    model.save(path)
    optimizer = model.policy.optimizer.state_dict()
    buffer = io.BytesIO()
    torch.save({"state": {}, "param_groups": optimizer["param_groups"]}, buffer)
    with zipfile.ZipFile(path) as source:
        members = {name: source.read(name) for name in source.namelist()}
    members[OPTIMIZER_MEMBER] = buffer.getvalue()

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as target:
            for name, data in members.items():
                target.writestr(name, data)

    write_atomically(path, write)


def export(state: RunState, manager: ExperimentManager, model, out: Path, spec_env_id: str) -> None:
    """Write RL-Zoo3's layout `out/ENV.zip`, `out/ENV/{config,args}.yml`, vecnormalize.pkl, monitor files, as a
    new folder switched into place."""
    # Named for the game's own env (a fast twin is the same game), so rl_zoo3's enjoy and our eval
    # find ENV.zip; progress.json keeps the env it trained on.
    args = read_zoo_yaml(Path(manager.params_path) / ARGS_FILE)
    args["env"] = spec_env_id
    progress = state.progress() | {EXPORTED_BY: str(state.run_dir.resolve())}

    def write(tmp: Path) -> None:
        params = params_dir(tmp, spec_env_id)
        params.mkdir(parents=True)
        save_policy_only(model, agent_zip(tmp, spec_env_id))
        shutil.copy(Path(manager.params_path) / CONFIG_FILE, params / CONFIG_FILE)
        (params / ARGS_FILE).write_text(yaml.dump(args))
        if state.stats_path.is_file():
            shutil.copy(state.stats_path, params / VECNORMALIZE_FILE)
        for index, monitor in enumerate(state.monitors()):
            shutil.copy(monitor, tmp / f"{index}.monitor.csv")
        (tmp / PROGRESS_FILE).write_text(json.dumps(progress, indent=2))
        plot_learning_curve(tmp, f"{manager.algo} {spec_env_id}")

    write_atomically(out, write)


def exported_by(folder: Path, run_dir: Path) -> bool:
    """Whether `folder` holds an export of the run in `run_dir` (which it may replace)."""
    try:
        return json.loads((folder / PROGRESS_FILE).read_text()).get(EXPORTED_BY) == str(run_dir.resolve())
    except (OSError, ValueError, AttributeError):
        return False


def export_folder(cfg: DictConfig, env_id: str, run_dir: Path) -> Path:
    """Where the agent is exported: out=, or the first experts/ALGO/ENV_N free or holding this run's export.
    An existing folder this run did not export is replaced only with overwrite=true (a shipped one with a warning)."""
    if not cfg.out:
        index = 1
        while (folder := EXPERTS_DIR / cfg.algo / f"{env_id}_{index}").exists() and not exported_by(folder, run_dir):
            index += 1
        return folder
    folder = Path(cfg.out).expanduser()
    if folder.exists() and any(folder.iterdir()) and not exported_by(folder, run_dir):
        if not cfg.overwrite:
            raise UserError(
                f"out={cfg.out} holds an agent folder this run did not export: choose another out=, "
                "leave out= empty (a new experts/ALGO/ENV_N) or pass overwrite=true to replace it"
            )
        if folder.resolve().is_relative_to(EXPERTS_DIR):
            print(f"warning: replacing the shipped expert {folder} (git restores it)", file=sys.stderr)
    return folder


def check_start(cfg: DictConfig, spec: GameSpec, state: RunState) -> None:
    """What the run starts from is there and fits, before anything is written: its checkpoint, or an `init=`
    agent of this game and algo; `export_only=true` needs one of them."""
    zoo_recipe = zoo_hyperparams(cfg.algo, spec.env_id)
    recipe = zoo_recipe | checked_overrides(cfg, zoo_recipe)
    if state.model_path.is_file():
        return
    if cfg.init:
        check_init_agent(cfg, spec, state.env_id, recipe)
    elif cfg.export_only:
        raise UserError(
            f"export_only=true: {state.run_dir} holds no checkpoint to export: train it first (without "
            "export_only=true), or give init=<agent zip> to export that agent"
        )


@command("train_expert", TrainExpertConfig)
def main(cfg: DictConfig) -> None:
    spec = get_game(cfg.game)
    env_id = spec.play_env_id(cfg.fast_env)
    register_fast_car_racing()  # rl_zoo3 makes the env by its id; envs.pipeline, which registers it, is not imported
    torch.set_num_threads(cfg.threads)
    state = RunState(Path(cfg.run_dir).expanduser() / f"{cfg.game}_{cfg.algo}_seed{cfg.seed}", env_id)
    out = export_folder(cfg, spec.env_id, state.run_dir)
    clean_partial(state.run_dir)  # a checkpoint a kill left half switched is put back before it is looked for
    check_start(cfg, spec, state)
    state.run_dir.mkdir(parents=True, exist_ok=True)
    if not state.model_path.is_file() and cfg.init:
        agent = Path(cfg.init).expanduser().resolve()
        state.adopt(agent, stats=params_dir(agent.parent, spec.env_id) / VECNORMALIZE_FILE)
    progress = state.progress()
    init = ""
    if state.model_path.is_file():
        init = str(state.model_path)
        state.stage_stats_for_zoo()
    progress["segments"].append(
        {"start_steps": progress["steps"], "init": init, "env_id": env_id, "started": time.ctime()}
    )
    manager = build_manager(cfg, state, progress, init)
    model, _ = manager.setup_experiment()
    if progress["steps"] == 0 and init:
        progress["steps"] = progress["segments"][-1]["start_steps"] = int(model.num_timesteps)
    remaining = int(cfg.steps) - int(model.num_timesteps)
    checkpoint = PeriodicCheckpoint(state, int(cfg.save_every), progress)
    if remaining > 0 and not cfg.export_only:
        print(f"training {cfg.algo} on {env_id}: {model.num_timesteps:,} of {int(cfg.steps):,} steps done")
        model.learn(remaining, callback=manager.callbacks + [checkpoint], reset_num_timesteps=False)
        checkpoint.save()
    export(state, manager, model, out, spec.env_id)
    print(f"exported {model.num_timesteps:,}-step agent to {out}")


if __name__ == "__main__":
    main()
