"""train/tasks/segmentation.py and visual_prompt.py on real annotated datasets (collected here, annotated by
`python -m collect.annotate`): what their batches ask, what their losses train, their recipes through
`python -m train` (validation, mixing into PVP stage 3, resume after SIGKILL), and their refusals."""

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, run_command
from test_train import MICRO, compose_train, micro_run, stage_override

import collect.__main__
import collect.annotate
from collect.annotations import AnnotatedFrames, referring_phrases
from collect.dataset import DATA_DIR
from collect.sources import ImageSources
from core.errors import UserError
from core.runs import FINAL_DIR, SUMMARY_FILE
from train.__main__ import main as train_main
from train.checkpoint import checkpoints
from train.curves import TB_DIR, read_scalars
from train.packing import pack_row
from train.tasks import TASKS
from train.tasks.segmentation import VALIDATION_FILE as SEGMENTATION_REPORT
from train.tasks.visual_prompt import VALIDATION_FILE as VISUAL_PROMPT_REPORT
from vlm import KIND_BOX, KIND_POINT, TRAINING_STAGES, VLM, VLMConfig, encode, marks, prompts
from vlm.prompt_encoder import BOX_SCALE_RANGE, BOX_SHIFT_FRACTION
from vlm.scoring import SIZE, grid_targets

SI_SEEDS = [4, 5]  # random SpaceInvaders games of 353 and 329 steps: 4 trains, 5 is held out
CR_SEED = 1  # a random CarRacing game that leaves the field after 441 steps
VAL_SEEDS = [5]
SLOTS = MICRO.get("num_prompt_slots", VLMConfig.num_prompt_slots)
KILL_POLL_S = 0.05
DEADLINE_S = 300
BOX_SLACK = 1e-6  # float32 rounding of the normalised boxes


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    """{game: dataset folder} of real collected datasets, annotated by the project's command."""
    root = tmp_path_factory.mktemp("grounding")
    folders = {"spaceinvaders": root / "si", "carracing": root / "cr"}
    run_command(
        collect.__main__.main,
        "collect",
        "game=spaceinvaders",
        "policy=random",
        f"episodes={len(SI_SEEDS)}",
        f"seed={SI_SEEDS[0]}",
        f"out={folders['spaceinvaders']}",
    )
    run_command(
        collect.__main__.main, "collect", "game=carracing", "policy=random", "episodes=1", f"seed={CR_SEED}",
        f"out={folders['carracing']}",
    )  # fmt: skip
    for folder in folders.values():
        run_command(collect.annotate.main, "annotate", f"src={folder}")
    return folders


@pytest.fixture(scope="module")
def sources(annotated):
    return ImageSources([str(annotated["spaceinvaders"]), str(annotated["carracing"])], held_out=VAL_SEEDS)


@pytest.fixture(scope="module")
def micro_model():
    return VLM.from_config(VLMConfig.preset("tiny", **MICRO))


def build(name: str, sources, **options):
    return TASKS.get(name).build({"ratio": 1.0, **options}, sources, None, None)


def nearest_cell(mask: np.ndarray, y: int, x: int) -> bool:
    """Whether grid cell (y, x) of the 64x64 grid is inside `mask` [H, W]: the pixel at the cell's centre."""
    height, width = mask.shape
    return bool(mask[int((y + 0.5) * height / SIZE), int((x + 0.5) * width / SIZE)])


def decoded(tokenizer, ids) -> str:
    return tokenizer.decode([t for t in ids.tolist() if t >= 0], skip_special_tokens=True)


# ---- batches ------------------------------------------------------------------------------------


@pytest.mark.parametrize("inside_fraction", [0.4, 0.9])
def test_segmentation_asks_the_downsampled_masks_inside_as_often_as_asked(sources, inside_fraction):
    task = build("segmentation", sources, batch_size=16, queries_per_image=16, inside_fraction=inside_fraction)
    rng = np.random.default_rng(0)
    answers, games, phrases_asked = [], set(), set()
    for _ in range(60):
        drawn = task.draw(rng)
        annotated, index = drawn["annotated"], drawn["index"]
        assert annotated.seed_of(index) not in VAL_SEEDS
        mask = referring_phrases(annotated.game, annotated.objects(index))[drawn["phrase"]]
        games.add(annotated.game)
        phrases_asked.add(drawn["phrase"])
        for question in drawn["questions"]:
            y, x = question["y"], question["x"]
            assert 0 <= y < SIZE and 0 <= x < SIZE
            assert (
                question["prompt"] == f"<Img><ImageHere></Img> [segmentation] {drawn['phrase']} loc: [{y},{x}] mask: "
            )
            assert question["answer"] == str(int(nearest_cell(mask, y, x)))
            answers.append(question["answer"] == "1")
    assert games == {"spaceinvaders", "carracing"} and len(phrases_asked) > 5
    assert abs(np.mean(answers) - inside_fraction) < 0.06, np.mean(answers)


def test_a_segmentation_batch_packs_the_drawn_questions(sources, micro_model):
    task = build("segmentation", sources, batch_size=8, queries_per_image=4)
    drawn = task.draw(np.random.default_rng(1))
    batch = task.batch(micro_model, np.random.default_rng(1), 8)
    assert batch["images"].shape == (2, 1, 3, 64, 64)  # 8 questions about 2 (frame, phrase) pairs
    model = micro_model
    encoded = [
        encode(model.tokenizer, q["prompt"], q["answer"], model.num_image_tokens, model.config.num_prompt_slots)
        for q in drawn["questions"]
    ]
    ids = pack_row(encoded)[0]
    assert batch["input_ids"][0, : len(ids)].tolist() == ids
    assert torch.equal(batch["images"][0, 0], model.preprocess(drawn["frame"]))
    # The frame and "[segmentation] {phrase} loc: [" once, then each question's remaining tokens and answer.
    assert decoded(model.tokenizer, batch["input_ids"][0]).count(f"[segmentation] {drawn['phrase']} loc: [") == 1


def test_visual_prompts_mark_the_objects_they_name(sources, micro_model):
    task = build("visual_prompt", sources, batch_size=4)
    rng = np.random.default_rng(2)
    kinds, counts = set(), set()
    for _ in range(60):
        drawn = task.draw(rng, SLOTS)
        frame, kind, objects = drawn["frame"], drawn["kind"], drawn["objects"]
        height, width = frame.shape[:2]
        assert np.array_equal(frame, drawn["annotated"].frame(drawn["index"]))
        assert 1 <= len(objects) <= SLOTS and len({id(o) for o in objects}) == len(objects)
        assert drawn["labels"] == [o.label for o in objects]
        assert drawn["prompt"] == prompts.visual_prompt_question(kind)
        name = "Mark" if kind == prompts.POINT else "Region"
        assert drawn["answer"] == "\n".join(f"<{name} {i + 1}>: {o.label}" for i, o in enumerate(objects))
        coords = drawn["marks"]
        assert np.array_equal(drawn["prompt_coords"], coords)
        assert coords.shape == (len(objects), 4) and (coords >= 0).all() and (coords <= 1).all()
        for (x0, y0, x1, y1), obj in zip(coords, objects):
            if kind == prompts.POINT:
                assert (x0, y0) == (x1, y1)
                assert obj.mask[int(y0 * height), int(x0 * width)]  # the pixel centre lies in the object
            else:
                bx0, by0, bx1, by1 = obj.box
                w, h = (bx1 - bx0) / width, (by1 - by0) / height
                cx, cy = (bx0 + bx1) / 2 / width, (by0 + by1) / 2 / height
                # SPHINX-V's noise: the centre shifted by at most w/8, h/8, sizes scaled by at most 1.15; clipping
                # a grown box to the frame moves its centre by less than the growth
                high = BOX_SCALE_RANGE[1]
                reach = BOX_SHIFT_FRACTION + high - 1
                assert abs((x0 + x1) / 2 - cx) <= reach * w + BOX_SLACK
                assert abs((y0 + y1) / 2 - cy) <= reach * h + BOX_SLACK
                assert x1 - x0 <= high * w + BOX_SLACK and y1 - y0 <= high * h + BOX_SLACK
        kinds.add(kind)
        counts.add(len(objects))
    assert kinds == {prompts.POINT, prompts.REGION} and len(counts) > 3 and max(counts) == SLOTS

    batch = task.batch(micro_model, np.random.default_rng(3), 4)
    assert batch["prompt_coords"].shape == (4, SLOTS, 4)
    again = np.random.default_rng(3)
    for row in range(4):
        drawn = task.draw(again, SLOTS)
        k = len(drawn["labels"])
        assert batch["prompt_valid"][row].tolist() == [True] * k + [False] * (SLOTS - k)
        code = KIND_POINT if drawn["kind"] == prompts.POINT else KIND_BOX
        assert batch["prompt_kinds"][row, :k].tolist() == [code] * k
        assert torch.allclose(batch["prompt_coords"][row, :k], torch.as_tensor(drawn["prompt_coords"]))
        answer = decoded(micro_model.tokenizer, batch["labels"][row])
        assert answer == drawn["answer"]

    points = build("visual_prompt", sources, batch_size=4, kinds=["point"])
    assert {points.draw(rng, SLOTS)["kind"] for _ in range(10)} == {prompts.POINT}


def test_visual_prompts_in_text_or_drawn_onto_the_frame_leave_the_encoder_out(sources, micro_model):
    """form=text writes each mark's 64x64-grid location in the question, form=overlay blends each mark onto the
    frame in its own colour; neither fills a slot of the visual prompt encoder. Same draws as form=encoder."""
    forms = {form: build("visual_prompt", sources, batch_size=4, form=form) for form in marks.FORMS}
    for seed in range(20):
        drawn = {form: task.draw(np.random.default_rng(seed), SLOTS) for form, task in forms.items()}
        encoder, text, overlay = drawn["encoder"], drawn["text"], drawn["overlay"]
        assert np.array_equal(text["marks"], encoder["marks"]) and text["answer"] == encoder["answer"]
        assert "prompt_coords" not in text and "prompt_coords" not in overlay
        original = encoder["annotated"].frame(encoder["index"])
        assert np.array_equal(text["frame"], original)
        kind, name = encoder["kind"], prompts.PROMPT_NAMES[encoder["kind"]]
        assert prompts.PROMPT_MARKER not in text["prompt"] + overlay["prompt"]
        height, width = original.shape[:2]
        for i, (x0, y0, x1, y1) in enumerate(encoder["marks"]):
            corners = [y0, x0] if kind == prompts.POINT else [y0, x0, y1, x1]
            location = ",".join(str(min(int(v * SIZE), SIZE - 1)) for v in corners)
            assert f"<{name} {i + 1}> loc: [{location}]" in text["prompt"]
            if kind == prompts.POINT:  # the mark's centre pixel is blended with mark i's colour
                y, x = min(int(y0 * height), height - 1), min(int(x0 * width), width - 1)
                colour = np.array(marks.MARK_COLOURS[i])
                blend = (1 - marks.OVERLAY_ALPHA) * original[y, x] + marks.OVERLAY_ALPHA * colour
                if i == len(encoder["marks"]) - 1:  # the last mark drawn is on top
                    assert np.abs(overlay["frame"][y, x] - blend).max() <= 0.5
        changed = (overlay["frame"] != original).any(-1)
        assert changed.any() and changed.mean() < 0.5
    batch = forms["overlay"].batch(micro_model, np.random.default_rng(3), 4)
    assert "prompt_coords" not in batch and batch["images"].shape[0] == 4
    with pytest.raises(UserError, match="form='arrows': choose one of encoder, text, overlay"):
        build("visual_prompt", sources, form="arrows")


def test_a_model_keeps_the_form_its_marks_were_trained_in(sources, micro_model, tmp_path):
    assert micro_model.config.mark_form == marks.DEFAULT_FORM
    build("visual_prompt", sources, form="text").configure(micro_model)
    micro_model.save_pretrained(str(tmp_path))
    assert VLM.from_pretrained(str(tmp_path)).config.mark_form == "text"
    micro_model.config.mark_form = marks.DEFAULT_FORM
    with pytest.raises(ValueError, match="mark_form='arrows': choose one of"):
        VLMConfig(mark_form="arrows")


def test_a_model_keeps_the_prior_its_segmentation_was_trained_under(annotated, sources, micro_model, tmp_path):
    build("segmentation", sources, inside_fraction=0.25).configure(micro_model)
    fractions = micro_model.config.segmentation_phrase_fractions
    assert micro_model.config.segmentation_inside_fraction == 0.25 and "the aliens" in fractions
    frames = AnnotatedFrames(annotated["spaceinvaders"], held_out=VAL_SEEDS)  # the frames the task trains on
    covered = [grid_targets(referring_phrases("spaceinvaders", frames.objects(i))).get("the aliens") for i in
               range(len(frames))]  # fmt: skip
    every_frame = np.mean([target.mean() for target in covered if target is not None])
    assert fractions["the aliens"] == pytest.approx(every_frame, rel=0.1)  # a mean over 2000 draws
    assert {"the road", "the grass"} <= set(fractions)  # both games' phrases
    assert all(0 < value < 1 for value in fractions.values())
    assert fractions["the aliens"] < 0.05  # far below the 25 % of questions training asks inside
    micro_model.save_pretrained(str(tmp_path))
    assert VLM.from_pretrained(str(tmp_path)).config.segmentation_phrase_fractions == fractions
    micro_model.config.segmentation_inside_fraction, micro_model.config.segmentation_phrase_fractions = None, {}


# ---- losses and the parts they train --------------------------------------------------------------


def trained_by(task, stage: str, batch_size: int) -> tuple[float, dict[str, bool]]:
    """The loss of one batch and, per part of the model, whether its gradient is non-zero, trained as `stage`."""
    model = VLM.from_config(VLMConfig.preset("tiny", **MICRO)).train()
    model.set_trainable(**TRAINING_STAGES[stage])
    loss = task.loss(model, task.batch(model, np.random.default_rng(4), batch_size))
    loss.backward()
    reached = {
        part: any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params)
        for part, params in model.parameter_groups().items()
    }
    return loss.item(), reached


def test_losses_are_finite_and_train_what_the_recipes_train(sources):
    loss, reached = trained_by(build("segmentation", sources, batch_size=8, queries_per_image=4), "pvp_stage3", 8)
    assert np.isfinite(loss) and loss > 0
    assert reached == dict(
        vision=False, projector=True, llm=False, llm_lora=True, prompt_encoder=False, prompt_projector=False
    )
    visual_prompt = build("visual_prompt", sources, batch_size=4)
    loss, reached = trained_by(visual_prompt, "vp_stage1", 4)
    assert np.isfinite(loss) and loss > 0
    assert reached == dict(
        vision=False, projector=False, llm=False, llm_lora=False, prompt_encoder=True, prompt_projector=True
    )
    loss, reached = trained_by(visual_prompt, "vp_stage2", 4)
    assert reached == dict(
        vision=False, projector=False, llm=False, llm_lora=True, prompt_encoder=False, prompt_projector=True
    )


# ---- the command: recipes, validation, stage 3's mix, resume --------------------------------------


def grounding_run(run_dir, annotated, *overrides: str) -> list[str]:
    return micro_run(run_dir, annotated.values(), f"val_seeds={VAL_SEEDS}", *overrides)


def test_segmentation_recipe_trains_and_validates_on_held_out_frames(annotated, tmp_path, capsys):
    overrides = grounding_run(
        tmp_path,
        annotated,
        "recipe=segmentation",
        "run=seg",
        *stage_override("segmentation", steps=3, save_every=2, warmup_steps=1),
        "recipe.stages.segmentation.tasks.segmentation.batch_size=8",
        "recipe.stages.segmentation.tasks.segmentation.queries_per_image=4",
        "recipe.stages.segmentation.tasks.segmentation.val_pairs=1",
    )
    train_main.__wrapped__(compose_train(*overrides))
    out = capsys.readouterr().out
    stage_dir = tmp_path / "seg" / "segmentation"
    summary = json.loads((stage_dir / SUMMARY_FILE).read_text())
    assert summary["steps"] == 3 and np.isfinite(summary["last_losses"]["segmentation"])
    report = json.loads((stage_dir / SEGMENTATION_REPORT).read_text())
    # seed 5 is SpaceInvaders': CarRacing's one episode trains, it holds nothing to validate on
    assert report["seeds"] == VAL_SEEDS and {p["seed"] for p in report["pairs"]} == {5}
    assert list(report["ciou_per_game"]) == ["spaceinvaders"] and 0 <= report["ciou"] <= 1
    assert f"cIoU {report['ciou']:.3f}" in out
    scalars = read_scalars(stage_dir / TB_DIR)
    assert scalars["validation/segmentation_ciou"] == {3: pytest.approx(report["ciou"])}


def test_visual_prompt_recipe_chains_its_two_stages_and_validates_labels(annotated, tmp_path, capsys):
    overrides = grounding_run(tmp_path, annotated, "recipe=visual_prompt", "run=vp")
    for stage in ("visual_prompt_stage1", "visual_prompt_stage2"):
        overrides += stage_override(stage, steps=2, save_every=1, warmup_steps=1)
        overrides += [f"recipe.stages.{stage}.tasks.visual_prompt.batch_size=2"]
    overrides += ["recipe.stages.visual_prompt_stage2.tasks.visual_prompt.val_samples=2"]
    train_main.__wrapped__(compose_train(*overrides))
    out = capsys.readouterr().out
    run = tmp_path / "vp"
    trainable = {
        s: json.loads((run / s / SUMMARY_FILE).read_text())["trainable"]
        for s in ("visual_prompt_stage1", "visual_prompt_stage2")
    }
    assert set(trainable["visual_prompt_stage1"]) == {"prompt_encoder", "prompt_projector", "llm"}  # tiny adds llm
    assert set(trainable["visual_prompt_stage2"]) == {"prompt_projector", "llm_lora", "llm"}
    first = VLM.from_pretrained(str(run / "visual_prompt_stage1" / FINAL_DIR)).prompt_encoder.state_dict()
    second = VLM.from_pretrained(str(run / "visual_prompt_stage2" / FINAL_DIR)).prompt_encoder.state_dict()
    assert torch.equal(first["corner_type.weight"], second["corner_type.weight"])  # frozen in stage 2
    assert not torch.equal(first["proj.weight"], second["proj.weight"])  # its projection still learns
    report = json.loads((run / "visual_prompt_stage2" / VISUAL_PROMPT_REPORT).read_text())
    assert report["seeds"] == VAL_SEEDS and set(report["accuracy"]) == {"point", "region"}
    assert all(0 <= a <= 1 for a in report["accuracy"].values()) and report["marks"]["point"] >= 2
    assert "visual_prompt validation" in out


def test_grounding_recipe_trains_both_tasks_in_one_stage_and_validates_both(annotated, tmp_path, capsys):
    stage = "grounding"
    overrides = grounding_run(
        tmp_path,
        annotated,
        "recipe=grounding",
        "run=both",
        *stage_override(stage, steps=4, save_every=2, warmup_steps=1),
        f"recipe.stages.{stage}.tasks.segmentation.batch_size=8",
        f"recipe.stages.{stage}.tasks.segmentation.queries_per_image=4",
        f"recipe.stages.{stage}.tasks.segmentation.val_pairs=1",
        f"recipe.stages.{stage}.tasks.visual_prompt.batch_size=2",
        f"recipe.stages.{stage}.tasks.visual_prompt.val_samples=2",
    )
    train_main.__wrapped__(compose_train(*overrides))
    out = capsys.readouterr().out
    stage_dir = tmp_path / "both" / stage
    summary = json.loads((stage_dir / SUMMARY_FILE).read_text())
    assert set(summary["tasks"]) == {"segmentation", "visual_prompt"} and summary["steps"] == 4
    assert {"vision", "projector", "llm_lora", "prompt_encoder", "prompt_projector"} <= set(summary["trainable"])
    assert (stage_dir / SEGMENTATION_REPORT).is_file() and (stage_dir / VISUAL_PROMPT_REPORT).is_file()
    assert "segmentation validation" in out and "visual_prompt validation" in out


def mixed_stage3(run_dir, annotated, run: str) -> list[str]:
    """PVP stage 3 with the grounding tasks mixed in, alone (from a new model), long enough to be killed."""
    stage = "pvp_stage3"
    return [
        *micro_run(run_dir, annotated.values()),
        "recipe=pvp_grounding",
        f"stages=[{stage}]",
        f"run={run}",
        "threads=1",
        *stage_override(stage, steps=30, save_every=5, warmup_steps=2, log_every=5),
        f"recipe.stages.{stage}.tasks.pvp.batch_size=4",
        f"recipe.stages.{stage}.tasks.pvp.queries_per_image=2",
        f"recipe.stages.{stage}.tasks.segmentation.batch_size=4",
        f"recipe.stages.{stage}.tasks.segmentation.queries_per_image=2",
        f"recipe.stages.{stage}.tasks.visual_prompt.batch_size=2",
    ]


def test_stage3_mixes_them_in_and_a_killed_run_resumes_to_the_same_weights(annotated, tmp_path, capsys):
    stage_dir = tmp_path / "killed" / "pvp_stage3"
    killed = mixed_stage3(tmp_path, annotated, "killed")
    process = subprocess.Popen(
        [sys.executable, "-m", "train", *killed], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + DEADLINE_S
    while not any(step >= 10 for step, _ in checkpoints(stage_dir)):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(KILL_POLL_S)
    process.send_signal(signal.SIGKILL)
    process.wait()
    latest = checkpoints(stage_dir)[-1][0]
    train_main.__wrapped__(compose_train(*killed))  # the same command again: it resumes
    assert "game left out: no dataset played by expert" in capsys.readouterr().out
    summary = json.loads((stage_dir / SUMMARY_FILE).read_text())
    assert summary["resumed_from_step"] == latest and summary["steps"] == 30
    assert set(summary["tasks"]) == {"pvp", "segmentation", "visual_prompt"}  # no expert dataset: no game task

    train_main.__wrapped__(compose_train(*mixed_stage3(tmp_path, annotated, "straight")))
    straight = json.loads((tmp_path / "straight" / "pvp_stage3" / SUMMARY_FILE).read_text())
    assert summary["replica_sha256"] == straight["replica_sha256"]  # the same draws after the resume
    assert {"loss/segmentation", "loss/visual_prompt"} <= set(read_scalars(stage_dir / TB_DIR))


# ---- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task, option, message",
    [
        ("segmentation", "inside_fraction=1.5", "tasks.segmentation.inside_fraction=1.5 is out of range"),
        ("segmentation", "queries_per_image=5", "is not a multiple of queries_per_image=5"),
        ("segmentation", "+unknown=1", "tasks.segmentation.unknown is not an option of the segmentation task"),
        ("visual_prompt", "kinds=[star]", "give a list of distinct kinds among point, region"),
        ("visual_prompt", "val_samples=0", "tasks.visual_prompt.val_samples=0 is out of range"),
    ],
)
def test_bad_options_are_one_line(annotated, tmp_path, capsys, task, option, message):
    recipe, stage = (
        ("segmentation", "segmentation") if task == "segmentation" else ("visual_prompt", "visual_prompt_stage1")
    )
    bad = f"{option[0] if option[0] == '+' else ''}recipe.stages.{stage}.tasks.{task}.{option.lstrip('+')}"
    with pytest.raises(SystemExit) as exit_:
        train_main.__wrapped__(compose_train(*grounding_run(tmp_path, annotated, f"recipe={recipe}", "run=bad", bad)))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and message in err and err.strip().count("\n") == 0
    assert not (tmp_path / "bad").exists()  # nothing written


def test_datasets_without_annotations_name_the_command_that_makes_them(annotated, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(annotated["spaceinvaders"] / DATA_DIR, bare / DATA_DIR)  # the same episodes, not annotated
    with pytest.raises(SystemExit) as exit_:
        train_main.__wrapped__(
            compose_train(*micro_run(tmp_path, [bare], "recipe=segmentation", "run=bare", "val_seeds=null"))
        )
    error = capsys.readouterr().err.strip().split("\n")[-1].split("\r")[-1]  # after the sources' check bar
    assert exit_.value.code == 2 and error.startswith("error: ") and f"python -m collect.annotate src={bare}" in error
    with pytest.raises(UserError, match="no annotated dataset of spaceinvaders among data= holds"):
        TASKS.get("visual_prompt").build(
            {"ratio": 1.0, "batch_size": 2}, ImageSources([str(annotated["spaceinvaders"])]), "spaceinvaders", [99]
        )
