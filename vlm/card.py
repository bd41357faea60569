"""Model cards: a checkpoint folder's README.md in Hugging Face's format (YAML front matter, then Markdown),
generated from what the folder holds, never written by hand:

    config.json       the model (VLM.save_pretrained)
    training.json     the training command and the stage's summary, written with a stage's final/ model
    validation.json   held-out action accuracy (the game task writes it beside RUN/STAGE/final)
    results.json      of `python -m eval`, `eval.reconstruct`, `eval.segment` or `eval.refer` runs of the model,
                      given by path

    python -m vlm.card checkpoint=DIR [results=[RESULTS_JSON,...]] [summary=SUMMARY_JSON] [command='python -m ...']

summary= and command= stand in for training.json in a folder without one (a copy of a stage's final/ model).
"""

import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig
from safetensors import safe_open

from core.cli import command
from core.errors import UserError
from core.files import write_json_atomically, write_text_atomically
from core.integrity import read_json
from core.runs import FINAL_DIR, SUMMARY_FILE, model_name
from core.schema import existing_path, existing_paths, option
from vlm import marks
from vlm.checkpoint import ADAPTER_WEIGHTS_FILE, checked_checkpoint_config
from vlm.config import VLMConfig
from vlm.model import ADAPTER_CONFIG_FILE, LORA_PARAMETER_TAG, WEIGHTS_FILE

STICKY_ACTIONS_KWARG = "repeat_action_probability"  # the env setting `python -m eval sticky_actions=true` makes
CARD_FILE = "README.md"
TRAINING_FILE = "training.json"
# What the game task's validation writes beside a stage's final/ (train.tasks.game, a room vlm does not import).
VALIDATION_FILE = "validation.json"
CONFUSION_PNG = "confusion.png"
LIBRARY = "vlmplay"
NO_INIT = "none"  # train's init=none: a new model, no base model
# What the card reads of each file; a file without it is refused in one line.
SUMMARY_KEYS = (
    *("stage", "trainable", "steps", "resumed_from_step", "samples", "train_seconds", "samples_per_s", "world_size"),
    "last_losses",
)
VALIDATION_KEYS = ("game", "seeds", "samples", "accuracy", "majority_action", "majority_accuracy")
PLAY_KEYS = ("game", "env_id", "policy", "seeds", "return")
RETURN_KEYS = ("mean", "std", "min", "max", "ci95_low", "ci95_high", "iqm")
RECONSTRUCTION_KEYS = ("mean_re", "source", "seeds", "images", "questions")
SEGMENTATION_KEYS = ("ciou", "ciou_ci95_low", "ciou_ci95_high", "source", "game", "seeds", "frames")
REFERRING_KINDS = {"point": "points", "box": "boxes"}  # eval.refer's result names -> how the card says them
REFERRING_COUNTS = tuple(f"{measure}_{kind}" for kind in REFERRING_KINDS for measure in ("accuracy", "count"))
REFERRING_KEYS = ("source", "game", "seeds", "objects", *REFERRING_COUNTS)


@dataclass
class Sources:
    """What a card is written from."""

    config: VLMConfig
    adapter: bool  # LoRA in peft's adapter files beside model.safetensors
    weights: tuple[int, int]  # (all, LoRA) weights in the folder's safetensors files
    command: str | None
    summary: dict | None
    validation: dict | None
    confusion: bool  # confusion.png, the validation's confusion matrix, is in the folder
    play: list[dict]  # python -m eval results.json
    reconstruction: list[dict]  # python -m eval.reconstruct results.json
    segmentation: list[dict]  # python -m eval.segment results.json
    referring: list[dict]  # python -m eval.refer results.json
    read_from: list[str]  # the files, as the card names them


def running_command() -> str | None:
    """`python -m MODULE OVERRIDES` of the Hydra command this process runs; None outside one (e.g. a test that
    calls a command's main itself)."""
    if not HydraConfig.initialized():
        return None
    spec = sys.modules["__main__"].__spec__
    launcher = ["-m", spec.name.removesuffix(".__main__")] if spec else [sys.argv[0]]
    return shlex.join(["python", *launcher, *HydraConfig.get().overrides.task])


def write_stage_card(folder: Path, summary: dict, final: Path) -> None:
    """A stage's final model folder (being written at `folder`, its place `final`): training.json and the card."""
    write_json_atomically(folder / TRAINING_FILE, {"command": running_command(), "summary": summary})
    write_card(folder, str(final))


def write_card(
    folder: Path, shown: str, results: list[str] = (), summary: str | None = None, command: str | None = None
) -> None:
    """Write folder/README.md; `shown` is how the card's commands name the folder."""
    sources = gather(folder, results, summary, command)
    name = model_name(Path(shown).expanduser().resolve())
    write_text_atomically(folder / CARD_FILE, card_text(name, shown, sources))


def stage_path(folder: Path, name: str) -> Path | None:
    """A file of the folder, or of its stage when the folder is a run's RUN/STAGE/final; None when neither has it."""
    for path in (folder / name, folder.parent / name if folder.name == FINAL_DIR else None):
        if path is not None and path.is_file():
            return path
    return None


def stage_json(folder: Path, name: str, read: list[str]) -> dict | None:
    """The JSON file stage_path finds, noted in `read` as the card names it."""
    path = stage_path(folder, name)
    if path is None:
        return None
    read.append(name if path.parent == folder else f"../{name}")
    return read_json(path, "checkpoint")


def holding(values: dict | None, keys: tuple[str, ...], where: str) -> dict | None:
    missing = [key for key in keys if key not in values] if values is not None else []
    if missing:
        raise UserError(f"{where} lacks {', '.join(missing)}: not a file vlmplay wrote, or one of an older version")
    return values


def gather(folder: Path, results: list[str], summary: str | None, command: str | None) -> Sources:
    config = checked_checkpoint_config(folder)
    read = ["config.json"]
    record = stage_json(folder, TRAINING_FILE, read) or {}
    if summary is not None:
        read.append(summary)
        summary_values = read_json(Path(summary).expanduser(), "summary")
    else:  # a run's stage written before training.json was holds only summary.json
        summary_values = record["summary"] if record else stage_json(folder, SUMMARY_FILE, read)
    holding(summary_values, SUMMARY_KEYS, read[-1])  # read[-1]: the file the summary came from
    validation = holding(stage_json(folder, VALIDATION_FILE, read), VALIDATION_KEYS, VALIDATION_FILE)
    play, reconstruction, segmentation, referring = [], [], [], []
    for path in results:
        report = read_json(Path(path).expanduser(), "results")
        if "mean_re" in report:
            reconstruction.append(holding(report, RECONSTRUCTION_KEYS, f"results={path}"))
        elif "ciou" in report:
            segmentation.append(holding(report, SEGMENTATION_KEYS, f"results={path}"))
        elif "accuracy_point" in report:
            referring.append(holding(report, REFERRING_KEYS, f"results={path}"))
        elif "return" in report:
            holding(report, PLAY_KEYS, f"results={path}")
            holding(report["return"], RETURN_KEYS, f"results={path} (return)")
            if config.games and report["game"] not in config.games:
                raise UserError(f"results={path} played {report['game']}; this model plays {sorted(config.games)}")
            play.append(report)
        else:
            raise UserError(
                f"results={path} is not a results.json of `python -m eval`, `eval.reconstruct`, `eval.segment` or "
                "`eval.refer`"
            )
        read.append(path)
    return Sources(
        config=config,
        adapter=(folder / ADAPTER_CONFIG_FILE).is_file(),
        weights=weight_counts(folder),
        command=command or record.get("command"),
        summary=summary_values,
        validation=validation,
        confusion=(folder / CONFUSION_PNG).is_file(),
        play=play,
        reconstruction=reconstruction,
        segmentation=segmentation,
        referring=referring,
        read_from=read,
    )


def weight_counts(folder: Path) -> tuple[int, int]:
    total = lora = 0
    for path in (folder / WEIGHTS_FILE, folder / ADAPTER_WEIGHTS_FILE):
        if path.is_file():
            with safe_open(str(path), "pt") as tensors:
                for key in tensors.keys():  # noqa: SIM118 (safe_open is not iterable)
                    count = math.prod(tensors.get_slice(key).get_shape())
                    total += count
                    lora += count if LORA_PARAMETER_TAG in key else 0
    return total, lora


def command_options(command: str | None) -> dict:
    """The key=value overrides of a command line, as Hydra reads them (data=[a,b] is a list)."""
    if command is None:
        return {}
    words = [word for word in shlex.split(command) if "=" in word and not word.startswith("-")]
    try:
        return {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(words)}
    except HydraException as error:
        raise UserError(f"command={command!r}: cannot read its overrides ({error})") from None


def seed_text(seeds: list[int]) -> str:
    """27-29 for a run of consecutive seeds (as seeds= takes them), else 1,5,9."""
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def play_split(report: dict) -> str:
    """`seeds 100000-100014`, and the env's settings where they are not its defaults (e.g. sticky actions)."""
    settings = ", ".join(f"{key} {value}" for key, value in sorted(report.get("env_kwargs", {}).items()))
    return f"seeds {seed_text(report['seeds'])}" + (f", {settings}" if settings else "")


def eval_results(sources: Sources) -> list[EvalResult]:
    """The model-index entries: each metric with the env or data and the seeds it was measured on."""
    found = []
    for report in sources.play:
        dataset = dict(
            task_type="reinforcement-learning",
            task_name=f"play {report['game']}",
            dataset_type=report["env_id"],
            dataset_name=report["env_id"],
            dataset_split=play_split(report),  # model-index groups results by split
            dataset_args={
                "seeds": seed_text(report["seeds"]),
                "episodes": len(report["seeds"]),
                **report.get("env_kwargs", {}),
            },
        )
        returns = report["return"]
        found += [
            EvalResult(
                **dataset, metric_type="mean_reward", metric_name="mean return", metric_value=round(returns["mean"], 2)
            ),
            EvalResult(
                **dataset, metric_type="std_reward", metric_name="return std", metric_value=round(returns["std"], 2)
            ),
        ]
    validation = sources.validation
    if validation is not None:
        found.append(
            EvalResult(
                task_type="imitation-learning",
                task_name="expert action prediction",
                dataset_type="vlmplay-collected",
                dataset_name=f"{validation['game']} expert dataset, held-out episodes",
                dataset_split=f"episodes {seed_text(validation['seeds'])}",
                dataset_args={"seeds": seed_text(validation["seeds"]), "samples": validation["samples"]},
                metric_type="accuracy",
                metric_name="action accuracy",
                metric_value=round(validation["accuracy"], 4),
            )
        )
    for report in sources.reconstruction:
        args = {"images": len(report["images"])} | ({"seeds": seed_text(report["seeds"])} if report["seeds"] else {})
        found.append(
            EvalResult(
                task_type="pixel-value-prediction",
                task_name="reconstruction error",
                dataset_type=report["source"],
                dataset_name=report["source"],
                dataset_split=f"episodes {seed_text(report['seeds'])}" if report["seeds"] else None,
                dataset_args=args,
                metric_type="reconstruction_error",
                metric_name="RE x100",
                metric_value=round(report["mean_re"], 2),
            )
        )
    found += [grounding_result(report, "image-segmentation", "referring segmentation", "ciou", "cIoU", report["ciou"])
              for report in sources.segmentation]  # fmt: skip
    for report in sources.referring:
        found += [
            grounding_result(
                report,
                "image-classification",
                f"referring object classification, {shown_kind}",
                "accuracy",
                f"accuracy ({shown_kind}, true label vs a distractor)",
                report[f"accuracy_{kind}"],
            )  # fmt: skip
            for kind, shown_kind in REFERRING_KINDS.items()
        ]
    return found


def grounding_result(report: dict, task_type: str, task_name: str, metric: str, shown: str, value: float) -> EvalResult:
    return EvalResult(
        task_type=task_type,
        task_name=task_name,
        dataset_type="vlmplay-annotated",
        dataset_name=f"{report['game']} annotated frames, held-out episodes",
        dataset_split=f"episodes {seed_text(report['seeds'])}",
        dataset_args={"seeds": seed_text(report["seeds"]), "source": report["source"]},
        metric_type=metric,
        metric_name=shown,
        metric_value=round(value, 4),
    )


def card_text(name: str, shown: str, sources: Sources) -> str:
    config, options = sources.config, command_options(sources.command)
    data, init = options.get("data", []), options.get("init")
    tags = [
        LIBRARY,
        "vision-language-model",
        *(["lora"] if config.lora_r else []),
        *(["peft"] if sources.adapter else []),
    ]
    tags += [*sorted(config.games), *(["reinforcement-learning", "imitation-learning"] if config.games else [])]
    pvp = sources.reconstruction or "pvp" in (sources.summary or {}).get("tasks", {})
    tags += ["pixel-value-prediction"] if pvp else []
    tags += ["referring-segmentation"] if sources.segmentation else []
    tags += ["visual-prompts"] if sources.referring else []
    card = ModelCardData(
        library_name=LIBRARY,
        tags=tags,
        datasets=[str(d) for d in (data if isinstance(data, list) else [data])] or None,
        base_model=str(init) if init not in (None, NO_INIT) else None,
        model_name=name,
        eval_results=eval_results(sources) or None,
    )
    sections = [
        f"# {name}",
        describe(sources),
        usage(shown, config),
        training(sources.command, sources.summary),
        *[play_section(shown, report) for report in sources.play],
        *([validation_section(sources.validation, sources.confusion)] if sources.validation else []),
        *[reconstruction_section(shown, report) for report in sources.reconstruction],
        *[segmentation_section(shown, report) for report in sources.segmentation],
        *[referring_section(shown, report, config.mark_form) for report in sources.referring],
        f"Generated by vlm.card from {', '.join(sources.read_from)}.",
    ]
    return f"---\n{card.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"


def describe(sources: Sources) -> str:
    config = sources.config
    vision = config.vision_path or (
        f"a CLIP tower from scratch (depth {config.vision_layers}, width {config.vision_hidden_size}, "
        f"{config.vision_stem} stem, {config.patch_size} px patches)"
    )
    llm = config.llm_path or f"a LLaMA from scratch (depth {config.llm_layers}, width {config.llm_hidden_size})"
    if config.lora_r:
        where = "in peft's adapter files" if sources.adapter else "in model.safetensors"
        lora = f"LoRA r={config.lora_r}, alpha {config.lora_alpha} on {', '.join(config.lora_target_modules)}, {where}"
    else:
        lora = "no LoRA (merged into the LLM weights, or never added)"
    if config.games:
        played = ", ".join(f"{game} ({len(words)} action words)" for game, words in sorted(config.games.items()))
        games = f"It plays {played}, prompted with the game instruction `{config.game_instruction}`."
    else:
        games = "It records no game it plays (`vlm.games` in config.json is empty)."
    total, in_lora = sources.weights
    return (
        f"A vlmplay vision-language model: {config.image_size} px frames through {vision}, a {config.merge} "
        f"projector, {config.num_prompt_slots} visual prompt slots and {llm}; {lora}. {total:,} weights "
        f"({in_lora:,} of them LoRA). {games}"
    )


def usage(shown: str, config: VLMConfig) -> str:
    lines = [
        "## Use",
        "",
        "```python",
        "import transformers",
        "",
        "import vlm  # registers VLMAutoConfig and VLMAutoModel with transformers' Auto classes",
        "",
        f'model = transformers.AutoModel.from_pretrained("{shown}")  # model.vlm: the vlm.VLM',
        "```",
    ]
    lines += [
        f"\nPlay it: `python -m eval game={game} policy=vlm checkpoint={shown}`." for game in sorted(config.games)
    ]
    return "\n".join(lines)


def training(command: str | None, summary: dict | None) -> str:
    lines = ["## Training", ""]
    lines += ["```bash", command, "```"] if command else ["The training command is not recorded in this folder."]
    if summary is not None:
        resumed = summary["resumed_from_step"]
        steps = f"{summary['steps']}" + (f" (resumed at {resumed})" if resumed else "")
        losses = ", ".join(f"{task} {loss:.4f}" for task, loss in summary["last_losses"].items())
        lines += [
            "",
            "| stage | steps | samples | trainable | seconds | samples/s | processes | last loss |",
            "|---|---|---|---|---|---|---|---|",
            f"| {summary['stage']} | {steps} | {summary['samples']} | {', '.join(summary['trainable'])} "
            f"| {summary['train_seconds']} | {summary['samples_per_s']} | {summary['world_size']} | {losses} |",
        ]
    return "\n".join(lines)


def played_sticky(report: dict) -> bool:
    return STICKY_ACTIONS_KWARG in report.get("env_kwargs", {})


def evaluation_section(title: str, command: str, *body: str) -> str:
    """A card's evaluation: its heading, the command that measured it, then what it measured."""
    return "\n".join([f"## Evaluation: {title}", "", "```bash", command, "```", "", *body])


def play_section(shown: str, report: dict) -> str:
    seeds, returns = report["seeds"], report["return"]
    env = report["env_id"] + "".join(f" {key}={value}" for key, value in report.get("env_kwargs", {}).items())
    expert = f"{100 * returns['expert_fraction']:.1f} %" if "expert_fraction" in returns else "-"
    versions = ", ".join(f"{name} {version}" for name, version in report.get("versions", {}).items())
    command = (
        f"python -m eval game={report['game']} policy=vlm checkpoint={shown} episodes={len(seeds)} seed={seeds[0]}"
    )
    return evaluation_section(
        report["game"],
        command + (" sticky_actions=true" if played_sticky(report) else ""),
        "| env | seeds | episodes | mean | std | min | max | 95 % CI | IQM | of the expert |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {env} | {seed_text(seeds)} | {len(seeds)} | {returns['mean']:.2f} | {returns['std']:.2f} "
        f"| {returns['min']:.2f} | {returns['max']:.2f} | [{returns['ci95_low']:.2f}, {returns['ci95_high']:.2f}] "
        f"| {returns['iqm']:.2f} | {expert} |",
        "",
        f"Played as policy `{report['policy']}`" + (f" with {versions}." if versions else "."),
    )  # fmt: skip


def validation_section(validation: dict, confusion: bool) -> str:
    text = (
        f"## Validation\n\nAction accuracy **{validation['accuracy']:.4f}** on {validation['samples']:,} "
        f"observations of the {validation['game']} expert's held-out episodes {seed_text(validation['seeds'])} "
        f"(always answering `{validation['majority_action']}`: {validation['majority_accuracy']:.4f})."
    )
    return text + (
        f"\n\n![confusion matrix, rows: the expert's action, columns: the model's]({CONFUSION_PNG})"
        if confusion
        else ""
    )


def reconstruction_section(shown: str, report: dict) -> str:
    seeds = f" seeds=[{','.join(map(str, report['seeds']))}]" if report["seeds"] else ""
    n = len(report["images"])
    return evaluation_section(
        "pixel value prediction",
        f"python -m eval.reconstruct checkpoint={shown} images={report['source']}{seeds} n={n}",
        f"Reconstruction error (RE x100) **{report['mean_re']:.2f}** over {n} images of {report['source']} "
        f"({report['questions']:,} questions).",
    )


def segmentation_section(shown: str, report: dict) -> str:
    """The evaluation's command names label_shift=false when the result was measured with the likelier answer (a
    result that records no label_shift was: it predates the option)."""
    seeds = ",".join(map(str, report["seeds"]))
    return evaluation_section(
        f"referring segmentation, {report['game']}",
        f"python -m eval.segment checkpoint={shown} images={report['source']} seeds=[{seeds}] n={report['frames']}"
        + ("" if report.get("label_shift", False) else " label_shift=false"),
        f"cIoU **{report['ciou']:.3f}** [95 % CI {report['ciou_ci95_low']:.3f}, {report['ciou_ci95_high']:.3f}] over "
        f"{report['frames']} held-out frames (every referring phrase of each, all 64x64 cells).",
    )


def referring_section(shown: str, report: dict, model_form: str) -> str:
    """The evaluation's command names form= when the result was measured in a form other than the model's own
    (eval.refer's default); a result that records no form was measured in the encoder's."""
    seeds = ",".join(map(str, report["seeds"]))
    found = [
        f"{shown_kind} **{report[f'accuracy_{kind}']:.3f}** ({report[f'count_{kind}']} prompts)"
        for kind, shown_kind in REFERRING_KINDS.items()
    ]
    return evaluation_section(
        f"referring object classification, {report['game']}",
        f"python -m eval.refer checkpoint={shown} images={report['source']} seeds=[{seeds}] n={report['objects']}"
        + (f" form={report['form']}" if report.get("form", marks.DEFAULT_FORM) != model_form else ""),
        f"Accuracy choosing the true label against a distractor: {', '.join(found)}.",
    )


def vlm_checkpoint(key: str, folder: str) -> None:
    checked_checkpoint_config(Path(folder).expanduser(), key)


@dataclass
class CardConfig:
    checkpoint: str | None = option(check=vlm_checkpoint)
    results: list[str] = option(check=existing_paths)
    summary: str | None = option(check=existing_path)
    command: str | None = option()


@command("card", CardConfig)
def main(cfg: DictConfig) -> None:
    if cfg.checkpoint is None:
        raise UserError("give checkpoint=DIR: a VLM checkpoint folder, whose README.md is its card")
    folder = Path(cfg.checkpoint).expanduser()
    write_card(folder, str(cfg.checkpoint), list(cfg.results), cfg.summary, cfg.command)
    print(f"wrote {folder / CARD_FILE}")


if __name__ == "__main__":
    main()
