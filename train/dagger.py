"""python -m train.dagger game=<g> init=<game checkpoint> data=[<expert dataset>] run=<name> [rounds=4 episodes=10 ...]

DAgger (Ross, Gordon & Bagnell 2011). Round k (1..rounds):
  1. the current VLM drives `episodes` seeded episodes (seeds from `rollout_seed`, apart from training 0+,
     evaluation 100000+ and selection 200000+), taking the expert's action with probability
     beta * beta_decay^(k-1); the expert labels every visited state (`python -m collect policy=dagger`);
  2. the VLM is fine-tuned from the previous round's model on the aggregate: the expert dataset and every
     round's labelled episodes (`python -m train recipe=game`, validated on the expert dataset's `val_seeds`);
  3. the new model plays `eval_episodes` episodes on the selection seeds (`python -m eval`).
Each step is one of the project's own commands, run as a subprocess, and resumes after a kill as it does
alone, so a killed DAgger run started again with the same command goes on where it stopped; `workers=`,
`backend=` and `address=` are handed to collect and eval (who plays their episodes, and where). This process
imports no gymnasium. Writes run_dir/run/dagger.json (return and held-out accuracy per round) and dagger.png.
"""

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from agents.workers import BACKENDS, check_backend  # noqa: E402
from collect.dataset import VLMPLAY_KEY, check_collected, episode_infos, read_dataset_metadata  # noqa: E402
from core.cli import command  # noqa: E402
from core.errors import UserError  # noqa: E402
from core.files import write_atomically, write_json_atomically  # noqa: E402
from core.runs import final_dir  # noqa: E402
from core.schema import option, positive, writable_folder  # noqa: E402
from core.seeds import SEED_MAX, check_last_seed, check_seed_list, parse_seeds  # noqa: E402
from envs.games import check_game, get_game  # noqa: E402
from vlm.checkpoint import checked_checkpoint_config  # noqa: E402

GAME_STAGE = "game"  # the stage of recipe=game
REPORT_FILE, PLOT_FILE = "dagger.json", "dagger.png"
IMITATED = "[expert,dagger]"  # the game task imitates the expert's dataset and the labelled rounds


def run_command(module: str, *args: str) -> None:
    """`python -m module args...`; a failure stops DAgger with the command and its last words."""
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["(no output)"]
        raise UserError(f"DAgger step `python -m {module} {' '.join(args)}` failed: {last[0]}")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def round_report(round_dir: Path, index: int, beta: float) -> dict:
    collected = read_json(round_dir / "data" / "data" / "metadata.json")["vlmplay"]["episodes"]
    validation = read_json(round_dir / GAME_STAGE / "validation.json")
    returns = read_json(round_dir / "eval" / "results.json")["return"]
    return {
        "round": index,
        "beta": beta,
        "labelled_steps": sum(e["length"] for e in collected),
        "rollout_return": sum(e["return"] for e in collected) / len(collected),  # the mixture's, while collecting
        "heldout_accuracy": validation["accuracy"],
        "selection_return": returns["mean"],
        "selection_return_std": returns["std"],
        "model": str(final_dir(round_dir / GAME_STAGE)),
    }


def start_report(init: Path, eval_dir: Path, eval_args: list[str]) -> dict:
    """The init model's selection return (played into `eval_dir` once) and held-out accuracy."""
    if not (eval_dir / "results.json").is_file():
        run_command("eval", f"checkpoint={init}", *eval_args, f"out={eval_dir}")
    returns = read_json(eval_dir / "results.json")["return"]
    return {
        "selection_return": returns["mean"],
        "selection_return_std": returns["std"],
        "heldout_accuracy": init_accuracy(init),
    }


def init_accuracy(init: Path) -> float:
    """The init model's held-out accuracy where its training validated it (beside it, or in its stage folder)."""
    for folder in (init, init.parent):
        if (folder / "validation.json").is_file():
            return read_json(folder / "validation.json")["accuracy"]
    return float("nan")


def plot(rounds: list[dict], start: dict, out: Path, title: str) -> None:
    figure, (returns, accuracy) = plt.subplots(1, 2, figsize=(10, 4))
    indices = [0] + [r["round"] for r in rounds]
    returns.errorbar(
        indices,
        [start["selection_return"]] + [r["selection_return"] for r in rounds],
        yerr=[start["selection_return_std"]] + [r["selection_return_std"] for r in rounds],
        marker="o",
        capsize=3,
    )
    returns.set_xlabel("round (0: the init model)")
    returns.set_ylabel("return on the selection seeds")
    accuracy.plot(indices, [start["heldout_accuracy"]] + [r["heldout_accuracy"] for r in rounds], marker="o")
    accuracy.set_xlabel("round")
    accuracy.set_ylabel("held-out action accuracy")
    for axes in (returns, accuracy):
        axes.set_xticks(indices)
        axes.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    write_atomically(out, lambda tmp: figure.savefig(tmp, dpi=100, format="png"))
    plt.close(figure)


def vlm_checkpoint(key: str, folder: str) -> None:
    checked_checkpoint_config(Path(folder).expanduser(), key)


def check_expert_data(folders: list[str], game: str, val_seeds: list[int] | None) -> None:
    """Before the first round plays: every dataset is of `game`, and one of them holds the held-out seeds."""
    held_by = []  # the datasets holding every held-out seed
    for folder in folders:
        metadata = read_dataset_metadata(Path(folder))
        if metadata[VLMPLAY_KEY]["game"] != game:
            raise UserError(f"data: {folder} holds {metadata[VLMPLAY_KEY]['game']} episodes, not {game}")
        held_by += [folder] if set(val_seeds or []) <= {e.seed for e in episode_infos(metadata)} else []
    if val_seeds and not held_by:
        raise UserError(
            f"val_seeds={val_seeds}: no dataset in data= holds these episodes; give others or val_seeds=null"
        )


@dataclass
class DaggerConfig:
    game: str | None = option(check=check_game)
    init: str | None = option(check=vlm_checkpoint)
    data: list[str] = option(check=check_collected)
    rounds: int = option(minimum=1)
    episodes: int = option(minimum=1)
    beta: float = option(minimum=0.0, maximum=1.0)
    beta_decay: float = option(minimum=0.0, maximum=1.0)
    expert: str | None = option()
    deterministic: bool | None = option()
    steps: int = option(minimum=1)
    lr: float = option(check=positive)
    val_seeds: Any = option(check=check_seed_list)
    seed: int = option(minimum=0, maximum=SEED_MAX)
    rollout_seed: int = option(minimum=0, maximum=SEED_MAX)
    selection_seed: int = option(minimum=0, maximum=SEED_MAX)
    eval_episodes: int = option(minimum=1)
    workers: int = option(minimum=1)
    backend: str = option(choices=BACKENDS, check=check_backend)
    address: str | None = option()
    run: str = option()
    run_dir: str = option(check=writable_folder)

    @staticmethod
    def check_together(cfg) -> None:
        check_last_seed("rollout_seed", cfg.rollout_seed, cfg.rounds * cfg.episodes)
        check_last_seed("selection_seed", cfg.selection_seed, cfg.eval_episodes)


@command("dagger", DaggerConfig)
def main(cfg: DictConfig) -> None:
    if cfg.game is None or cfg.init is None or not cfg.data:
        raise UserError("give game=<carracing|spaceinvaders>, init=<a game checkpoint> and data=[<its expert dataset>]")
    spec, init = get_game(cfg.game), Path(cfg.init).expanduser()
    expert_data = [str(Path(d).expanduser()) for d in cfg.data]
    check_expert_data(expert_data, spec.name, parse_seeds(cfg.val_seeds, "val_seeds"))
    run_dir = Path(cfg.run_dir).expanduser() / cfg.run
    shared = [f"game={spec.name}", f"seed={cfg.seed}"]
    labeller = [f"expert={cfg.expert}"] if cfg.expert else []
    labeller += [f"deterministic={str(cfg.deterministic).lower()}"] if cfg.deterministic is not None else []
    workers = [f"workers={cfg.workers}", f"backend={cfg.backend}"]
    workers += [f"address={cfg.address}"] if cfg.address else []
    selection = ["policy=vlm", f"episodes={cfg.eval_episodes}", f"seed={cfg.selection_seed}", "video=false", *workers]

    learner, aggregate, rounds, start = init, list(expert_data), [], None
    for index in range(1, int(cfg.rounds) + 1):
        round_dir = run_dir / f"round{index}"
        beta = float(cfg.beta) * float(cfg.beta_decay) ** (index - 1)
        first_seed = int(cfg.rollout_seed) + (index - 1) * int(cfg.episodes)
        run_command(
            "collect", f"game={spec.name}", "policy=dagger", f"checkpoint={learner}", f"beta={beta}", *labeller,
            f"episodes={cfg.episodes}", f"seed={first_seed}", f"out={round_dir / 'data'}", *workers,
        )  # fmt: skip
        # After the first collect, which builds the labeller before its first episode: a bad expert= fails first.
        start = start or start_report(init, run_dir / "round0" / "eval", [f"game={spec.name}", *selection])
        aggregate.append(str(round_dir / "data"))
        stage = f"recipe.stages.{GAME_STAGE}"
        val_seeds = "null" if cfg.val_seeds is None else cfg.val_seeds
        run_command(
            "train", "recipe=game", *shared, f"data=[{','.join(aggregate)}]", f"init={learner}",
            f"run=round{index}", f"run_dir={run_dir}", f"val_seeds={val_seeds}", "progress=false",
            f"{stage}.steps={cfg.steps}", f"{stage}.lr={cfg.lr}", f"{stage}.tasks.game.imitate={IMITATED}",
        )  # fmt: skip
        learner = final_dir(round_dir / GAME_STAGE)
        eval_dir = round_dir / "eval"
        if not (eval_dir / "results.json").is_file():
            run_command("eval", f"game={spec.name}", f"checkpoint={learner}", *selection, f"out={eval_dir}")
        rounds.append(round_report(round_dir, index, beta))
        print(
            f"round {index}: beta {beta:g}, {rounds[-1]['labelled_steps']} labelled steps, held-out accuracy "
            f"{rounds[-1]['heldout_accuracy']:.3f}, selection return {rounds[-1]['selection_return']:.2f} "
            f"± {rounds[-1]['selection_return_std']:.2f}",
            flush=True,
        )
        report = {"game": spec.name, "init": str(init), "start": start, "rounds": rounds}
        write_json_atomically(run_dir / REPORT_FILE, report)
        plot(rounds, start, run_dir / PLOT_FILE, f"DAgger on {spec.name} from {init.name}")
    best = max(rounds, key=lambda r: r["selection_return"])
    print(f"best round {best['round']} (selection return {best['selection_return']:.2f}): {best['model']}")


if __name__ == "__main__":
    main()
