"""The paper's Table 4 on our hardware: mean ± std return of each policy over seeded episodes.

    python benchmarks/table4.py                                   # expert and random, both games
    python benchmarks/table4.py --vlm baseline=checkpoints/game_nopvp_{game} pae=checkpoints/game_pae_{game}

Each (game, policy) is played by `eval.evaluate` (the `python -m eval` protocol) into
OUT/<game>_<policy>/results.json; a results file with the same policy id and seeds is reused, so an
interrupted run continues where it stopped. Prints a Markdown table with the paper's numbers beside ours.
"""

import argparse
import json
from pathlib import Path

import torch

from agents import load_policy
from envs import get_game
from eval.evaluate import evaluate

GAMES = ("carracing", "spaceinvaders")
# PAE-LaMM, Table 4 (mean of 15 rounds): CarRacing, SpaceInvaders.
PAPER = {
    "expert": (853.91, 476.33),
    "MiniGPT-v2 fine-tuned (no PVP)": (465.36, 152.33),
    "PAE-LaMM fine-tuned": (535.90, 232.67),
}


def cached_or_evaluated(kind: str, name: str, spec, seeds: list[int], out: Path, checkpoint: str | None) -> dict:
    results = out / f"{spec.name}_{name}" / "results.json"
    policy = load_policy(kind, spec, checkpoint=checkpoint)
    if results.is_file():
        report = json.loads(results.read_text())
        if report["policy"] == policy.policy_id and report["seeds"] == seeds:
            return report
    return evaluate(policy, spec, seeds, results.parent, video=False, env_id=spec.play_env_id(fast=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="+", default=list(GAMES), choices=GAMES)
    parser.add_argument(
        "--vlm",
        nargs="*",
        default=[],
        metavar="NAME=CHECKPOINT",
        help="VLM policies; {game} in the path is replaced by the game name",
    )
    parser.add_argument("--episodes", type=int, default=15)
    parser.add_argument("--seed", type=int, default=100000, help="first seed; never one used in collection")
    parser.add_argument("--out", type=Path, default=Path("results/table4"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = [("expert", "expert", None), ("random", "random", None)]
    for entry in args.vlm:
        name, _, checkpoint = entry.partition("=")
        rows.append(("vlm", name, checkpoint))
    seeds = list(range(args.seed, args.seed + args.episodes))
    table = {}
    for game in args.games:
        spec = get_game(game)
        for kind, name, checkpoint in rows:
            path = checkpoint.format(game=game) if checkpoint else None
            table[name, game] = cached_or_evaluated(kind, name, spec, seeds, args.out, path)

    print(f"\n{args.episodes} episodes per cell, seeds {seeds[0]}–{seeds[-1]}, return mean ± std [min, max]\n")
    print("| policy | " + " | ".join(args.games) + " |")
    print("|---|" + "---|" * len(args.games))
    for _, name, _ in rows:
        cells = []
        for game in args.games:
            report = table[name, game]
            r = report["return"]
            cells.append(f"{r['mean']:.2f} ± {r['std']:.2f} [{r['min']:.0f}, {r['max']:.0f}] ({report['policy']})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for name, scores in PAPER.items():
        print(f"| paper: {name} | " + " | ".join(f"{scores[GAMES.index(g)]:.2f}" for g in args.games) + " |")


if __name__ == "__main__":
    main()
