"""Play one seeded episode per seed (by `workers` workers of a backend) and commit them, in order, into a dataset."""

import functools
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from agents import Policy
from agents.rollout import play_episode
from agents.workers import Player, in_order, load_player
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
from envs.games import GameSpec
from envs.pipeline import action_space


def play_and_stage(out: Path, spec: GameSpec, policy: Policy, episode_id: int, seed: int) -> StagedEpisode:
    staging_folder(out, episode_id, seed).mkdir(parents=True)  # exists while the episode is being played
    recorder = EpisodeRecorder(spec, action_space(spec.env_id))
    result = play_episode(policy, spec, seed, on_step=recorder)
    return stage_episode(out, spec, policy, recorder, episode_id, seed, result.episode_return, result.wall_time_s)


def collect(
    player: Player,
    seeds: list[int],
    out: Path,
    workers: int,
    overwrite: bool = False,
    repair: bool = False,
    backend: str = "processes",
    address: str | None = None,
) -> dict:
    """Collect one episode per seed into `out`, skipping seeds it holds (`repair` re-collects damaged ones),
    played by `workers` workers of `backend` (agents.workers.BACKENDS); returns a report."""
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
    play = functools.partial(play_and_stage, out)
    for staged in in_order(play, jobs, player, workers, (spec, policy), backend, address):
        writer.commit(staged)
        steps += staged.info.length
        bar.update()
        bar.set_postfix(
            seed=staged.info.seed,
            ret=f"{staged.info.episode_return:.1f}",
            steps_per_s=f"{steps / (time.perf_counter() - start):.1f}",
        )
    bar.close()
    registration = writer.close()
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
        "minari_id": writer.minari_fields["dataset_id"],
    }
    print(
        f"{out}: {report['episodes']} episodes, {report['steps']} steps, {report['disk_mb']} MB, mean return "
        f"{report['mean_return']} ({policy.policy_id}); this run played {len(jobs)} episodes, "
        f"{steps} steps in {report['wall_time_s']} s "
        f"({report['steps_per_s']} steps/s); summary in {out / SUMMARY_FILE}; "
        f"minari.load_dataset({report['minari_id']!r}) opens it ({registration} links to it)"
    )
    return report
