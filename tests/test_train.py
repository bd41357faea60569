"""train/: PVP samples, image sources, task mixing, shared-prefix packing, stage chaining, resume after
SIGKILL, DDP with 2 gloo processes. Real tiny models (a micro size of the tiny preset), real files.
"""

import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, run_module
from hydra import compose, initialize_config_dir
from PIL import Image
from safetensors.torch import load_file

from collect.sources import ImageSources, open_collected
from core.errors import UserError
from core.runs import FINAL_DIR, SUMMARY_FILE
from core.seeds import parse_seeds
from train.__main__ import main as train_main
from train.checkpoint import checkpoints
from train.curves import CURVES_PNG, TB_DIR, read_scalars
from train.loop import weights_sha256
from train.onednn import OneDNNLinear, cpu_kernels
from train.packing import pack, packed_loss
from train.tasks import TaskMixer
from train.tasks.game import GameTask
from train.tasks.pvp import PVPTask, pvp_question
from vlm import TRAINING_STAGES, VLM, VLMConfig, prompts
from vlm.config import MICRO_SIZES

MICRO = MICRO_SIZES  # the tiny preset shrunk further: a training step takes milliseconds
MICRO_OVERRIDES = [f"+model.config.{key}={value}" for key, value in MICRO.items()]
SI_SEEDS = [4, 5]  # random SpaceInvaders episodes of 353 and 329 steps
KILL_POLL_S = 0.05
DEADLINE_S = 300


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """PNGs and a JPEG of assorted sizes, one in a subfolder."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (root / "nested").mkdir()
    for i, (height, width) in enumerate([(96, 96), (210, 160), (50, 70), (64, 64)]):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(root / "nested" / "photo.JPG")
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(root / "grey.png")  # converted to RGB
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """A real collected dataset: two random SpaceInvaders episodes."""
    out = tmp_path_factory.mktemp("collected") / "si"
    result = run_module(
        "collect",
        "game=spaceinvaders",
        "policy=random",
        f"episodes={len(SI_SEEDS)}",
        f"seed={SI_SEEDS[0]}",
        f"out={out}",
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def micro_model():
    return VLM.from_config(VLMConfig.preset("tiny", **MICRO))


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def micro_run(run_dir, data, *overrides: str) -> list[str]:
    """Overrides of a few-step micro training run; steps/batch sizes are set by the caller's overrides."""
    return [
        f"data=[{','.join(str(d) for d in data)}]",
        f"run_dir={run_dir}",
        "progress=false",
        *MICRO_OVERRIDES,
        *overrides,
    ]


def stage_override(stage: str, **values) -> list[str]:
    return [f"recipe.stages.{stage}.{key}={value}" for key, value in values.items()]


def small_pvp(stage: str, batch_size: int = 4, queries: int = 2) -> list[str]:
    return [
        f"recipe.stages.{stage}.tasks.pvp.batch_size={batch_size}",
        f"recipe.stages.{stage}.tasks.pvp.queries_per_image={queries}",
    ]


# ---- samples and sources ---------------------------------------------------------------------


def test_pvp_question_is_the_papers_format_on_the_64x64_target():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (210, 160, 3), dtype=np.uint8)
    question = pvp_question(frame, rng)
    expected_target = np.asarray(Image.fromarray(frame).resize((64, 64)))  # PIL's default resampling
    assert question["target"].shape == (64, 64, 3) and question["target"].dtype == np.uint8
    np.testing.assert_array_equal(question["target"], expected_target)
    y, x = question["y"], question["x"]
    assert question["prompt"] == f"<Img><ImageHere></Img> [reconstruct] loc: [{y},{x}] rgb: "
    r, g, b = expected_target[y, x]
    assert question["answer"] == f"[{r},{g},{b}]"
    assert re.fullmatch(r"\[\d{1,3},\d{1,3},\d{1,3}\]", question["answer"])

    small = frame[:32, :32]  # the location does not depend on the frame; a small one resizes fast
    locations = np.array([[q["y"], q["x"]] for q in (pvp_question(small, rng) for _ in range(4096))])
    for axis in range(2):  # uniform over 0..63 on both axes
        counts = np.bincount(locations[:, axis], minlength=64)
        assert len(counts) == 64 and counts.min() > 0
        assert abs(locations[:, axis].mean() - 31.5) < 1.5


def test_image_folder_source(image_folder, tmp_path):
    sources = ImageSources([str(image_folder)])
    assert len(sources) == 6  # 4 PNG + 1 JPEG in a subfolder + 1 greyscale PNG; the .txt is ignored
    shapes = sorted(sources[i].shape for i in range(len(sources)))
    assert shapes == sorted([(96, 96, 3), (210, 160, 3), (50, 70, 3), (64, 64, 3), (80, 80, 3), (40, 40, 3)])
    assert all(sources[i].dtype == np.uint8 for i in range(len(sources)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no PNG or JPEG"):
        ImageSources([str(empty)])
    with pytest.raises(UserError, match="does not exist"):
        ImageSources([str(tmp_path / "missing")])


def test_collected_dataset_source_gives_single_frames_of_chosen_seeds(collected, image_folder):
    everything = ImageSources([str(collected)])
    only_5 = ImageSources([str(collected)], seeds=[5])
    assert len(everything) == 353 + 329 and len(only_5) == 329
    assert only_5[0].shape == (210, 160, 3)
    both = ImageSources([str(collected), str(image_folder)], seeds=[5])
    assert len(both) == 329 + 6
    np.testing.assert_array_equal(both[328], only_5[328])
    np.testing.assert_array_equal(both[329], np.asarray(Image.open(image_folder / "0.png")))  # files follow the frames
    assert parse_seeds("3-5") == [3, 4, 5] and parse_seeds([7, 8]) == [7, 8] and parse_seeds(None) is None
    with pytest.raises(UserError, match="no episodes"):
        ImageSources([str(collected)], seeds=[99])


# ---- tasks -------------------------------------------------------------------------------------


def test_task_mixer_follows_the_ratios():
    mixer = TaskMixer({"pvp": 3.0, "game": 1.0})
    picks = [mixer.pick(np.random.default_rng([0, step])) for step in range(4000)]
    assert abs(picks.count("pvp") / len(picks) - 0.75) < 0.03
    assert TaskMixer({"pvp": 1.0}).pick(np.random.default_rng(0)) == "pvp"
    with pytest.raises(UserError):
        TaskMixer({"pvp": 1.0, "game": 0.0})


def test_each_batch_holds_one_task(micro_model, image_folder, collected):
    """A PVP batch is all reconstruction questions, a game batch all observations of one game."""
    rng = np.random.default_rng(0)
    pvp = PVPTask(ImageSources([str(image_folder)]), queries_per_image=3).batch(micro_model, rng, 6)
    assert pvp["images"].shape == (2, 1, 3, 64, 64)  # 6 questions about 2 images, each encoded once
    tokenizer = micro_model.tokenizer
    for row in pvp["input_ids"]:
        text = tokenizer.decode([t for t in row.tolist() if t >= 0], skip_special_tokens=True)
        # The shared "<Img>...</Img> [reconstruct] loc: [" once, then three "y,x] rgb: [r,g,b]" questions.
        assert (
            text.count("[reconstruct] loc: [") == 1 and text.count("] rgb: [") == 3 and "choose an action" not in text
        )

    game = GameTask([open_collected(collected, None)]).batch(micro_model, rng, 3)
    assert game["images"].shape == (3, 4, 3, 64, 64)  # SpaceInvaders: 4 stacked frames per observation
    for row, labels in zip(game["input_ids"], game["labels"]):
        text = tokenizer.decode([t for t in row.tolist() if t >= 0], skip_special_tokens=True)
        assert "[spaceinvaders] choose an action from Action Space:" in text and "[reconstruct]" not in text
        answer = tokenizer.decode([t for t in labels.tolist() if t >= 0], skip_special_tokens=True)
        assert answer in ("NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE")


def test_packed_loss_equals_the_plain_batch_loss(micro_model):
    """Sharing the image prefix changes the cost, not the computation."""
    model = micro_model.eval()
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    groups, samples = [], []
    for frame in frames:
        pixels = model.preprocess(frame[None])
        questions = [pvp_question(frame, rng) for _ in range(4)]
        groups.append((pixels, [(q["prompt"], q["answer"]) for q in questions]))
        samples += [dict(images=pixels, prompt=q["prompt"], answer=q["answer"]) for q in questions]
    with torch.no_grad():
        packed = packed_loss(model, pack(model, groups))
        plain = model(**model.collate(samples)).loss
    assert torch.allclose(packed, plain, atol=1e-5), (packed, plain)
    model.train()


def loss_and_gradients(model, batch, linear_kernels) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)  # the same LoRA dropout masks on both paths
    with linear_kernels():
        loss = model(**batch).loss
    loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), gradients


def micro_game_batch() -> tuple[VLM, dict]:
    """A trainable micro model and a collated batch of 3 CarRacing observations of 2 frames."""
    model = VLM.from_config(VLMConfig.preset("tiny", **MICRO)).train()
    model.set_trainable(**TRAINING_STAGES["scratch"])
    rng = np.random.default_rng(2)
    stacks = rng.integers(0, 256, (3, 2, 96, 96, 3), dtype=np.uint8)
    prompt = prompts.game_prompt(2, "", "carracing")
    answers = ("left_gas", "right", "straight_coast")  # answers of different lengths: padded rows
    batch = model.collate([dict(images=model.preprocess(s), prompt=prompt, answer=a) for s, a in zip(stacks, answers)])
    return model, batch


def test_onednn_linear_keeps_the_loss_and_gradients_of_a_game_batch():
    """The loop's OneDNNLinear changes which library multiplies, not what: fp32 results up to rounding."""
    with OneDNNLinear():
        product = torch.nn.functional.linear(torch.randn(4, 3, requires_grad=True), torch.randn(2, 3))
    assert type(product.grad_fn).__name__ == "OneDNNLinearFunctionBackward"  # it does take the other path
    model, batch = micro_game_batch()
    mkl_loss, mkl_gradients = loss_and_gradients(model, batch, contextlib.nullcontext)
    onednn_loss, onednn_gradients = loss_and_gradients(model, batch, OneDNNLinear)
    torch.testing.assert_close(onednn_loss, mkl_loss, rtol=1e-6, atol=0)
    assert onednn_gradients.keys() == mkl_gradients.keys()
    for name, gradient in mkl_gradients.items():
        torch.testing.assert_close(onednn_gradients[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


def attention_backward_name() -> str:
    q = torch.randn(2, 3, 5, 8, requires_grad=True)
    return type(torch.nn.functional.scaled_dot_product_attention(q, q, q).grad_fn).__name__


def test_cpu_kernels_put_bf16_attention_on_the_math_path_with_the_same_loss_and_gradients():
    """Under bf16 autocast cpu_kernels swap the flash attention kernel for SDPA's math path (fp32 keeps
    flash): the same bf16 training step up to bf16 rounding."""
    with cpu_kernels():
        assert "Flash" in attention_backward_name()
    bf16 = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16)
    with bf16():
        assert "Flash" in attention_backward_name()
        with cpu_kernels():
            assert "Flash" not in attention_backward_name()

    @contextlib.contextmanager
    def bf16_cpu_kernels():
        with bf16(), cpu_kernels():
            yield

    model, batch = micro_game_batch()
    flash_loss, flash_gradients = loss_and_gradients(model, batch, bf16)
    math_loss, math_gradients = loss_and_gradients(model, batch, bf16_cpu_kernels)
    torch.testing.assert_close(math_loss, flash_loss, rtol=2e-2, atol=0)
    assert math_gradients.keys() == flash_gradients.keys()
    scale = max(gradient.norm() for gradient in flash_gradients.values())
    for name, gradient in flash_gradients.items():  # keys' biases have a gradient of 0 but for rounding: scale
        assert (math_gradients[name] - gradient).norm() <= 0.05 * gradient.norm() + 1e-3 * scale, name


# ---- the command: stages, resume, DDP ----------------------------------------------------------


def vision_weights(checkpoint_dir) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(checkpoint_dir / "model.safetensors")).items() if k.startswith("vision.")}


def test_three_stages_chain_and_freeze_what_the_paper_freezes(image_folder, tmp_path, capsys):
    overrides = micro_run(tmp_path, [image_folder], "run=chain")
    for stage in ("pvp_stage1", "pvp_stage2", "pvp_stage3"):
        overrides += stage_override(stage, steps=2, save_every=1, warmup_steps=1) + small_pvp(stage)
    train_main.__wrapped__(compose_train(*overrides))
    out = capsys.readouterr().out
    assert "game left out: no dataset played by expert" in out  # stage 3 mixes in only the tasks that have data

    run = tmp_path / "chain"
    summaries = {
        s: json.loads((run / s / SUMMARY_FILE).read_text()) for s in ("pvp_stage1", "pvp_stage2", "pvp_stage3")
    }
    assert "vision" not in summaries["pvp_stage1"]["trainable"] and "vision" in summaries["pvp_stage2"]["trainable"]
    assert "vision" not in summaries["pvp_stage3"]["trainable"]
    assert all(s["steps"] == 2 and not list(checkpoints(run / name)) for name, s in summaries.items())

    fresh = VLM.from_config(VLMConfig.preset("tiny", **MICRO))
    initial = {f"vision.{k}": v for k, v in fresh.vision.state_dict().items()}
    after = {s: vision_weights(run / s / FINAL_DIR) for s in summaries}
    assert all(torch.equal(after["pvp_stage1"][k], initial[k]) for k in initial)  # frozen at its initialisation
    assert any(not torch.equal(after["pvp_stage2"][k], after["pvp_stage1"][k]) for k in initial)  # adapted
    assert all(torch.equal(after["pvp_stage3"][k], after["pvp_stage2"][k]) for k in initial)  # frozen again

    train_main.__wrapped__(compose_train(*overrides))  # everything is done: nothing trains again
    assert "training" not in capsys.readouterr().out


def resume_overrides(run_dir, image_folder, run: str) -> list[str]:
    return [
        "recipe=pvp_stage1",
        f"run={run}",
        "threads=1",
        *micro_run(run_dir, [image_folder]),
        *stage_override("pvp_stage1", steps=40, save_every=5, warmup_steps=2, log_every=5),
        *small_pvp("pvp_stage1", batch_size=16, queries=4),
    ]


def test_resume_after_sigkill_loses_at_most_one_interval_and_ends_identical(image_folder, tmp_path):
    stage_dir = tmp_path / "killed" / "pvp_stage1"
    process = subprocess.Popen(
        [sys.executable, "-m", "train", *resume_overrides(tmp_path, image_folder, "killed")],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + DEADLINE_S
    while not any(step >= 10 for step, _ in checkpoints(stage_dir)):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(KILL_POLL_S)
    latest = checkpoints(stage_dir)[-1][0]
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (stage_dir / FINAL_DIR).exists()
    # The kill came before checkpoint latest + 5 was complete: at most one interval of steps is lost.
    assert checkpoints(stage_dir)[-1][0] == latest

    resumed = run_module("train", *resume_overrides(tmp_path, image_folder, "killed"))
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((stage_dir.parent / "pvp_stage1" / SUMMARY_FILE).read_text())
    assert summary["resumed_from_step"] == latest and summary["steps"] == 40

    straight = run_module("train", *resume_overrides(tmp_path, image_folder, "straight"))
    assert straight.returncode == 0, straight.stderr
    uninterrupted = json.loads((tmp_path / "straight" / "pvp_stage1" / SUMMARY_FILE).read_text())
    assert uninterrupted["resumed_from_step"] == 0
    # Same tasks, images, locations and dropout after the resume: bit-identical weights.
    assert summary["replica_sha256"] == uninterrupted["replica_sha256"]
    # The curves cover every step, those only the killed process logged too, with the uninterrupted run's losses.
    resumed_losses = read_scalars(stage_dir / TB_DIR)["loss/pvp"]
    assert sorted(resumed_losses) == list(range(5, 41, 5))
    assert resumed_losses == read_scalars(tmp_path / "straight" / "pvp_stage1" / TB_DIR)["loss/pvp"]
    assert (stage_dir / CURVES_PNG).is_file()


def test_torchrun_two_gloo_processes_end_with_identical_weights(image_folder, tmp_path):
    overrides = [
        "recipe=pvp_stage1",
        "run=ddp",
        *micro_run(tmp_path, [image_folder]),
        *stage_override("pvp_stage1", steps=4, save_every=2, warmup_steps=1, grad_accum=2),
        *small_pvp("pvp_stage1"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "train",
            *overrides,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stage_dir = tmp_path / "ddp" / "pvp_stage1"
    summary = json.loads((stage_dir / SUMMARY_FILE).read_text())
    assert summary["world_size"] == 2 and summary["samples"] == 4 * 2 * 4 * 2  # steps x accumulation x batch x ranks
    rank0, rank1 = summary["replica_sha256"]
    assert rank0 == rank1
    saved = VLM.from_pretrained(str(stage_dir / FINAL_DIR))
    assert weights_sha256(saved) == rank0


def test_bad_input_is_one_line_and_exit_2(image_folder, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_module("train", f"data=[{empty}]", f"run_dir={tmp_path}", *MICRO_OVERRIDES)
    assert result.returncode == 2
    assert (
        result.stderr.strip().count("\n") == 0
        and result.stderr.startswith("error: ")
        and "Traceback" not in result.stderr
    )
    assert "no PNG or JPEG" in result.stderr

    for bad, message in [
        (f"init={tmp_path / 'missing'}", "is not a checkpoint folder"),
        ("recipe.stages.pvp_stage1.trainable=everything", "neither a list"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            train_main.__wrapped__(compose_train(*micro_run(tmp_path, [image_folder], "run=bad", bad)))
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("error: ") and message in err and err.strip().count("\n") == 0
