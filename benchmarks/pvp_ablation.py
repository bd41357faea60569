"""PAE-LaMM's vision-encoder ablation on game frames, with the tiny model on CPU.

    python benchmarks/pvp_ablation.py [--make-frames] [--n 3] [--frames ~/.cache/vlmplay/frames]
                                      [--out benchmarks/pvp_ablation]
                                      [--train-args recipe.stages.pvp_stage1.steps=800 ...]

1. `python -m train recipe=pvp model=tiny` on the training frames of both games: stage 1 (vision
   frozen), stage 2 (vision adapted), stage 3 (vision frozen, PVP mixed with game imitation).
2. The same stage 2 from the same stage-1 model with the vision encoder frozen: same steps, data, seed.
3. RE (eval.reconstruct, all 64x64 locations) of every model on `n` held-out frames per game, beside
   image-blind baselines: all black, and the per-location median of the training frames (what a
   model that ignores the image can at best learn). "detail RE" is RE over the pixels that median
   gets wrong by more than DETAIL_LEVELS: there a model has to see the frame.
Prints the tables, writes results.json and one PNG per held-out frame (columns: ground truth,
median prior, stage 1, stage 2 frozen, stage 2 adapted, stage 3). Training is resumable: run the
script again after a kill. --make-frames collects the frames first (seeds below).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from collect.sources import ImageSources
from core import REPO_ROOT
from core.runs import FINAL_DIR
from eval.reconstruct import PNG_UPSCALE, SIZE, Reconstructor, reconstruction_error, worst_answers
from train.checkpoint import read_summary
from vlm import VLM, prompts

# game -> (policy, training seeds, held-out seeds); held-out seeds are never trained on, and lie
# outside both collection (0+) and evaluation (100000+) ranges.
GAMES = {
    "spaceinvaders": ("expert", (0, 8), (90000, 3)),
    "carracing": ("expert", (0, 4), (90000, 2)),
}
PRIOR_FRAMES = 2000  # training frames the median prior is taken over
DETAIL_LEVELS = 48  # |gt - prior| summed over channels above this marks a detail pixel
SEED = 0
MODELS = ("stage 1 (vision frozen)", "stage 2, vision frozen", "stage 2, vision adapted", "stage 3 (after adapted)")


def run(*args: str) -> None:
    print("$", " ".join(args), flush=True)
    subprocess.run(args, cwd=REPO_ROOT, check=True)


def make_frames(frames: Path) -> None:
    for game, (policy, (train_seed, train_episodes), (heldout_seed, heldout_episodes)) in GAMES.items():
        for split, seed, episodes in (
            ("train", train_seed, train_episodes),
            ("heldout", heldout_seed, heldout_episodes),
        ):
            run(
                sys.executable,
                "-m",
                "collect",
                f"game={game}",
                f"policy={policy}",
                f"episodes={episodes}",
                f"seed={seed}",
                f"out={frames / f'{game}_{split}'}",
            )


def train(frames: Path, run_dir: Path, export: Path, train_args: list[str]) -> dict[str, Path]:
    data = "data=[" + ",".join(str(frames / f"{game}_train") for game in GAMES) + "]"
    common = [sys.executable, "-m", "train", "model=tiny", data, f"run_dir={run_dir}", f"seed={SEED}"]
    run(*common, *train_args, "recipe=pvp", "run=adapted", f"out={export}")
    adapted = run_dir / "adapted"
    stage2_args = [
        arg for arg in train_args if "pvp_stage1" not in arg and "pvp_stage3" not in arg
    ]  # not in recipe=pvp_stage2
    run(
        *common,
        *stage2_args,
        "recipe=pvp_stage2",
        "run=frozen",
        f"init={adapted / 'pvp_stage1' / FINAL_DIR}",
        "recipe.stages.pvp_stage2.trainable=pvp_stage1",
    )
    stage_dirs = [
        adapted / "pvp_stage1",
        run_dir / "frozen" / "pvp_stage2",
        adapted / "pvp_stage2",
        adapted / "pvp_stage3",
    ]
    return dict(zip(MODELS, stage_dirs))


def median_prior(source: ImageSources, rng: np.random.Generator) -> np.ndarray:
    indices = rng.choice(len(source), size=min(PRIOR_FRAMES, len(source)), replace=False)
    return np.median(np.stack([prompts.reconstruction_target(source[int(i)]) for i in indices]), axis=0).astype(
        np.uint8
    )


def detail_error(prediction: np.ndarray, target: np.ndarray, prior: np.ndarray) -> float:
    detail = np.abs(target.astype(np.int64) - prior).sum(-1) > DETAIL_LEVELS  # [64, 64]
    if not detail.any():
        return float("nan")
    return reconstruction_error(prediction[detail][None], target[detail][None])


def panel(images: list[np.ndarray]) -> Image.Image:
    gap = np.full((SIZE, 1, 3), prompts.RGB_MAX, dtype=np.uint8)
    row = np.concatenate([part for image in images for part in (image, gap)][:-1], axis=1)
    return Image.fromarray(row).resize((row.shape[1] * PNG_UPSCALE, SIZE * PNG_UPSCALE), Image.NEAREST)


def evaluate(frames: Path, stage_dirs: dict[str, Path], n: int, out: Path) -> dict:
    models = {name: VLM.from_pretrained(str(stage_dir / FINAL_DIR)).eval() for name, stage_dir in stage_dirs.items()}
    reconstructors = {name: Reconstructor(model, batch=1024) for name, model in models.items()}
    results = {}
    for game in GAMES:
        rng = np.random.default_rng(SEED)
        prior = median_prior(ImageSources([str(frames / f"{game}_train")]), rng)
        heldout = ImageSources([str(frames / f"{game}_heldout")])
        indices = sorted(rng.choice(len(heldout), size=n, replace=False).tolist())
        rows = {
            name: {"re": [], "detail_re": [], "unparsed": [], "seconds": []}
            for name in ("all black", "median prior", *models)
        }
        for index in indices:
            frame = heldout[index]
            target = prompts.reconstruction_target(frame)
            predictions = {"all black": np.zeros_like(target), "median prior": prior}
            for name, reconstructor in reconstructors.items():
                start = time.perf_counter()
                prediction, valid = reconstructor(frame)
                rows[name]["seconds"].append(time.perf_counter() - start)
                rows[name]["unparsed"].append(int((~valid).sum()))
                predictions[name] = worst_answers(prediction, target, valid)
            for name, prediction in predictions.items():
                rows[name]["re"].append(reconstruction_error(prediction, target))
                rows[name]["detail_re"].append(detail_error(prediction, target, prior))
            panel([target, prior, *(predictions[name] for name in models)]).save(out / f"{game}_{index:05d}.png")
            print(
                f"{game} frame {index}: " + ", ".join(f"{name} {rows[name]['re'][-1]:.2f}" for name in rows), flush=True
            )
        results[game] = {"frames": indices, "models": rows}
    return results


def tables(results: dict, stage_dirs: dict[str, Path]) -> str:
    games = list(results)
    header = "| model | " + " | ".join(f"RE {g} | detail RE {g}" for g in games) + " |"
    lines = [header, "|---" * (1 + 2 * len(games)) + "|"]
    for name in results[games[0]]["models"]:
        cells = []
        for game in games:
            row = results[game]["models"][name]
            cells += [f"{np.mean(row['re']):.2f}", f"{np.nanmean(row['detail_re']):.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| stage | trainable | steps | samples | wall time (s) | samples/s |", "|---|---|---|---|---|---|"]
    for name, stage_dir in stage_dirs.items():
        s = read_summary(stage_dir)
        lines.append(
            f"| {name} | {', '.join(s['trainable'])} | {s['steps']} | {s['samples']} | "
            f"{s['train_seconds']:.0f} | {s['samples_per_s']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=Path, default=Path("~/.cache/vlmplay/frames").expanduser())
    parser.add_argument("--run-dir", type=Path, default=Path("~/.cache/vlmplay/runs/pvp_ablation").expanduser())
    parser.add_argument(
        "--export",
        type=Path,
        default=Path("~/.cache/vlmplay/runs/pvp_ablation/pvp_tiny").expanduser(),
        help="the stage-3 model's copy (give checkpoints/pvp_tiny to replace the shipped one)",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "pvp_ablation")
    parser.add_argument("--n", type=int, default=3, help="held-out frames per game")
    parser.add_argument("--make-frames", action="store_true")
    parser.add_argument(
        "--train-args",
        nargs="*",
        default=[],
        metavar="OVERRIDE",
        help="Hydra overrides for the training commands, e.g. recipe.stages.pvp_stage2.steps=300 "
        "(the frozen arm gets those not naming pvp_stage1 or pvp_stage3, so both stage-2 arms match)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.make_frames:
        make_frames(args.frames)
    stage_dirs = train(args.frames, args.run_dir, args.export, args.train_args)
    args.out.mkdir(parents=True, exist_ok=True)
    results = evaluate(args.frames, stage_dirs, args.n, args.out)
    report = tables(results, stage_dirs)
    summaries = {name: read_summary(stage_dir) for name, stage_dir in stage_dirs.items()}
    (args.out / "results.json").write_text(json.dumps({"reconstruction": results, "training": summaries}, indent=2))
    print(report)


if __name__ == "__main__":
    main()
