"""One training loop for every recipe: AdamW, cosine schedule with warmup, bf16 autocast where supported,
gradient accumulation, clipping, periodic checkpoints and exact resume, TensorBoard, DDP under torchrun,
fp32 linear layers on oneDNN's matmul on CPUs (train/onednn.py).

Randomness is drawn from generators seeded by (seed, step, rank), so a resumed run draws the same
tasks, images, locations and dropout masks as an uninterrupted one, and needs no RNG state on disk.
"""

import contextlib
import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from core.errors import UserError
from train import checkpoint
from train.onednn import OneDNNLinear
from train.tasks import StageTask, Task, TaskMixer
from vlm import VLM

MIX_STREAM, DATA_STREAM = 0, 1  # independent random streams per step: task choice (all ranks), data (per rank)
TB_DIR = "tb"
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class StageConfig:
    name: str
    trainable: list[str]  # parts of VLM.parameter_groups() that train
    tasks: dict[str, dict]  # task name -> {ratio, batch_size, ...}; batch_size is per process and micro-batch
    steps: int  # optimizer steps
    lr: float
    warmup_steps: int
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    weight_decay: float = 0.0
    grad_accum: int = 1  # micro-batches per optimizer step
    max_grad_norm: float = 1.0
    save_every: int = 100  # steps between checkpoints
    log_every: int = 10  # steps between TensorBoard points


@dataclass
class Runtime:
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast on a GPU that supports it, else fp32; or bf16 / fp32
    onednn_linear: bool = True  # on CPU, fp32 linear layers on oneDNN (OneDNNLinear); False: PyTorch's default (MKL)
    progress: bool = True
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        if self.precision == "fp32":
            return None
        if self.precision == "bf16":
            return torch.bfloat16
        gpu_bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if gpu_bf16 else None


def start_distributed(seed: int, precision: str, progress: bool) -> Runtime:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: join the group (NCCL on GPUs, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(seed=seed, precision=precision, progress=progress, rank=rank, world_size=world_size, device=device)


class Objective(nn.Module):
    """The loss of one batch of any task (the task computes it); DDP wraps this so its hooks see every forward."""

    def __init__(self, model: VLM):
        super().__init__()
        self.model = model

    def forward(self, task: Task, batch: dict) -> torch.Tensor:
        return task.loss(self.model, batch)


def cosine_with_warmup(stage: StageConfig):
    def factor(step: int) -> float:
        if step < stage.warmup_steps:
            return (step + 1) / stage.warmup_steps
        progress = (step - stage.warmup_steps) / max(1, stage.steps - stage.warmup_steps)
        return stage.min_lr_ratio + (1 - stage.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def weights_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def train_stage(model: VLM, stage: StageConfig, tasks: dict[str, StageTask], stage_dir: Path, runtime: Runtime) -> dict:
    """Train `model` in place for stage.steps optimizer steps, resuming from the latest checkpoint in
    stage_dir; write the final model and summary there."""
    unknown = sorted(set(stage.trainable) - set(model.parameter_groups()))
    if unknown:
        raise UserError(
            f"stage {stage.name}: unknown trainable parts {unknown}; parts: {sorted(model.parameter_groups())}"
        )
    model.set_trainable(**{part: True for part in stage.trainable})
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(stage))
    objective: nn.Module = Objective(model)
    if runtime.world_size > 1:
        # Unused parameters differ between tasks (e.g. the visual prompt encoder), hence find_unused_parameters.
        objective = DistributedDataParallel(objective, find_unused_parameters=True)
    mixer = TaskMixer({name: stage_task.ratio for name, stage_task in tasks.items()})

    if runtime.is_main:
        checkpoint.clean_partial(stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
    _barrier(runtime)
    state = {"step": 0, "samples": 0, "train_seconds": 0.0}
    found = checkpoint.checkpoints(stage_dir)
    if found:
        saved = checkpoint.load_checkpoint(found[-1][1], model)
        optimizer.load_state_dict(saved.pop("optimizer"))
        scheduler.load_state_dict(saved.pop("scheduler"))
        state = saved
    resumed_from = state["step"]

    writer = SummaryWriter(str(stage_dir / TB_DIR)) if runtime.is_main else None
    bar = tqdm(
        total=stage.steps,
        initial=state["step"],
        desc=stage.name,
        unit="step",
        disable=not (runtime.progress and runtime.is_main),
    )
    autocast = torch.autocast(
        runtime.device.type, dtype=runtime.autocast_dtype or torch.float32, enabled=runtime.autocast_dtype is not None
    )
    linear_kernels = OneDNNLinear if runtime.onednn_linear and runtime.device.type == "cpu" else contextlib.nullcontext
    last_losses: dict[str, float] = {}
    while state["step"] < stage.steps:
        step = state["step"]
        mix_rng = np.random.default_rng([runtime.seed, MIX_STREAM, step])
        data_rng = np.random.default_rng([runtime.seed, DATA_STREAM, step, runtime.rank])
        torch.manual_seed(int(data_rng.integers(2**62)))  # dropout
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        samples, step_losses = 0, {}
        for micro in range(stage.grad_accum):
            name = mixer.pick(mix_rng)
            task, batch_size = tasks[name].task, tasks[name].batch_size
            batch = task.batch(model, data_rng, batch_size)
            last_micro = micro == stage.grad_accum - 1
            sync = contextlib.nullcontext() if last_micro or runtime.world_size == 1 else objective.no_sync()
            with sync:
                with autocast, linear_kernels():
                    loss = objective(task, batch)
                (loss / stage.grad_accum).backward()
            step_losses.setdefault(name, []).append(loss.item())
            samples += batch_size * runtime.world_size
        grad_norm = torch.nn.utils.clip_grad_norm_(params, stage.max_grad_norm)
        optimizer.step()
        scheduler.step()
        seconds = time.perf_counter() - start
        state["step"] += 1
        state["samples"] += samples
        state["train_seconds"] += seconds
        last_losses.update({name: float(np.mean(values)) for name, values in step_losses.items()})

        bar.update(1)
        bar.set_postfix(
            {**{f"loss_{n}": f"{v:.3f}" for n, v in last_losses.items()}, "samples/s": f"{samples / seconds:.1f}"}
        )
        if writer is not None and (state["step"] % stage.log_every == 0 or state["step"] == stage.steps):
            for name, value in last_losses.items():
                writer.add_scalar(f"loss/{name}", value, state["step"])
            writer.add_scalar("lr", scheduler.get_last_lr()[0], state["step"])
            writer.add_scalar("grad_norm", float(grad_norm), state["step"])
            writer.add_scalar("samples_per_s", samples / seconds, state["step"])
        if state["step"] % stage.save_every == 0 and state["step"] < stage.steps:
            if runtime.is_main:
                checkpoint.save_checkpoint(
                    stage_dir,
                    model,
                    {**state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                )
            _barrier(runtime)
    bar.close()

    summary = {
        "stage": stage.name,
        "trainable": list(stage.trainable),
        "tasks": {name: dict(stage.tasks[name]) for name in tasks},  # the recipe's options of each task trained
        "steps": state["step"],
        "resumed_from_step": resumed_from,
        "samples": state["samples"],
        "train_seconds": round(state["train_seconds"], 2),
        "samples_per_s": round(state["samples"] / max(state["train_seconds"], 1e-9), 2),
        "last_losses": last_losses,
        "world_size": runtime.world_size,
        "trainable_parameters": sum(p.numel() for p in params),
        "replica_sha256": _replica_digests(model, runtime),
    }
    if len(set(summary["replica_sha256"])) != 1:
        raise RuntimeError(
            f"stage {stage.name}: the DDP replicas ended with different weights {summary['replica_sha256']}"
        )
    if runtime.is_main:
        checkpoint.save_final(stage_dir, model, summary)
        writer.close()
    _barrier(runtime)
    return summary


def _replica_digests(model: VLM, runtime: Runtime) -> list[str]:
    digest = weights_sha256(model)
    if runtime.world_size == 1:
        return [digest]
    digests = [None] * runtime.world_size
    dist.all_gather_object(digests, digest)
    return digests


def _barrier(runtime: Runtime) -> None:
    if runtime.world_size > 1:
        dist.barrier()
