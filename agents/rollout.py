"""One seeded episode of any Policy in its game's pipeline."""

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agents.base import Observation, Policy
from envs.games import GameSpec
from envs.pipeline import frame_tap, make_play_env


@dataclass
class Step:
    frame: np.ndarray  # [H, W, 3] uint8 the policy looked at
    action: np.ndarray | int  # env action taken
    label: (
        np.ndarray | int
    )  # the action a dataset records as this step's label (Policy.label: the action taken, or a labeller's)
    reward: float  # unclipped game reward it earned
    terminated: bool  # the real episode ended (all lives lost, track done)
    truncated: bool  # the episode hit its time limit


@dataclass
class EpisodeResult:
    seed: int
    episode_return: float  # the full-game score, as RL-Zoo3's Monitor reports it
    length: int  # policy decisions
    wall_time_s: float


def play_episode(
    policy: Policy,
    spec: GameSpec,
    seed: int,
    on_step: Callable[[Step], None] | None = None,
    env_id: str | None = None,
    env_kwargs: dict | None = None,
) -> EpisodeResult:
    """Play until the real end of the episode (life losses inside the pipeline do not end it).

    `env_id` plays in another registration of the same game (the pixel-identical fast CarRacing);
    `env_kwargs` go to the env's constructor (e.g. sticky actions).
    """
    start = time.perf_counter()
    pipeline = policy.pipeline or spec.pipeline
    venv = make_play_env(spec, pipeline, seed, env_id=env_id, stats_dir=policy.stats_dir, env_kwargs=env_kwargs)
    tap = frame_tap(venv)
    policy.reset(seed)
    agent_obs, episode_start, length = venv.reset(), True, 0
    try:
        while True:
            frame = tap.frame
            return_before = tap.raw_return
            action = policy.act(Observation(frame=frame, agent_obs=agent_obs, episode_start=episode_start))
            agent_obs, _, dones, infos = venv.step(np.array([action]))
            length += 1
            episode_start = bool(dones[0])
            episode = infos[0].get("episode")
            truncated = episode is not None and bool(infos[0].get("TimeLimit.truncated", False))
            if on_step is not None:
                # After the real end the VecEnv has already reset: the score is in the Monitor's info.
                reward = episode["r"] - return_before if episode is not None else tap.raw_return - return_before
                terminated = episode is not None and not truncated
                on_step(Step(frame, action, policy.label(action), float(reward), terminated, truncated))
            if episode is not None:
                return EpisodeResult(seed, float(episode["r"]), length, time.perf_counter() - start)
    finally:
        venv.close()
