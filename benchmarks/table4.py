"""The paper's Table 4, v2: every policy on seeded episodes, each learned row over several training seeds.

    python benchmarks/table4.py                                            # expert and random
    python benchmarks/table4.py --row "BC-CNN=bc:~/.cache/vlmplay/runs/train/bc_{game}_seed{seed}" \\
        --row "VLM PAE=vlm:~/.cache/vlmplay/runs/train/{game}_pae_s{seed}/game/final" --train-seeds 0 1 2

A row is NAME=POLICY:CHECKPOINT, where {game} and {seed} in the checkpoint path stand for the game and the
training seed; NAME@GAME=POLICY:CHECKPOINT gives the row's checkpoints of one game, for runs named per game:
    --row "VLM PAE@carracing=vlm:.../cr_pae_s{seed}/game/final" --row "VLM PAE@spaceinvaders=vlm:.../si_..."
A row with no checkpoints for a game shows "–" there; expert and random are always there. Columns: CarRacing,
SpaceInvaders, and SpaceInvaders under the modern ALE protocol (sticky actions, p = 0.25). Each (row, training
seed, column) is played by `eval.evaluate` (the `python -m eval` protocol) into
OUT/<column>/<row>_seed<k>/results.json; a results file of the same policy and seeds is reused, so an
interrupted run continues where it stopped. A cell is the mean ± std over the training seeds of the per-seed
mean returns (population std), a 95 % two-level bootstrap interval (training seeds, then episodes), the
fraction of the expert's mean in the same column, and for SpaceInvaders the human-normalised score. The notes
give each row's training compute in core-hours (the `train_seconds` its checkpoints record, one torch thread
each). Writes OUT/table4.json and prints Markdown.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from agents import load_policy
from core.seeds import episode_seeds
from envs import get_game
from eval.evaluate import evaluate
from eval.stats import bootstrap_ci, relative_scores

COLUMNS = {  # column -> (game, sticky actions)
    "CarRacing": ("carracing", False),
    "SpaceInvaders": ("spaceinvaders", False),
    "SpaceInvaders, sticky": ("spaceinvaders", True),
}
# PAE-LaMM, Table 4 (mean of 15 rounds): CarRacing, SpaceInvaders (no sticky actions in the paper).
PAPER = {
    "expert": (853.91, 476.33),
    "MiniGPT-v2 fine-tuned (no PVP)": (465.36, 152.33),
    "PAE-LaMM fine-tuned (7B)": (535.90, 232.67),
}
SECONDS_PER_HOUR = 3600


def played(policy_name: str, checkpoint: str | None, game: str, sticky: bool, seeds: list[int], out: Path) -> dict:
    spec = get_game(game)
    policy = load_policy(policy_name, spec, checkpoint=checkpoint)
    env_kwargs = spec.sticky_actions if sticky else None
    results = out / "results.json"
    if results.is_file():
        report = json.loads(results.read_text())
        if (
            report["policy"] == policy.policy_id
            and report["seeds"] == seeds
            and report.get("env_kwargs", {}) == (env_kwargs or {})
        ):
            return report
    return evaluate(policy, spec, seeds, out, video=False, env_id=spec.play_env_id(fast=True), env_kwargs=env_kwargs)


def training_seconds(checkpoint: Path) -> float:
    """What the checkpoint's training recorded: a BC config's train_seconds, or a run stage's summary.json."""
    config = checkpoint / "config.json"
    if config.is_file() and (training := json.loads(config.read_text()).get("training")):
        return float(training["train_seconds"])
    summary = checkpoint.parent / "summary.json"
    return float(json.loads(summary.read_text())["train_seconds"]) if summary.is_file() else float("nan")


def cell(reports: list[dict], expert_mean: float, spec) -> dict:
    per_seed = [[e["return"] for e in report["episodes"]] for report in reports]
    means = [float(np.mean(returns)) for returns in per_seed]
    low, high = bootstrap_ci(per_seed)
    mean = float(np.mean(means))
    scores = relative_scores(mean, spec)
    scores["expert_fraction"] = mean / expert_mean
    return {"mean": mean, "std": float(np.std(means)), "seed_means": means, "ci95": [low, high], **scores}


def formatted(stats: dict, seeds: int) -> str:
    text = f"{stats['mean']:.2f} ± {stats['std']:.2f}" if seeds > 1 else f"{stats['mean']:.2f}"
    text += f" [{stats['ci95'][0]:.0f}, {stats['ci95'][1]:.0f}], {100 * stats['expert_fraction']:.0f} %"
    return text + (f", HNS {stats['human_normalised']:.3f}" if "human_normalised" in stats else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--row", action="append", default=[], metavar="NAME=POLICY:CHECKPOINT")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--columns", nargs="+", default=list(COLUMNS), choices=list(COLUMNS))
    parser.add_argument("--episodes", type=int, default=15)
    parser.add_argument("--seed", type=int, default=100000, help="first evaluation seed; never one used in training")
    parser.add_argument("--out", type=Path, default=Path("results/table4"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = {"expert": ("expert", {}), "random": ("random", {})}  # name -> (policy, {game: checkpoint pattern})
    for entry in args.row:
        name, _, spec = entry.partition("=")
        name, _, only_game = name.partition("@")
        policy, _, pattern = spec.partition(":")
        games = [only_game] if only_game else sorted({game for game, _ in COLUMNS.values()})
        rows.setdefault(name, (policy, {}))[1].update({game: pattern for game in games})
    seeds = episode_seeds(args.seed, args.episodes)
    table, compute = {}, {}
    for column in args.columns:
        game, sticky = COLUMNS[column]
        for name, (policy, patterns) in rows.items():
            pattern = patterns.get(game)
            if patterns and not pattern:
                continue
            train_seeds = args.train_seeds if pattern else [0]
            reports = []
            for train_seed in train_seeds:
                checkpoint = str(Path(pattern.format(game=game, seed=train_seed)).expanduser()) if pattern else None
                folder = args.out / column.replace(", ", "_") / f"{name.replace(' ', '_')}_seed{train_seed}"
                reports.append(played(policy, checkpoint, game, sticky, seeds, folder))
                if checkpoint and not sticky:
                    compute.setdefault(name, []).append(training_seconds(Path(checkpoint)))
            table[name, column] = reports

    summary = {}
    for column in args.columns:
        spec = get_game(COLUMNS[column][0])
        expert_mean = float(np.mean([e["return"] for e in table["expert", column][0]["episodes"]]))
        for name in rows:
            if (name, column) in table:
                summary[name, column] = cell(table[name, column], expert_mean, spec)

    print(
        f"\n{args.episodes} episodes per training seed, seeds {seeds[0]}–{seeds[-1]}; learned rows: mean ± std over "
        f"training seeds {args.train_seeds} of the per-seed means, [95 % bootstrap interval], % of the expert\n"
    )
    print("| policy | " + " | ".join(args.columns) + " |")
    print("|---|" + "---|" * len(args.columns))
    for name, (_, patterns) in rows.items():
        n = len(args.train_seeds) if patterns else 1
        cells = [formatted(summary[name, c], n) if (name, c) in summary else "–" for c in args.columns]
        print(f"| {name} | " + " | ".join(cells) + " |")
    for name, scores in PAPER.items():
        paper = {"CarRacing": f"{scores[0]:.2f}", "SpaceInvaders": f"{scores[1]:.2f}"}
        print(f"| paper: {name} | " + " | ".join(paper.get(c, "–") for c in args.columns) + " |")
    for name, seconds in compute.items():
        print(f"- {name}: training {np.nansum(seconds) / SECONDS_PER_HOUR:.2f} core-hours over all its checkpoints")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table4.json").write_text(
        json.dumps(
            {
                "seeds": seeds,
                "train_seeds": args.train_seeds,
                "cells": {f"{name} | {column}": stats for (name, column), stats in summary.items()},
                "training_seconds": compute,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out / 'table4.json'}")


if __name__ == "__main__":
    main()
