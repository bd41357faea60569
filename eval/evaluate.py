"""Seeded evaluation of any Policy: returns table, results.json, one MP4 per episode."""

import functools
import platform
import time
from importlib.metadata import version
from pathlib import Path

import imageio.v3 as imageio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
from tqdm import tqdm

from agents import Policy
from agents.rollout import EpisodeResult, Step, play_episode
from agents.workers import Player, in_order
from core.files import check_writable, write_atomically, write_json_atomically
from envs.games import GameSpec
from eval.stats import summary

RETURNS_PNG = "returns.png"
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
        def write_mp4(tmp: Path) -> None:  # the temporary name has no .mp4: name the format to imageio and ffmpeg
            imageio.imwrite(
                tmp, self.frames, extension=".mp4", plugin="FFMPEG", fps=self.fps, macro_block_size=1,
                output_params=["-f", "mp4"],
            )  # fmt: skip

        write_atomically(path, write_mp4)


def plot_returns(report: dict, spec: GameSpec, path: Path) -> None:
    """The return of every seed, the mean with its bootstrap interval, and the game's expert for reference."""
    seeds = [str(e["seed"]) for e in report["episodes"]]
    stats = report["return"]
    figure, axes = plt.subplots(figsize=(max(6.0, 0.45 * len(seeds)), 4))
    axes.bar(seeds, [e["return"] for e in report["episodes"]], color="tab:blue", label=report["policy"])
    axes.axhspan(stats["ci95_low"], stats["ci95_high"], color="tab:blue", alpha=0.15, label="95 % CI of the mean")
    axes.axhline(stats["mean"], color="tab:blue", linestyle="--", label=f"mean {stats['mean']:.1f}")
    axes.axhline(spec.expert_return, color="tab:green", label=f"expert's mean {spec.expert_return:.1f}")
    axes.set_xlabel("seed")
    axes.set_ylabel("episode return")
    axes.tick_params(axis="x", labelrotation=90)
    axes.set_title(f"{spec.name}: {report['policy']}")
    axes.legend(fontsize=8)
    figure.tight_layout()
    write_atomically(path, lambda tmp: figure.savefig(tmp, dpi=100, format="png"))
    plt.close(figure)


def play_and_record(
    video_dir: Path | None, env_id: str, env_kwargs: dict | None, spec: GameSpec, policy: Policy, seed: int
) -> tuple[EpisodeResult, dict]:
    """One evaluation episode (and its MP4 in `video_dir`): its result and the policy's report counts it added."""
    before = policy.report()
    recorder = VideoRecorder(spec) if video_dir is not None else None
    result = play_episode(policy, spec, seed, on_step=recorder, env_id=env_id, env_kwargs=env_kwargs)
    if recorder is not None:
        video_dir.mkdir(parents=True, exist_ok=True)
        recorder.write(video_dir / f"episode_seed{seed}.mp4")
    return result, {key: value - before.get(key, 0) for key, value in policy.report().items()}


def evaluate(
    policy: Policy,
    spec: GameSpec,
    seeds: list[int],
    out: Path,
    video: bool,
    env_id: str | None = None,
    env_kwargs: dict | None = None,
    workers: int = 1,
    player: Player | None = None,
    backend: str = "processes",
    address: str | None = None,
) -> dict:
    """Play one episode per seed, here or by `workers` workers of `backend` that build `player` (the same
    results: each episode is seeded); write results.json (and videos) to `out`; return the results dict."""
    check_writable(out)
    env_id = env_id or spec.env_id
    if workers > 1 and player is None:
        raise ValueError("evaluate with workers > 1 needs the player that builds the policy in each worker")
    play = functools.partial(play_and_record, out if video else None, env_id, env_kwargs)
    start = time.perf_counter()
    results, counts = [], {}
    bar = tqdm(total=len(seeds), desc=f"{spec.name} {policy.policy_id}", unit="episode")
    for result, added in in_order(play, [(seed,) for seed in seeds], player, workers, (spec, policy), backend, address):
        results.append(result)
        counts = {key: counts.get(key, 0) + value for key, value in added.items()}
        bar.update()
        bar.set_postfix(seed=str(result.seed), ret=f"{result.episode_return:.1f}")
    bar.close()
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
        "workers": workers,
        "backend": backend,
        "versions": package_versions(),
    }
    policy_report = policy.summarize_report(counts)
    if policy_report:
        report["policy_report"] = policy_report
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out / "results.json", report)
    plot_returns(report, spec, out / RETURNS_PNG)
    print(format_table(policy.policy_id, spec, results, report["return"]))
    for key, value in report.get("policy_report", {}).items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    print(f"wrote {out / 'results.json'}, {RETURNS_PNG}" + (f" and {len(results)} videos" if video else ""))
    return report
