"""Steps/s of Gymnasium's CarRacing-v3 vs. our pixel-identical CarRacingFast-v3.

Both envs replay the same seeds and actions (random actions mixed with a
track-following controller, recorded once up front) with render_mode=None and
state-pixel observations; only ``step`` is timed (no policy, no torch). Timing
is interleaved in short blocks, alternating which env goes first, so that load
from other processes hits both alike.

    python benchmarks/env_speed.py          # speed tables
    python benchmarks/env_speed.py --check  # first the full identity check
                                            # (3 seeds x 1000 steps)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from core import REPO_ROOT
from envs.fast_car_racing import (
    BASE_CAR_RACING_ID,
    FAST_CAR_RACING_ID,
    FastFrameSkip,
    register_fast_car_racing,
)


def _load_identity_tests():
    """The identity checks and action policy of tests/test_fast_car_racing.py."""
    path = REPO_ROOT / "tests" / "test_fast_car_racing.py"
    spec = importlib.util.spec_from_file_location("test_fast_car_racing", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


identity_tests = _load_identity_tests()
SEEDS = identity_tests.SEEDS
FULL_STEPS = identity_tests.FULL_STEPS

ZOO_FRAME_SKIP = 2  # rl_zoo3's ppo CarRacing-v3 recipe
ZOO_OBS_SHAPE = [64, 64]
ZOO_N_ENVS = 8


def zoo_wrappers(env: gym.Env, frame_skip: Callable[[gym.Env], gym.Env]) -> gym.Env:
    """The env_wrapper list of rl_zoo3's ppo CarRacing-v3 recipe."""
    from rl_zoo3.wrappers import YAMLCompatResizeObservation

    env = frame_skip(env)
    env = YAMLCompatResizeObservation(env, ZOO_OBS_SHAPE)
    return gym.wrappers.GrayscaleObservation(env, keep_dim=True)


def record_actions(seeds: list[int], steps: int) -> dict[int, list[np.ndarray]]:
    """Per seed, the actions of one episode of ``mixed_actions``."""
    env = gym.make(FAST_CAR_RACING_ID)
    actions = {}
    for seed in seeds:
        env.reset(seed=seed)
        policy = identity_tests.mixed_actions(env, seed)
        actions[seed] = []
        for _ in range(steps):
            action = policy()
            actions[seed].append(action)
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
    env.close()
    return actions


class TimedRunner:
    """Steps one env through the recorded episodes, timing only ``step``."""

    def __init__(self, env: gym.Env, actions: dict[int, list[np.ndarray]], first_episode=0):
        self.env = env
        self.episodes = [(seed, acts) for seed, acts in actions.items()]
        self.episode = first_episode - 1
        self.t = 0
        self.steps = 0
        self.seconds = 0.0
        self._next_episode()

    def _next_episode(self):
        self.episode = (self.episode + 1) % len(self.episodes)
        self.t = 0
        self.env.reset(seed=self.episodes[self.episode][0])

    def run(self, n: int):
        step = self.env.step
        for _ in range(n):
            acts = self.episodes[self.episode][1]
            start = time.perf_counter()
            _, _, terminated, truncated, _ = step(acts[self.t])
            self.seconds += time.perf_counter() - start
            self.steps += 1
            self.t += 1
            if terminated or truncated or self.t == len(acts):
                self._next_episode()


class RoundRobinRunner:
    """Several envs stepped one step each in turn, as DummyVecEnv does."""

    def __init__(self, make_env: Callable[[], gym.Env], actions, n_envs: int):
        self.runners = [TimedRunner(make_env(), actions, first_episode=i) for i in range(n_envs)]

    def run(self, n: int):
        for _ in range(n // len(self.runners)):
            for runner in self.runners:
                runner.run(1)

    @property
    def steps(self) -> int:
        return sum(r.steps for r in self.runners)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.runners)


def measure(runners: dict, steps: int, block: int) -> dict[str, float]:
    """Steps/s of each runner, run in alternating blocks of ``block`` steps."""
    names = list(runners)
    for i in range(steps // block):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            runners[name].run(block)
    return {name: r.steps / r.seconds for name, r in runners.items()}


def print_table(title: str, rates: dict[str, float], baseline: str):
    print(f"\n{title}")
    print(f"{'env':<44} {'steps/s':>9} {'vs gymnasium':>13}")
    for name, rate in rates.items():
        print(f"{name:<44} {rate:>9.1f} {rate / rates[baseline]:>12.2f}x")


def load_average() -> str:
    return "load average " + " ".join(f"{load:.1f}" for load in os.getloadavg())


def measure_raw(actions, steps: int, block: int):
    rates = measure(
        {
            BASE_CAR_RACING_ID: TimedRunner(gym.make(BASE_CAR_RACING_ID), actions),
            FAST_CAR_RACING_ID: TimedRunner(gym.make(FAST_CAR_RACING_ID), actions),
        },
        steps,
        block,
    )
    print_table("Raw env steps", rates, BASE_CAR_RACING_ID)


def measure_round_robin(actions, steps: int, block: int):
    """ZOO_N_ENVS envs of each kind, stepped in turn as a DummyVecEnv does."""
    base_name = f"{ZOO_N_ENVS} x {BASE_CAR_RACING_ID}"
    rates = measure(
        {
            base_name: RoundRobinRunner(lambda: gym.make(BASE_CAR_RACING_ID), actions, ZOO_N_ENVS),
            f"{ZOO_N_ENVS} x {FAST_CAR_RACING_ID}": RoundRobinRunner(
                lambda: gym.make(FAST_CAR_RACING_ID), actions, ZOO_N_ENVS
            ),
        },
        steps,
        max(ZOO_N_ENVS, block - block % ZOO_N_ENVS),
    )
    print_table(
        f"{ZOO_N_ENVS} envs stepped in turn, as the zoo's DummyVecEnv does",
        rates,
        base_name,
    )


def measure_frame_skip(actions, steps: int, block: int):
    """The env_wrapper pipeline of the zoo's ppo recipe, per frame skip."""
    from rl_zoo3.wrappers import FrameSkip

    def zoo_skip(env):
        return FrameSkip(env, skip=ZOO_FRAME_SKIP)

    def fast_skip(env):
        return FastFrameSkip(env, skip=ZOO_FRAME_SKIP)

    base_name = f"{BASE_CAR_RACING_ID} + FrameSkip"
    rates = measure(
        {
            base_name: TimedRunner(zoo_wrappers(gym.make(BASE_CAR_RACING_ID), zoo_skip), actions),
            f"{FAST_CAR_RACING_ID} + FrameSkip": TimedRunner(
                zoo_wrappers(gym.make(FAST_CAR_RACING_ID), zoo_skip), actions
            ),
            f"{FAST_CAR_RACING_ID} + FastFrameSkip": TimedRunner(
                zoo_wrappers(gym.make(FAST_CAR_RACING_ID), fast_skip), actions
            ),
        },
        steps // ZOO_FRAME_SKIP,
        block,
    )
    print_table(
        f"Zoo ppo pipeline: FrameSkip({ZOO_FRAME_SKIP}) + resize {ZOO_OBS_SHAPE} + grayscale (agent steps/s)",
        rates,
        base_name,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="timed steps per env")
    parser.add_argument("--block", type=int, default=100, help="steps per timing block")
    parser.add_argument("--check", action="store_true", help="first run the full identity check")
    args = parser.parse_args()
    register_fast_car_racing()

    if args.check:
        start = time.perf_counter()
        for seed in SEEDS:
            identity_tests.test_rollout_identical(seed)
        print(
            f"identity check: {len(SEEDS)} seeds x {FULL_STEPS} steps, all "
            "observations, rewards, flags and infos equal "
            f"({time.perf_counter() - start:.0f} s)"
        )

    actions = record_actions(SEEDS, FULL_STEPS)
    print(
        f"{args.steps} steps per env, blocks of {args.block}, seeds {SEEDS}, "
        f"render_mode=None, state-pixel observations; {load_average()}"
    )
    measure_raw(actions, args.steps, args.block)
    measure_round_robin(actions, args.steps, args.block)
    measure_frame_skip(actions, args.steps, args.block)
    print(f"\n{load_average()}")


if __name__ == "__main__":
    main()
