"""One training loop for every recipe: AdamW, cosine schedule with warmup, bf16 autocast where supported,
gradient accumulation, clipping, periodic checkpoints and exact resume, TensorBoard and the stage's curves.png
(train/curves.py), DDP or FSDP2 under torchrun, fp32 linear layers on oneDNN's matmul on CPUs (train/onednn.py).

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
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm
from transformers.modeling_layers import GradientCheckpointingLayer

from core.errors import UserError
from train import checkpoint, curves
from train.onednn import cpu_kernels
from train.tasks import StageTask, Task, TaskMixer
from vlm import VLM

MIX_STREAM, DATA_STREAM = 0, 1  # independent random streams per step: task choice (all ranks), data (per rank)
PRECISIONS = ("auto", "bf16", "fp32")
STRATEGIES = ("ddp", "fsdp")  # under torchrun: every process holds the whole model (DDP), or a shard of it (FSDP2)


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
    strategy: str = "ddp"  # one of STRATEGIES; a single process trains unsharded whatever it says
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

    @property
    def sharded(self) -> bool:
        return self.strategy == "fsdp" and self.world_size > 1


def start_distributed(seed: int, precision: str, progress: bool, strategy: str = "ddp") -> Runtime:
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
    if strategy == "fsdp" and world_size == 1:
        print(
            "strategy=fsdp: one process has nothing to shard, it trains unsharded (torchrun --nproc_per_node=N shards)"
        )
    return Runtime(
        seed=seed,
        precision=precision,
        progress=progress,
        strategy=strategy,
        rank=rank,
        world_size=world_size,
        device=device,
    )


class Objective(nn.Module):
    """The loss of one batch of any task (the task computes it); DDP wraps this, and FSDP2 makes it the root, so
    that their hooks see every forward (a task may call the VLM's parts, not its forward)."""

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


def shard(objective: Objective, runtime: Runtime) -> None:
    """FSDP2 in place: each transformer block of the LLM and of the vision tower is a unit of its own, whose
    parameters are gathered for its forward and backward only; the root (the objective) holds the rest. A block
    may mix frozen and trainable parameters (LoRA on a frozen LLM): only those with a gradient are reduced."""
    if runtime.autocast_dtype == torch.bfloat16:
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    else:
        policy = MixedPrecisionPolicy()
    blocks = [module for module in objective.model.modules() if isinstance(module, GradientCheckpointingLayer)]
    for block in blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(objective, mp_policy=policy)


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
    if runtime.is_main:
        checkpoint.clean_partial(stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
    _barrier(runtime)
    found = checkpoint.checkpoints(stage_dir)
    # The weights load before the model is sharded: every process reads the whole checkpoint.
    saved = checkpoint.load_checkpoint(found[-1][1], model) if found else None
    # What rank 0 saves of a sharded model: a copy made now, which holds weights only while they are saved.
    skeleton = checkpoint.weightless_copy(model) if runtime.sharded and runtime.is_main else None

    objective: nn.Module = Objective(model)
    if runtime.sharded:
        shard(objective, runtime)
    elif runtime.world_size > 1:
        # Unused parameters differ between tasks (e.g. the visual prompt encoder), hence find_unused_parameters.
        objective = DistributedDataParallel(objective, find_unused_parameters=True)
    params = [p for p in model.parameters() if p.requires_grad]  # after sharding: FSDP2 replaces them
    optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(stage))
    mixer = TaskMixer({name: stage_task.ratio for name, stage_task in tasks.items()})

    state = {"step": 0, "samples": 0, "train_seconds": 0.0}
    if saved is not None:
        optimizer_state = saved.pop("optimizer")
        if runtime.sharded:
            checkpoint.load_sharded_optimizer_state(optimizer, optimizer_state)
        else:
            optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(saved.pop("scheduler"))
        state = saved
    resumed_from = state["step"]

    writer = SummaryWriter(str(stage_dir / curves.TB_DIR)) if runtime.is_main else None
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
    kernels = (lambda: cpu_kernels(runtime.onednn_linear)) if runtime.device.type == "cpu" else contextlib.nullcontext
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
            replicated = isinstance(objective, DistributedDataParallel)
            # FSDP2 reduce-scatters every micro-batch's gradients: unreduced they would take a whole model's memory.
            sync = objective.no_sync() if replicated and not last_micro else contextlib.nullcontext()
            with sync:
                with autocast, kernels():
                    loss = objective(task, batch)
                (loss / stage.grad_accum).backward()
            step_losses.setdefault(name, []).append(loss.item())
            samples += batch_size * runtime.world_size
        grad_norm = torch.nn.utils.clip_grad_norm_(params, stage.max_grad_norm)
        if isinstance(grad_norm, DTensor):
            grad_norm = grad_norm.full_tensor()
        optimizer.step()
        scheduler.step()
        seconds = time.perf_counter() - start
        state["step"] += 1
        state["samples"] += samples
        state["train_seconds"] += seconds
        last_losses.update(
            _mean_over_ranks({name: float(np.mean(values)) for name, values in step_losses.items()}, runtime)
        )

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
            with _model_to_save(model, skeleton, runtime) as saving:
                optimizer_state = _optimizer_state(model, optimizer, runtime)
                if runtime.is_main:
                    writer.flush()  # a kill after this checkpoint then loses no logged step before it
                    checkpoint.save_checkpoint(
                        stage_dir, saving, {**state, "optimizer": optimizer_state, "scheduler": scheduler.state_dict()}
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
        "strategy": runtime.strategy if runtime.world_size > 1 else None,
        "trainable_parameters": sum(p.numel() for p in params),
    }
    with _model_to_save(model, skeleton, runtime) as saving:
        summary["replica_sha256"] = _weight_digests(model, saving, runtime)
        if len(set(summary["replica_sha256"])) > 1:
            raise RuntimeError(
                f"stage {stage.name}: the DDP replicas ended with different weights {summary['replica_sha256']}"
            )
        if runtime.is_main:
            writer.close()
            # Before the stage is marked done, so that a done stage always has its curves.
            curves.write_curves(stage_dir, stage_title(stage_dir))
            checkpoint.save_final(stage_dir, saving, summary)
    _barrier(runtime)
    return summary


def stage_title(stage_dir: Path) -> str:
    return f"{stage_dir.parent.name}: {stage_dir.name}"


def _model_to_save(model: VLM, skeleton: VLM | None, runtime: Runtime) -> contextlib.AbstractContextManager:
    """The model as save_pretrained writes it: itself, or (FSDP, a collective) the shards gathered on rank 0."""
    return checkpoint.gathered_model(model, skeleton) if runtime.sharded else contextlib.nullcontext(model)


def _optimizer_state(model: VLM, optimizer: torch.optim.Optimizer, runtime: Runtime) -> dict:
    """optimizer.state_dict(); FSDP (a collective): the same layout, its shards gathered on rank 0."""
    return checkpoint.gathered_optimizer_state(model, optimizer) if runtime.sharded else optimizer.state_dict()


def _mean_over_ranks(losses: dict[str, float], runtime: Runtime) -> dict[str, float]:
    """Every rank ran the same tasks this step (MIX_STREAM): the mean of their losses is the loss of the step's
    whole batch, as one process drawing all of it would log it (up to how the answer tokens fall to the ranks)."""
    if runtime.world_size == 1:
        return losses
    values = torch.tensor(list(losses.values()), dtype=torch.float64, device=runtime.device)
    dist.all_reduce(values)
    return dict(zip(losses, (values / runtime.world_size).tolist()))


def _weight_digests(model: VLM, saving: VLM | None, runtime: Runtime) -> list[str]:
    """SHA-256 of each DDP replica's weights, which must agree; FSDP: of the one model gathered on rank 0."""
    if runtime.sharded:
        return [weights_sha256(saving)] if runtime.is_main else []
    return _replica_digests(model, runtime)


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
