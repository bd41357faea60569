"""How much return the discrete action set costs: an expert's raw actions vs the same expert with
every action it takes snapped to a discrete action set (encode -> decode), on the same seeds.
For CarRacing it compares the game's codec with a coarser and a finer one.

    python benchmarks/codec_roundtrip.py --game carracing --episodes 15 --seed 100000 [--expert DIR]
"""

import argparse

import numpy as np
import torch

from agents import Observation, Policy
from agents.expert_policy import ExpertPolicy
from agents.rollout import play_episode
from core.seeds import episode_seeds
from envs import GridCodec, get_game

# Other CarRacing action sets to compare with the game's own: full-pedal grids (gas 1, brake 0.8).
GAS, COAST, BRAKE = ("gas", 1.0, 0.0), ("coast", 0.0, 0.0), ("brake", 0.0, 0.8)
FIVE_STEER = (("hardleft", -1.0), ("left", -0.4), ("straight", 0.0), ("right", 0.4), ("hardright", 1.0))
CARRACING_ALTERNATIVES = {
    "3 steer x 3 pedal": GridCodec(
        steer=(("left", -1.0), ("straight", 0.0), ("right", 1.0)), pedal=(GAS, COAST, BRAKE)
    ),
    "5 steer x 3 pedal": GridCodec(steer=FIVE_STEER, pedal=(GAS, COAST, BRAKE)),
    "5 steer x 4 pedal (+ half gas)": GridCodec(steer=FIVE_STEER, pedal=(GAS, ("halfgas", 0.5, 0.0), COAST, BRAKE)),
}


class CodecRoundTrip(Policy):
    """The inner policy, with each action replaced by decode(encode(action))."""

    def __init__(self, inner: ExpertPolicy, codec, name: str):
        self.inner, self.codec = inner, codec
        self.pipeline, self.stats_dir = inner.pipeline, inner.stats_dir
        self.policy_id = f"{name} ({len(codec.names)} actions)"

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
    torch.set_num_threads(1)
    spec = get_game(args.game)
    expert = ExpertPolicy(args.expert or spec.default_expert_path, spec)
    seeds = episode_seeds(args.seed, args.episodes)
    codecs = {f"game codec {spec.name}": spec.codec}
    if spec.name == "carracing":
        codecs.update(CARRACING_ALTERNATIVES)
    policies = [expert] + [CodecRoundTrip(expert, codec, name) for name, codec in codecs.items()]
    rows = {}
    for policy in policies:
        rows[policy.policy_id] = np.array(
            [play_episode(policy, spec, seed, env_id=spec.play_env_id(fast=True)).episode_return for seed in seeds]
        )
        print(f"{policy.policy_id}: {' '.join(f'{r:.1f}' for r in rows[policy.policy_id])}", flush=True)
    raw = rows[expert.policy_id]
    print(f"\n{spec.name}, {expert.policy_id}, seeds {args.seed}-{args.seed + args.episodes - 1}")
    print(f"| {'actions':<48} | {'mean':>8} | {'std':>7} | {'vs raw':>6} |")
    print(f"|{'-' * 50}|{'-' * 10}|{'-' * 9}|{'-' * 8}|")
    for name, returns in rows.items():
        label = "raw (continuous)" if name == expert.policy_id else name
        print(f"| {label:<48} | {returns.mean():>8.2f} | {returns.std():>7.2f} | {returns.mean() / raw.mean():>6.3f} |")


if __name__ == "__main__":
    main()
