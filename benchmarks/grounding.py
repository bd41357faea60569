"""The grounding science of issue 17 on the tiny model: PAE-LaMM's Table 7 and SPHINX-V's Table 9, game analogues.

    python benchmarks/grounding.py {table7,table9,all} [--seeds 3] [--data DATASET ...] [--heldout 27-29]
                                   [--frames 16] [--objects 200] [--forms encoder text overlay]
                                   [--out benchmarks/grounding]
                                   [--train-args OVERRIDE ...]
    python benchmarks/grounding.py all --smoke      # micro models, a few steps, a tiny dataset it collects

table7 (PAE-LaMM Table 7: does PVP pretraining help referring segmentation?): the same segmentation fine-tuning
(`python -m train recipe=segmentation`, same data, steps and training seed) from
  - a new model, its vision tower frozen at its random initialisation (the recipe's trainable parts),
  - a new model with its vision tower trained too (what a tower from scratch needs to see anything),
  - the PVP model (--pvp, default checkpoints/pvp_tiny),
  - a PVP model pretrained with its vision tower frozen throughout (stage 2 with stage 1's parts), trained here
    with the steps of pvp_tiny's card on --pvp-data (give pvp_tiny's own data for a matched arm);
then cIoU (`python -m eval.segment`) on --frames held-out frames of each annotated dataset, beside the chance
level: each phrase's majority mask over the training frames, which looks at no image.

table9 (SPHINX-V Table 9: how should a visual prompt reach the model?): the same two-stage visual prompt
training (`python -m train recipe=visual_prompt`, from --pvp) with the marks given as
  - the visual prompt encoder's slots (form=encoder, the task's default),
  - coordinates written in the question text (form=text),
  - marks alpha-blended onto the image (form=overlay);
(vlm.marks) then referring object classification (`python -m eval.refer form=...`, points and boxes) on
--objects held-out objects, each arm evaluated in the form it was trained with.

Every arm runs for --seeds training seeds (0, 1, ...): the table gives mean ± std across them, results.json every
number. Training resumes and evaluations already written are kept: run it again after a kill. Each game's
datasets must be annotated (`python -m collect.annotate src=DATASET`) and hold the --heldout episodes, which are
never trained on.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from collect.annotations import AnnotatedFrames
from core import REPO_ROOT
from core.files import write_json_atomically
from core.runs import FINAL_DIR
from core.seeds import parse_seeds
from eval.segment import evaluate_prior, location_prior
from vlm import marks
from vlm.config import MICRO_SIZES

DATA_DIR = Path("~/.cache/vlmplay/data").expanduser()
DEFAULT_DATA = [DATA_DIR / "spaceinvaders_greedy", DATA_DIR / "carracing"]
TRAIN_SEEDS, HELDOUT_SEEDS = "0-26", "27-29"  # of the 30-episode datasets collected with seeds 0-29
PVP_CHECKPOINT = REPO_ROOT / "checkpoints" / "pvp_tiny"
# pvp_tiny's training (checkpoints/pvp_tiny/README.md), repeated with the vision tower frozen in stage 2
PVP_STEPS = ["recipe.stages.pvp_stage1.steps=3000", "recipe.stages.pvp_stage2.steps=1500"]
PVP_STEPS += ["recipe.stages.pvp_stage3.steps=200"]
FROZEN_VISION = "recipe.stages.pvp_stage2.trainable=pvp_stage1"
VISION_TRAINED = "recipe.stages.segmentation.trainable=[projector,llm_lora,vision]"
SEGMENTATION_STAGE = "segmentation"  # recipe=segmentation's one stage
VP_STAGES = ("visual_prompt_stage1", "visual_prompt_stage2")  # recipe=visual_prompt's
VISUAL_PROMPT_STAGE = VP_STAGES[-1]
PRIOR_ROW = "no image: each phrase's majority mask in the training frames"
PRIOR_FRAMES = 2000  # training frames the majority masks are counted over
SEGMENT_SEED = 0  # eval.segment's default seed= (which held-out frames it draws)
PVP_STAGES = ("pvp_stage1", "pvp_stage2", "pvp_stage3")

# --smoke: the micro model of the tests (vlm.config.MICRO_SIZES), two steps per stage, one frame and a few
# objects evaluated.
SMOKE_COLLECT = ["game=spaceinvaders", "policy=random", "episodes=2", "seed=4"]  # random games of 353 and 329 steps
SMOKE_TRAIN_SEEDS, SMOKE_HELDOUT = "[4]", "[5]"
SMOKE_STEPS = 2


def smoke_stage(stage: str, **task_options) -> list[str]:
    prefix = f"recipe.stages.{stage}"
    options = [f"{prefix}.steps={SMOKE_STEPS}", f"{prefix}.warmup_steps=1"]
    return options + [f"{prefix}.tasks.{task}={value}" for task, value in task_options.items()]


def python(*args: str) -> None:
    """Run `python ARGS` in the repo; stop with its error when it fails."""
    print("$ python", " ".join(args), flush=True)
    result = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
    if result.returncode:
        sys.stderr.write(result.stderr)
        raise SystemExit(f"failed ({result.returncode}): python {' '.join(args)}")


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out: Path = args.out
        self.run_dir: Path = args.run_dir
        self.data: list[Path] = args.data
        self.common = [f"run_dir={self.run_dir}", f"seeds={args.train_seeds}", "val_seeds=null", "progress=false"]
        self.model = [f"+model.config.{key}={value}" for key, value in MICRO_SIZES.items()] if args.smoke else []

    def data_arg(self, data: list[Path]) -> str:
        return "data=[" + ",".join(str(path) for path in data) + "]"

    def train(self, run: str, seed: int, init: str, *overrides: str) -> None:
        """`python -m train` of one arm and training seed; init=none builds the model from the same seed."""
        new_model = [*self.model, f"+model.config.seed={seed}"] if init == "none" else []
        python(
            "-m", "train", self.data_arg(self.data), *self.common, f"run={run}", f"seed={seed}", f"init={init}",
            *new_model, *overrides, *self.args.train_args,
        )  # fmt: skip

    def evaluate(self, module: str, checkpoint: Path, out: Path, *options: str) -> dict:
        """`python -m eval.<module>` on every dataset's held-out episodes -> {game: results.json}."""
        results = {}
        for dataset in self.data:
            folder = out / dataset.name
            if not (folder / "results.json").is_file():
                python(
                    "-m", f"eval.{module}", f"checkpoint={checkpoint}", f"images={dataset}",
                    f"seeds={self.args.heldout}", f"out={folder}", "progress=false", *options,
                )  # fmt: skip
            result = json.loads((folder / "results.json").read_text())
            results[result["game"]] = result
        return results

    def pvp_model(self) -> str:
        """The PVP model both tables start from; --smoke trains a micro one, so that every arm has one size."""
        if not self.args.smoke:
            return str(self.args.pvp)
        steps = [arg for stage in PVP_STAGES for arg in smoke_stage(stage)]
        python("-m", "train", "recipe=pvp", self.data_arg(self.data), *self.common, "run=pvp", "init=none",
               *self.model, *steps)  # fmt: skip
        return str(self.run_dir / "pvp" / PVP_STAGES[-1] / FINAL_DIR)

    def pvp_frozen_vision_model(self) -> str:
        """A PVP model pretrained as pvp_tiny was, but with its vision tower frozen in stage 2 as well."""
        steps = [arg for stage in PVP_STAGES for arg in smoke_stage(stage)] if self.args.smoke else PVP_STEPS
        python("-m", "train", "recipe=pvp", self.data_arg(self.args.pvp_data or self.data), *self.common,
               "run=pvp_frozen_vision", "init=none", *self.model, *steps, FROZEN_VISION)  # fmt: skip
        return str(self.run_dir / "pvp_frozen_vision" / PVP_STAGES[-1] / FINAL_DIR)

    def location_prior(self) -> dict:
        """{game: cIoU summary} of each phrase's majority mask over PRIOR_FRAMES training frames (no image seen),
        on the held-out frames eval.segment draws: the chance level of the table."""
        results = {}
        for dataset in self.data:
            trained = AnnotatedFrames(dataset, parse_seeds(self.args.train_seeds))
            held_out = AnnotatedFrames(dataset, parse_seeds(self.args.heldout))
            prior = location_prior(trained, PRIOR_FRAMES, SEGMENT_SEED)
            results[held_out.game] = evaluate_prior(prior, held_out, min(self.args.frames, len(held_out)), SEGMENT_SEED)
        return results

    def table7(self) -> dict:
        arms = {
            "no PVP, vision frozen": ("none", []),
            "no PVP, vision trained": ("none", [VISION_TRAINED]),
            "PVP": (self.pvp_model(), []),
            "PVP with the vision tower frozen": (self.pvp_frozen_vision_model(), []),
        }
        smoke = smoke_stage(SEGMENTATION_STAGE, **{"segmentation.batch_size": 16}) if self.args.smoke else []
        results = {}
        for number, (arm, (init, overrides)) in enumerate(arms.items()):
            runs = []
            for seed in range(self.args.seeds):
                run = f"table7_arm{number}_s{seed}"
                self.train(run, seed, init, "recipe=segmentation", *smoke, *overrides)
                checkpoint = self.run_dir / run / SEGMENTATION_STAGE / FINAL_DIR
                frames = f"n={self.args.frames}"
                runs.append(self.evaluate("segment", checkpoint, self.out / "table7" / run, frames))
            results[arm] = {"init": init, "overrides": overrides, "seeds": runs}
        results[PRIOR_ROW] = {"init": None, "overrides": [], "seeds": [self.location_prior()]}
        return results

    def table9(self) -> dict:
        init = self.pvp_model()
        smoke = []
        if self.args.smoke:
            smoke = [arg for stage in VP_STAGES for arg in smoke_stage(stage, **{"visual_prompt.batch_size": 2})]
        results = {}
        for form in self.args.forms:
            form_train = [f"recipe.stages.{stage}.tasks.visual_prompt.form={form}" for stage in VP_STAGES]
            runs = []
            for seed in range(self.args.seeds):
                run = f"table9_{form}_s{seed}"
                self.train(run, seed, init, "recipe=visual_prompt", *smoke, *form_train)
                checkpoint = self.run_dir / run / VISUAL_PROMPT_STAGE / FINAL_DIR
                objects, form_eval = f"n={self.args.objects}", f"form={form}"
                runs.append(self.evaluate("refer", checkpoint, self.out / "table9" / run, objects, form_eval))
            results[form] = {"init": init, "seeds": runs}
        return results


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "-"


def table7_text(results: dict) -> str:
    games = sorted({game for arm in results.values() for run in arm["seeds"] for game in run})
    lines = ["| start of the segmentation fine-tuning | " + " | ".join(f"cIoU {g}" for g in games) + " | seeds |"]
    lines.append("|---" * (len(games) + 2) + "|")
    for arm, entry in results.items():
        values = [[run[game]["ciou"] for run in entry["seeds"] if game in run] for game in games]
        if arm == PRIOR_ROW:  # computed, not trained: one value, no spread
            cells, seeds = [f"{value:.3f}" for (value,) in values], "– (no training)"
        else:
            cells, seeds = [mean_std(seed_values) for seed_values in values], str(len(entry["seeds"]))
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(lines)


def table9_text(results: dict) -> str:
    games = sorted({game for entry in results.values() for run in entry["seeds"] for game in run})
    header = " | ".join(f"{kind} {g}" for g in games for kind in ("points", "boxes"))
    lines = [f"| visual prompt as | {header} | seeds |", "|---" * (2 * len(games) + 2) + "|"]
    for form, entry in results.items():
        cells = [
            mean_std([run[game][f"accuracy_{kind}"] for run in entry["seeds"] if game in run])
            for game in games
            for kind in ("point", "box")
        ]
        lines.append(f"| {form} | " + " | ".join(cells) + f" | {len(entry['seeds'])} |")
    return "\n".join(lines)


def smoke_data(work: Path) -> list[Path]:
    """A tiny annotated SpaceInvaders dataset (two random games) in `work`."""
    dataset = work / "spaceinvaders"
    python("-m", "collect", *SMOKE_COLLECT, f"out={dataset}")
    python("-m", "collect.annotate", f"src={dataset}")
    return [dataset]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", choices=("table7", "table9", "all"))
    parser.add_argument("--smoke", action="store_true", help="micro models, 2 steps, a tiny dataset (minutes)")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per arm")
    parser.add_argument("--data", type=Path, nargs="+", default=DEFAULT_DATA, help="annotated collected datasets")
    parser.add_argument("--pvp-data", type=Path, nargs="+", help="what the frozen-vision PVP trains on (--data)")
    parser.add_argument("--train-seeds", default=TRAIN_SEEDS, help="episodes trained on")
    parser.add_argument("--heldout", default=HELDOUT_SEEDS, help="episodes evaluated on, never trained on")
    parser.add_argument("--pvp", type=Path, default=PVP_CHECKPOINT, help="the PVP model both tables start from")
    parser.add_argument("--frames", type=int, default=16, help="held-out frames per dataset for cIoU")
    parser.add_argument("--objects", type=int, default=200, help="held-out objects per dataset for referring")
    parser.add_argument("--forms", nargs="+", choices=tuple(marks.FORMS), default=tuple(marks.FORMS), help="table9's")
    parser.add_argument("--run-dir", type=Path, default=Path("~/.cache/vlmplay/runs/grounding").expanduser())
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "grounding")
    parser.add_argument("--train-args", nargs="*", default=[], metavar="OVERRIDE", help="for every training run")
    args = parser.parse_args()
    if args.seeds < 1 or args.frames < 1 or args.objects < 1:
        parser.error("--seeds, --frames and --objects take whole numbers >= 1")
    if args.smoke:
        work = Path(tempfile.mkdtemp(prefix="grounding_smoke_"))
        args.data, args.pvp_data = smoke_data(work), None
        args.train_seeds, args.heldout = SMOKE_TRAIN_SEEDS, SMOKE_HELDOUT
        args.frames, args.objects = 1, 8
        args.run_dir, args.out = work / "runs", work / "out"
        print(f"smoke run in {work}", flush=True)
    bench = Bench(args)
    results, text = {"settings": {k: str(v) for k, v in vars(args).items()}}, []
    if args.tables in ("table7", "all"):
        results["table7"] = bench.table7()
        text.append("PAE-LaMM Table 7 analogue: cIoU after the same segmentation fine-tuning\n\n" + table7_text(
            results["table7"]))  # fmt: skip
    if args.tables in ("table9", "all"):
        results["table9"] = bench.table9()
        text.append("SPHINX-V Table 9 analogue: referring object classification accuracy\n\n" + table9_text(
            results["table9"]))  # fmt: skip
    report = "\n\n".join(text)
    results["tables"] = report
    write_json_atomically(args.out / "results.json", results)
    print("\n" + report + f"\n\nresults.json in {args.out}")


if __name__ == "__main__":
    main()
