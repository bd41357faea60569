"""Play one seeded episode per seed (in `workers` processes) and commit them, in order, into a dataset."""

import ctypes
import os
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from agents import Policy, load_policy
from agents.rollout import play_episode
from collect.dataset import DATA_DIR, CollectedDataset
from collect.summary import write_summary
from collect.writer import (
    SUMMARY_FILE,
    DatasetWriter,
    EpisodeRecorder,
    StagedEpisode,
    dataset_size_mb,
    stage_episode,
    staging_folder,
)
from envs.games import GameSpec, get_game
from envs.pipeline import action_space

# One torch thread per player: faster on a shared CPU, and the same arithmetic whatever `workers` is.
PLAYER_TORCH_THREADS = 1
PR_SET_PDEATHSIG = 1  # linux/prctl.h

_worker: dict = {}  # the player of a worker process, set by _start_worker


class Player(NamedTuple):
    """Which policy plays: what a worker process needs to build its own copy."""

    game: str
    policy: str  # a registered policy name (agents.registry)
    options: dict  # the policy's command-line options (None = not given), e.g. {"expert": None, "deterministic": True}


def load_player(player: Player) -> tuple[GameSpec, Policy]:
    torch.set_num_threads(PLAYER_TORCH_THREADS)
    spec = get_game(player.game)
    return spec, load_policy(player.policy, spec, **player.options)


def play_and_stage(out: Path, spec: GameSpec, policy: Policy, episode_id: int, seed: int) -> StagedEpisode:
    staging_folder(out, episode_id, seed).mkdir(parents=True)  # exists while the episode is being played
    recorder = EpisodeRecorder(spec, action_space(spec.env_id))
    result = play_episode(policy, spec, seed, on_step=recorder)
    return stage_episode(out, spec, policy, recorder, episode_id, seed, result.episode_return, result.wall_time_s)


def _die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive a killed collector: it would write into staging while a resumed run cleans it."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def _start_worker(out: Path, player: Player, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    spec, policy = load_player(player)
    _worker.update(out=out, spec=spec, policy=policy)


def _play_in_worker(episode_id: int, seed: int) -> StagedEpisode:
    return play_and_stage(_worker["out"], _worker["spec"], _worker["policy"], episode_id, seed)


def staged_in_order(
    jobs: list[tuple[int, int]], out: Path, spec: GameSpec, policy: Policy, player: Player, workers: int
) -> Iterator[StagedEpisode]:
    """Staged episodes in the order of `jobs` (episode id, seed), played here or in `workers` processes."""
    if workers == 1 or len(jobs) <= 1:
        for episode_id, seed in jobs:
            yield play_and_stage(out, spec, policy, episode_id, seed)
        return
    # spawn, not fork: a forked child inherits torch's thread pool state and the parent's open files.
    pool = ProcessPoolExecutor(
        min(workers, len(jobs)),
        mp_context=get_context("spawn"),
        initializer=_start_worker,
        initargs=(out, player, os.getpid()),
    )
    try:
        futures = [pool.submit(_play_in_worker, episode_id, seed) for episode_id, seed in jobs]
        for future in futures:
            yield future.result()
    finally:
        pool.shutdown(cancel_futures=True)


def collect(
    player: Player, seeds: list[int], out: Path, workers: int, overwrite: bool = False, repair: bool = False
) -> dict:
    """Collect one episode per seed into `out`, skipping seeds it holds (`repair` re-collects damaged ones);
    returns a report."""
    spec, policy = load_player(player)
    writer = DatasetWriter(out, spec, policy, overwrite, repair)
    held = set(writer.seeds)
    new_seeds = [seed for seed in seeds if seed not in held]
    jobs = [(episode.episode_id, episode.seed) for episode in writer.damaged]
    jobs += [(len(writer.episodes) + index, seed) for index, seed in enumerate(new_seeds)]
    if writer.damaged:
        print(f"re-collecting damaged episodes (seeds {[episode.seed for episode in writer.damaged]})")
    if len(new_seeds) < len(seeds):
        print(
            f"{out} already holds {len(seeds) - len(new_seeds)} of the {len(seeds)} seeds: "
            f"playing the other {len(new_seeds)}"
        )

    start, steps = time.perf_counter(), 0
    bar = tqdm(total=len(jobs), desc=f"collect {spec.name} {policy.policy_id}", unit="episode")
    for staged in staged_in_order(jobs, out, spec, policy, player, workers):
        writer.commit(staged)
        steps += staged.info.length
        bar.update()
        bar.set_postfix(
            seed=staged.info.seed,
            ret=f"{staged.info.episode_return:.1f}",
            steps_per_s=f"{steps / (time.perf_counter() - start):.1f}",
        )
    bar.close()
    writer.close()
    wall_time = time.perf_counter() - start

    dataset = CollectedDataset(out, verify=False)
    write_summary(dataset, out / SUMMARY_FILE)
    report = {
        "episodes": len(dataset.episodes),
        "steps": len(dataset),
        "disk_mb": dataset_size_mb(out / DATA_DIR),
        "mean_return": round(float(np.mean([episode.episode_return for episode in dataset.episodes])), 2),
        "played_episodes": len(jobs),
        "played_steps": steps,
        "wall_time_s": round(wall_time, 1),
        "steps_per_s": round(steps / wall_time, 1) if steps else 0.0,
    }
    print(
        f"{out}: {report['episodes']} episodes, {report['steps']} steps, {report['disk_mb']} MB, mean return "
        f"{report['mean_return']} ({policy.policy_id}); this run played {len(jobs)} episodes, "
        f"{steps} steps in {report['wall_time_s']} s "
        f"({report['steps_per_s']} steps/s); summary in {out / SUMMARY_FILE}"
    )
    return report
