"""Closed-loop compounding error of a VLM policy: the VLM drives the first k decisions, the expert the rest.

    python benchmarks/takeover.py --game carracing --checkpoint DIR [--k 0 100 300 1000000] [--episodes 5]

k = 0 is the expert alone, a k beyond the episode length the VLM alone. A VLM with a high held-out action
accuracy whose return still falls with k loses the road (or the game) by compounding small errors;
a return that stays near the expert's until the VLM alone means the VLM's own errors are rare or
recoverable. Same seeds (default 100000..) for every k, so rows differ only by who drove when.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from agents import load_policy
from agents.rollout import play_episode
from agents.takeover import TakeoverPolicy
from core.seeds import episode_seeds
from envs import get_game


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", required=True)
    parser.add_argument("--checkpoint", required=True, help="the fine-tuned VLM folder")
    parser.add_argument(
        "--k", type=int, nargs="+", default=[0, 100, 300, 1_000_000], help="VLM decisions before the expert takes over"
    )
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=100000)
    parser.add_argument("--out", default="results/takeover", help="writes GAME.json here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = get_game(args.game)
    vlm, expert = load_policy("vlm", spec, checkpoint=args.checkpoint), load_policy("expert", spec)
    seeds = episode_seeds(args.seed, args.episodes)
    rows = []
    print(
        f"{spec.name}: {vlm.policy_id} drives the first k decisions, "
        f"{expert.policy_id} the rest; seeds {seeds[0]}..{seeds[-1]}"
    )
    print(f"{'k':>8} {'mean':>9} {'std':>8}  returns")
    for k in args.k:
        returns = [
            play_episode(TakeoverPolicy(vlm, expert, k), spec, seed, env_id=spec.play_env_id(True)).episode_return
            for seed in seeds
        ]
        rows.append({"k": k, "returns": returns, "mean": float(np.mean(returns)), "std": float(np.std(returns))})
        print(
            f"{k:>8} {rows[-1]['mean']:>9.2f} {rows[-1]['std']:>8.2f}  {' '.join(f'{r:.1f}' for r in returns)}",
            flush=True,
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{spec.name}.json").write_text(
        json.dumps({"checkpoint": args.checkpoint, "expert": expert.policy_id, "seeds": seeds, "rows": rows}, indent=2)
    )
    print(f"wrote {out / f'{spec.name}.json'}")


if __name__ == "__main__":
    main()
