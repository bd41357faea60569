"""Seeded evaluation of any Policy: returns table, results.json, one MP4 per episode."""

import platform
import time
from importlib.metadata import version
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from tqdm import tqdm

from agents import Policy
from agents.rollout import EpisodeResult, Step, play_episode
from core.files import check_writable, write_json_atomically
from envs.games import GameSpec
from eval.stats import summary

VIDEO_MIN_SIDE = 384  # small game frames are upscaled (nearest) to at least this many pixels
PACKAGES = ("vlmplay", "torch", "gymnasium", "ale-py", "stable-baselines3", "sb3-contrib", "rl_zoo3", "transformers")


def package_versions() -> dict[str, str]:
    return {name: version(name) for name in PACKAGES} | {"python": platform.python_version()}


def format_table(policy_id: str, spec: GameSpec, results: list[EpisodeResult], stats: dict) -> str:
    lines = [f"{policy_id} on {spec.name}", f"{'seed':>8} {'return':>10} {'length':>8}"]
    lines += [f"{r.seed:>8} {r.episode_return:>10.2f} {r.length:>8}" for r in results]
    lines.append("  ".join(f"{name} {stats[name]:.2f}" for name in ("mean", "std", "min", "max")))
    lines.append(
        f"95% CI of the mean [{stats['ci95_low']:.2f}, {stats['ci95_high']:.2f}] (bootstrap), IQM {stats['iqm']:.2f}, "
        f"{100 * stats['expert_fraction']:.1f} % of the expert's {spec.expert_return:.2f}"
        + (f", human-normalised {stats['human_normalised']:.3f}" if "human_normalised" in stats else "")
    )
    return "\n".join(lines)


class VideoRecorder:
    """Collects the frames the policy saw in one episode and writes them as an MP4."""

    def __init__(self, spec: GameSpec):
        self.fps = spec.decisions_per_second
        self.scale = int(np.ceil(VIDEO_MIN_SIDE / min(spec.frame_shape[:2])))
        self.frames: list[np.ndarray] = []

    def __call__(self, step: Step) -> None:
        self.frames.append(step.frame.repeat(self.scale, axis=0).repeat(self.scale, axis=1))

    def write(self, path: Path) -> None:
        imageio.mimwrite(path, self.frames, fps=self.fps, macro_block_size=1)


def evaluate(
    policy: Policy,
    spec: GameSpec,
    seeds: list[int],
    out: Path,
    video: bool,
    env_id: str | None = None,
    env_kwargs: dict | None = None,
) -> dict:
    """Play one episode per seed; write results.json (and videos) to `out`; return the results dict."""
    check_writable(out)
    env_id = env_id or spec.env_id
    start = time.perf_counter()
    results = []
    bar = tqdm(seeds, desc=f"{spec.name} {policy.policy_id}", unit="episode")
    for seed in bar:
        recorder = VideoRecorder(spec) if video else None
        result = play_episode(policy, spec, seed, on_step=recorder, env_id=env_id, env_kwargs=env_kwargs)
        results.append(result)
        bar.set_postfix(seed=str(seed), ret=f"{result.episode_return:.1f}")
        if recorder is not None:
            out.mkdir(parents=True, exist_ok=True)
            recorder.write(out / f"episode_seed{seed}.mp4")
    wall_time = time.perf_counter() - start
    report = {
        "game": spec.name,
        "env_id": env_id,
        "env_kwargs": env_kwargs or {},
        "policy": policy.policy_id,
        "seeds": seeds,
        "episodes": [
            {"seed": r.seed, "return": r.episode_return, "length": r.length, "wall_time_s": round(r.wall_time_s, 3)}
            for r in results
        ],
        "return": summary([r.episode_return for r in results], spec),
        "wall_time_s": round(wall_time, 3),
        "env_steps_per_s": round(sum(r.length for r in results) / wall_time, 1),
        "versions": package_versions(),
    }
    policy_report = policy.report()
    if policy_report:
        report["policy_report"] = policy_report
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out / "results.json", report)
    print(format_table(policy.policy_id, spec, results, report["return"]))
    for key, value in report.get("policy_report", {}).items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    print(f"wrote {out / 'results.json'}" + (f" and {len(results)} videos" if video else ""))
    return report
