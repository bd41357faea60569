"""strategy=fsdp: FSDP2 under torchrun with 2 gloo processes, on a micro size of the tiny preset (its whole
architecture: CLIP vision tower, projector, LLaMA with LoRA). Its loss curve against one process with the same
global batch and against DDP on the same draws, resume after SIGKILL of one rank, the final model in one process.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from PIL import Image
from test_train import DEADLINE_S, KILL_POLL_S, compose_train, micro_run, small_pvp, stage_override

from core.runs import FINAL_DIR, SUMMARY_FILE
from train.__main__ import main as train_main
from train.__main__ import new_model
from train.checkpoint import checkpoints
from train.curves import TB_DIR, read_scalars
from train.loop import start_distributed, weights_sha256
from vlm import VLM
from vlm.model import LORA_PARAMETER_TAG

STAGE = "pvp_stage1"
RANKS = 2
STEPS, SAVE_EVERY, LOG_EVERY, GRAD_ACCUM = 30, 10, 5, 2
GLOBAL_BATCH, QUERIES = 16, 4  # PVP questions per micro-batch of all ranks together, and per frame
KILLED_RANK = 1
# Each rank draws its own frames and locations, so 2 ranks see other questions than 1 process: measured up to
# 1.0 % apart per logged step.
ONE_PROCESS_RTOL = 0.03
# DDP draws what FSDP draws; FSDP reduce-scatters where DDP all-reduces (another summation order): measured 5e-7.
DDP_ATOL = 1e-4
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # per torchrun worker: the 2 workers share the cores


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fsdp_images")
    rng = np.random.default_rng(0)
    for index, (height, width) in enumerate([(96, 96), (210, 160), (50, 70), (64, 64)]):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / f"{index}.png")
    return root


def overrides(run_dir: Path, images: Path, run: str, ranks: int, strategy: str) -> list[str]:
    """The vision tower and the LLM train in their FSDP units, the LLM's LoRA is frozen in the same units: the full
    preset's frozen LLM beside its trained LoRA mirrored, with a loss that falls within a few steps."""
    return [
        f"recipe={STAGE}",
        f"run={run}",
        f"strategy={strategy}",
        "model.extra_trainable=[]",
        f"recipe.stages.{STAGE}.trainable=[vision,projector,llm]",
        *micro_run(run_dir, [images]),
        *stage_override(
            STAGE, steps=STEPS, save_every=SAVE_EVERY, log_every=LOG_EVERY, warmup_steps=2, grad_accum=GRAD_ACCUM
        ),
        *small_pvp(STAGE, batch_size=GLOBAL_BATCH // ranks, queries=QUERIES),
    ]


def torchrun(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={RANKS}",
        "-m",
        "train",
        *args,
    ]


def worker_pid(launcher_pid: int, rank: int) -> int:
    """The torchrun worker of `rank`: the launcher's child whose environment says RANK=rank."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environment = (proc / "environ").read_bytes().split(b"\0")
        except OSError:  # it ended meanwhile
            continue
        if parent == launcher_pid and f"RANK={rank}".encode() in environment:
            return int(proc.name)
    raise AssertionError(f"torchrun (pid {launcher_pid}) has no worker of rank {rank}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, images) -> dict:
    """One process, DDP, and FSDP killed by a SIGKILL of rank KILLED_RANK after a checkpoint, then run again."""
    run_dir = tmp_path_factory.mktemp("fsdp_runs")
    train_main.__wrapped__(compose_train(*overrides(run_dir, images, "one", 1, "ddp")))

    ddp = subprocess.run(
        torchrun(*overrides(run_dir, images, "ddp", RANKS, "ddp")),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env=ONE_THREAD,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    fsdp_args = torchrun(*overrides(run_dir, images, "fsdp", RANKS, "fsdp"))
    stage_dir = run_dir / "fsdp" / STAGE
    launcher = subprocess.Popen(
        fsdp_args, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ONE_THREAD
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not checkpoints(stage_dir):
            assert launcher.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(KILL_POLL_S)
        os.kill(worker_pid(launcher.pid, KILLED_RANK), signal.SIGKILL)
        assert launcher.wait(timeout=DEADLINE_S) != 0  # torchrun stops the other rank and fails
    finally:
        if launcher.poll() is None:  # a failed assertion: torchrun takes its workers down with it
            launcher.terminate()
            launcher.wait()
    assert not (stage_dir / FINAL_DIR).exists()
    killed_at = checkpoints(stage_dir)[-1][0]

    resumed = subprocess.run(
        fsdp_args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=DEADLINE_S, env=ONE_THREAD
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return {
        "stage_dirs": {run: run_dir / run / STAGE for run in ("one", "ddp", "fsdp")},
        "killed_at": killed_at,
        "initial": new_model(compose_train(*overrides(run_dir, images, "one", 1, "ddp")).model),
    }


def losses(stage_dir: Path) -> dict[int, float]:
    return read_scalars(stage_dir / TB_DIR)["loss/pvp"]


def summary(stage_dir: Path) -> dict:
    return json.loads((stage_dir / SUMMARY_FILE).read_text())


def test_one_process_trains_unsharded_and_says_so(capsys):
    runtime = start_distributed(0, "auto", False, "fsdp")
    assert not runtime.sharded and "one process has nothing to shard" in capsys.readouterr().out


def test_fsdp_gives_the_loss_curve_of_one_process_and_of_ddp(runs):
    one, ddp, fsdp = (losses(runs["stage_dirs"][run]) for run in ("one", "ddp", "fsdp"))
    assert sorted(fsdp) == sorted(one) == sorted(ddp) == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    for step in one:
        assert fsdp[step] == pytest.approx(one[step], rel=ONE_PROCESS_RTOL), step
        assert fsdp[step] == pytest.approx(ddp[step], abs=DDP_ATOL), step
    assert summary(runs["stage_dirs"]["fsdp"])["samples"] == summary(runs["stage_dirs"]["one"])["samples"]


def test_fsdp_resumes_from_the_last_checkpoint_after_sigkill_of_one_rank(runs):
    stage_dir = runs["stage_dirs"]["fsdp"]
    resumed = summary(stage_dir)
    assert resumed["strategy"] == "fsdp" and resumed["world_size"] == RANKS
    assert resumed["resumed_from_step"] == runs["killed_at"] >= SAVE_EVERY and resumed["steps"] == STEPS
    assert not checkpoints(stage_dir)
    # The steps after the resume are DDP's too: the sharded optimizer state came back whole.
    ddp = losses(runs["stage_dirs"]["ddp"])
    after = {step: loss for step, loss in losses(stage_dir).items() if step > runs["killed_at"]}
    assert after and all(loss == pytest.approx(ddp[step], abs=DDP_ATOL) for step, loss in after.items())


def test_fsdp_final_model_loads_in_one_process_as_rank_0_gathered_it(runs):
    stage_dir = runs["stage_dirs"]["fsdp"]
    final = VLM.from_pretrained(str(stage_dir / FINAL_DIR))
    assert [weights_sha256(final)] == summary(stage_dir)["replica_sha256"]
    assert summary(stage_dir)["trainable_parameters"] == summary(runs["stage_dirs"]["one"])["trainable_parameters"]

    # Frozen and trainable parameters share the LLM's FSDP units: the frozen ones kept their initial values.
    initial = runs["initial"].state_dict()
    trained = final.state_dict()
    assert initial.keys() == trained.keys()
    lora = [name for name in trained if LORA_PARAMETER_TAG in name]
    llm = [name for name in trained if name.startswith("llm.") and LORA_PARAMETER_TAG not in name]
    vision = [name for name in trained if name.startswith("vision.")]
    assert lora and all(torch.equal(trained[name], initial[name]) for name in lora)
    for part in (llm, vision):
        assert any(not torch.equal(trained[name], initial[name]) for name in part)
