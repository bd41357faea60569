"""How much return the discrete action set costs: an expert's raw actions vs the same expert with
every action it takes snapped to the game's action codes (encode -> decode), on the same seeds.

    python benchmarks/codec_roundtrip.py --game carracing --episodes 15 --seed 100000 [--expert DIR]
"""
import argparse

import numpy as np

from agents import ExpertPolicy, Observation, Policy
from envs import get_game
from eval.rollout import play_episode


class CodecRoundTrip(Policy):
    """The inner policy, with each action replaced by decode(encode(action))."""

    def __init__(self, inner: ExpertPolicy, codec):
        self.inner, self.codec = inner, codec
        self.pipeline, self.stats_dir = inner.pipeline, inner.stats_dir
        self.policy_id = f"{inner.policy_id}+codec"

    def reset(self, seed: int) -> None:
        self.inner.reset(seed)

    def act(self, observation: Observation):
        return self.codec.decode(self.codec.encode(self.inner.act(observation)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="carracing")
    parser.add_argument("--expert", default=None, help="RL-Zoo3 folder (default: the game's expert)")
    parser.add_argument("--episodes", type=int, default=15)
    parser.add_argument("--seed", type=int, default=100000)
    args = parser.parse_args()
    spec = get_game(args.game)
    expert = ExpertPolicy(args.expert or spec.default_expert_path, spec)
    seeds = range(args.seed, args.seed + args.episodes)
    rows = {}
    for policy in (expert, CodecRoundTrip(expert, spec.codec)):
        rows[policy.policy_id] = [play_episode(policy, spec, seed).episode_return for seed in seeds]
        print(f"{policy.policy_id}: {' '.join(f'{r:.1f}' for r in rows[policy.policy_id])}", flush=True)
    raw, snapped = (np.array(returns) for returns in rows.values())
    print(f"\n{spec.name}: {len(spec.action_names)} actions, seeds {args.seed}-{args.seed + args.episodes - 1}")
    print(f"{'policy':<50} {'mean':>9} {'std':>8}")
    for name, returns in rows.items():
        print(f"{name:<50} {np.mean(returns):>9.2f} {np.std(returns):>8.2f}")
    print(f"{'codec / raw (ratio of means)':<50} {snapped.mean() / raw.mean():>9.3f}")


if __name__ == "__main__":
    main()
