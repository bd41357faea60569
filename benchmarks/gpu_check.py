"""One prepared check for a GPU machine, sized for well under 5 minutes: attention kernels, bf16 training, speed,
memory, FSDP. Exit code 0 when every part ran and both attention checks passed.

    python benchmarks/gpu_check.py --out results/gpu_check.json            # on the GPU machine
    python benchmarks/gpu_check.py --out /tmp/gpu_check.json --smoke       # anywhere: micro sizes, seconds

1. The full preset's architecture (a CLIP ViT with its patch embedding at 448 px, 14 px patches -> 256 tokens per
   image; LLaMA with LoRA r=64 on q/v), random weights at small widths, trained forward + backward under bf16
   autocast with attn_implementation flash_attention_2 (when flash_attn imports on a CUDA GPU) and sdpa on the same
   weights; both must pick the same actions by constrained choice (VLM.choose, as the VLM policy plays: flash
   attention scores one row per candidate, sdpa the candidates' prefix tree) after a few steps fitted on the batch,
   up to ties (two candidates within TIE_NATS of each other). Their free greedy answers (VLM.generate) are
   compared and reported too. The pvp task's packed batch (a 4D segment mask) must give both the same loss.
2. Training samples/s (a CarRacing batch of 8 observations, the paper's, no game instruction; projector + LoRA
   train as in the game stage) and play actions/s (LoRA merged, FrameCache, 27 CarRacing actions) of the tiny
   preset and, on a GPU, of a ~1.2 B random-weight model of the same architecture (ViT-B width, 22 LLaMA layers of
   2048), whose peak GPU memory is set beside benchmarks/memory_table.py's prediction for it.
3. FSDP (torch.distributed.fsdp.fully_shard per decoder / encoder layer, bf16 parameters, fp32 reductions; NCCL)
   over every GPU when there are several: samples/s and peak memory per rank. `--fsdp-processes N` chooses N
   (on a CPU: gloo).

Whatever the machine lacks it falls back from and says so, in the printed table and in the JSON (`fallbacks`):
no GPU -> CPU, fp32 (as train.loop's precision=auto), sdpa checked against eager, the ~1.2 B model skipped; no bf16
GPU -> fp32; no flash_attn -> sdpa against eager; one GPU -> FSDP skipped.
"""

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import memory_table
import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from agents.vlm_policy import game_prompt
from envs.games import GAMES
from train.__main__ import game_texts
from train.loop import StageConfig
from train.tasks.pvp import PVPTask
from vlm import TRAINING_STAGES, VLM, FrameCache, VLMConfig, build_tokenizer

SPEC = GAMES["carracing"]
BATCH = 8  # observations per training step: the paper's CarRacing batch
INSTRUCTION = "none"
LR = 1e-3
GENERATED_TOKENS = 8  # enough for the longest action word and eos
TIE_NATS = 1e-2  # two candidates closer than this in log-probability are a tie at bf16 precision
LOSS_TOLERANCE = 1e-2  # relative: bf16 kernels differ in rounding, a wrong mask changes the loss far more
PVP_IMAGES, QUERIES_PER_IMAGE = 2, 16  # the pvp recipe's queries_per_image
GIB = 2**30
CPU_THREADS = 1  # as `python -m train threads=1`: more threads than free cores makes every step many times slower
ERROR_CHARS = 2000  # the end of a failure's message kept in the results (a worker's traceback ends there)
TRAINABLE = TRAINING_STAGES["game"]  # projector + LoRA
FULL_ARCHITECTURE = dict(vision_path=None, llm_path=None, patch_size=14, vision_stem="patch")


@dataclass(frozen=True)
class Sizes:
    """How big and how long: the full-architecture check's widths and the steps of each measurement."""

    full_architecture: dict
    fit_steps: int
    warmup_steps: int
    train_steps: int
    play_actions: int


SIZES = {
    "gpu": Sizes(
        full_architecture=dict(
            vision_hidden_size=256,
            vision_intermediate_size=1024,
            vision_layers=4,
            vision_heads=4,
            llm_hidden_size=512,
            llm_intermediate_size=1376,
            llm_layers=4,
            llm_heads=8,
        ),
        fit_steps=30,
        warmup_steps=3,
        train_steps=10,
        play_actions=50,
    ),
    "smoke": Sizes(
        full_architecture=dict(
            image_size=112,
            vision_hidden_size=64,
            vision_intermediate_size=128,
            vision_layers=2,
            vision_heads=2,
            llm_hidden_size=64,
            llm_intermediate_size=128,
            llm_layers=2,
            llm_heads=2,
            lora_r=8,
        ),
        fit_steps=15,
        warmup_steps=1,
        train_steps=2,
        play_actions=5,
    ),
}
ONE_B = dict(  # ~1.2 B parameters: a ViT-B-wide tower and a 22-layer LLaMA of width 2048 (TinyLlama's shape, MHA)
    vision_hidden_size=768,
    vision_intermediate_size=3072,
    vision_layers=12,
    vision_heads=12,
    llm_hidden_size=2048,
    llm_intermediate_size=5632,
    llm_layers=22,
    llm_heads=16,
)


@dataclass(frozen=True)
class Machine:
    device: torch.device
    name: str
    gpus: int
    bf16: bool  # bf16 autocast and bf16 tower weights; else fp32 throughout
    flash: bool
    fallbacks: tuple[str, ...]

    @property
    def dtype(self) -> str:
        return "bfloat16" if self.bf16 else "float32"

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def flash_attn_version() -> str | None:
    try:
        import flash_attn
    except (ImportError, OSError):
        return None
    return flash_attn.__version__


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return f"CPU {models[0] if models else platform.processor()}, {os.cpu_count()} cores"


def inspect_machine() -> Machine:
    fallbacks = []
    if not torch.cuda.is_available():
        fallbacks.append(
            f"no CUDA GPU: runs on the CPU, fp32 (train.loop's precision=auto on a CPU), {CPU_THREADS} torch thread"
        )
        torch.set_num_threads(CPU_THREADS)
        return Machine(torch.device("cpu"), cpu_name(), 0, False, False, tuple(fallbacks))
    device = torch.device("cuda", 0)
    bf16 = torch.cuda.is_bf16_supported()
    if not bf16:
        fallbacks.append("the GPU has no bf16: fp32 throughout")
    flash = flash_attn_version() is not None and bf16
    if not flash:
        fallbacks.append("flash_attn does not import (or no bf16): sdpa is checked against eager instead")
    return Machine(device, torch.cuda.get_device_name(device), torch.cuda.device_count(), bf16, flash, tuple(fallbacks))


def attention_implementations(machine: Machine) -> tuple[str, str]:
    return ("flash_attention_2", "sdpa") if machine.flash else ("sdpa", "eager")


def build(tokenizer, machine: Machine, preset: str, attn: str | None = None, **fields) -> VLM:
    """A random-weight VLM on the machine's device; attn=None: the project's choice for the machine."""
    config = VLMConfig.preset(preset, game_instruction=INSTRUCTION, attn_implementation=attn, **fields)
    return VLM.from_config(config, tokenizer=tokenizer).to(machine.device)


def full_architecture(tokenizer, machine: Machine, widths: dict, attn: str | None = None) -> VLM:
    return build(tokenizer, machine, "full", attn, dtype=machine.dtype, **FULL_ARCHITECTURE, **widths)


def game_batch(model: VLM, rng: np.random.Generator) -> dict:
    """BATCH random CarRacing observations, each with a random action word, collated."""
    frames = rng.integers(0, 256, size=(BATCH, SPEC.n_stack, *SPEC.frame_shape), dtype=np.uint8)
    labels = rng.integers(len(SPEC.action_names), size=BATCH)
    prompt = game_prompt(model.config, SPEC)
    samples = [
        dict(images=model.preprocess(frames[i]), prompt=prompt, answer=SPEC.action_names[label])
        for i, label in enumerate(labels)
    ]
    return model.collate(samples)


def trainer(model: VLM, machine: Machine):
    """One training step of the game stage as train.loop runs it (autocast, backward, AdamW; no clipping)."""
    model.train()
    model.set_trainable(**TRAINABLE)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)

    def step(batch: dict) -> float:
        with machine.autocast():
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def timed_steps(step, batch: dict, machine: Machine, sizes: Sizes) -> float:
    """Median seconds of one training step after the warm-up steps."""
    for _ in range(sizes.warmup_steps):
        step(batch)
    seconds = []
    for _ in range(sizes.train_steps):
        machine.sync()
        start = time.perf_counter()
        step(batch)
        machine.sync()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def check_attention(tokenizer, machine: Machine, sizes: Sizes) -> dict:
    """Forward + backward with both implementations on the same weights, then their constrained choices."""
    first_attn, second_attn = attention_implementations(machine)
    first = full_architecture(tokenizer, machine, sizes.full_architecture, first_attn)
    second = full_architecture(tokenizer, machine, sizes.full_architecture, second_attn)
    second.load_state_dict(first.state_dict())
    batch = game_batch(first, np.random.default_rng(0))
    # The loss of each one's first training step (forward, backward, AdamW) from the same weights.
    losses = {attn: trainer(model, machine)(batch) for attn, model in ((first_attn, first), (second_attn, second))}
    fit = trainer(first, machine)
    for _ in range(sizes.fit_steps):
        fit(batch)
    second.load_state_dict(first.state_dict())
    prompts = [game_prompt(first.config, SPEC)] * BATCH
    actions = list(SPEC.action_names)
    images = batch["images"].to(machine.device)
    choices, answers = [], []
    for model in (first, second):
        model.eval()
        choices.append(model.choose(prompts, actions, images=images))
        answers.append(model.generate(prompts, images=images, max_new_tokens=GENERATED_TOKENS))
    a, b = choices
    log_a, log_b = a.probs.float().log(), b.probs.float().log()
    rows = torch.arange(BATCH, device=a.index.device)
    gap_a = (log_a[rows, a.index] - log_a[rows, b.index]).abs()
    gap_b = (log_b[rows, a.index] - log_b[rows, b.index]).abs()
    differ = a.index != b.index
    ties = differ & (gap_a < TIE_NATS) & (gap_b < TIE_NATS)
    return {
        "implementations": [first_attn, second_attn],
        "parameters": sum(p.numel() for p in first.parameters()),
        "image_tokens": first.num_image_tokens,
        "loss": losses,
        "loss_relative_difference": abs(losses[first_attn] - losses[second_attn]) / abs(losses[first_attn]),
        "observations": BATCH,
        "same_choice": int((~differ).sum()),
        "ties": int(ties.sum()),
        "same_greedy_answer": sum(x == y for x, y in zip(*answers)),  # free decoding (vlm.decoding), not checked
        "max_abs_logprob_difference": float((log_a - log_b).abs().max()),
        "passed": bool((~differ | ties).all()),
    }


def check_packed_pvp(tokenizer, machine: Machine, sizes: Sizes) -> dict:
    """The pvp task's packed batch (train/packing.py: a 4D segment mask, which recipe=pvp trains on) through both
    implementations on the same weights: forward + backward, the same loss up to LOSS_TOLERANCE."""
    implementations = attention_implementations(machine)
    models = [full_architecture(tokenizer, machine, sizes.full_architecture, attn) for attn in implementations]
    models[1].load_state_dict(models[0].state_dict())
    rng = np.random.default_rng(2)
    task = PVPTask(rng.integers(0, 256, size=(PVP_IMAGES, *SPEC.frame_shape), dtype=np.uint8), QUERIES_PER_IMAGE)
    batch = task.batch(models[0], rng, PVP_IMAGES * QUERIES_PER_IMAGE)
    losses = {}
    for attn, model in zip(implementations, models):
        model.train()
        model.set_trainable(**TRAINABLE)
        with machine.autocast():
            loss = task.loss(model, batch)
        loss.backward()
        losses[attn] = loss.item()
    first, second = losses.values()
    difference = abs(first - second) / abs(first)
    return {
        "implementations": list(implementations),
        "questions": PVP_IMAGES * QUERIES_PER_IMAGE,
        "row_tokens": batch["input_ids"].shape[1],
        "loss": losses,
        "loss_relative_difference": difference,
        "passed": difference < LOSS_TOLERANCE,
    }


def play_actions_per_second(model: VLM, machine: Machine, sizes: Sizes, rng: np.random.Generator) -> float:
    model.eval()
    model.merge_lora()
    cache = FrameCache(model, capacity=2 * SPEC.n_stack)
    prompt = game_prompt(model.config, SPEC)
    actions = list(SPEC.action_names)
    warmup = sizes.warmup_steps
    stream = rng.integers(0, 256, size=(warmup + sizes.play_actions + SPEC.n_stack, *SPEC.frame_shape), dtype=np.uint8)
    seconds = []
    for t in range(warmup + sizes.play_actions):
        start = time.perf_counter()
        model.choose(prompt, actions, image_tokens=cache(stream[t : t + SPEC.n_stack])[None]).index.tolist()
        if t >= warmup:
            seconds.append(time.perf_counter() - start)
    return 1 / statistics.median(seconds)


def predicted_memory_gib(model: VLM) -> float:
    """benchmarks/memory_table.py's per-rank total for this model's game stage at this batch (1 GPU)."""
    stage = StageConfig(
        name="game",
        trainable=[part for part, on in TRAINABLE.items() if on],
        tasks={"game": {"batch_size": BATCH, "instruction": INSTRUCTION}},
        steps=1,
        lr=LR,
        warmup_steps=0,
    )
    return memory_table.stage_memory(model, stage, BATCH, SPEC).per_rank("ddp", 1)


def throughput(tokenizer, machine: Machine, sizes: Sizes, preset: str, fields: dict) -> dict:
    rng = np.random.default_rng(1)
    model = build(tokenizer, machine, preset, **fields)
    row = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": model.config.dtype,
        "attn_implementation": model.llm.config._attn_implementation,
    }
    batch = game_batch(model, rng)
    if machine.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(machine.device)
    row["train_samples_per_s"] = BATCH / timed_steps(trainer(model, machine), batch, machine, sizes)
    if machine.device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(machine.device) / GIB
        if model.config.dtype == "bfloat16":
            row["predicted_memory_gib"] = predicted_memory_gib(model)
    row["play_actions_per_s"] = play_actions_per_second(model, machine, sizes, rng)
    return row


# ---- FSDP ------------------------------------------------------------------------------------------------------


def shard(model: VLM, bf16: bool) -> None:
    # One dtype per all-gather: bf16 parameters (LoRA and projector included), fp32 gradient reductions.
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32)
    layers = [*model.vision.clip.encoder.layers, *model.llm.get_base_model().model.layers]
    for layer in layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


def fsdp_worker(rank: int, world: int, port: int, fields: dict, sizes: Sizes, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(CPU_THREADS)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    try:
        device = torch.device("cuda", rank) if cuda else torch.device("cpu")
        bf16 = cuda and torch.cuda.is_bf16_supported()
        machine = Machine(device, "", world, bf16, False, ())
        model = full_architecture(build_tokenizer(game_texts()), machine, fields)
        batch = game_batch(model, np.random.default_rng(rank))
        model.set_trainable(**TRAINABLE)  # before sharding: each sharded parameter keeps its flag
        shard(model, bf16)
        step = trainer(model, machine)  # the optimizer over the sharded parameters
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        first_loss = step(batch)
        seconds = torch.tensor(timed_steps(step, batch, machine, sizes), device=device)
        last_loss = step(batch)
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
        peak = None
        if cuda:
            peak = torch.tensor(torch.cuda.max_memory_allocated(device) / GIB, device=device)
            dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        if rank == 0:
            result = {
                "processes": world,
                "backend": dist.get_backend(),
                "parameters": sum(p.numel() for p in model.parameters()),
                "samples_per_s": world * BATCH / float(seconds),
                "loss_first_step": first_loss,
                "loss_last_step": last_loss,
                "peak_memory_gib_per_rank": None if peak is None else float(peak),
            }
            Path(out).write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_fsdp(processes: int, fields: dict, sizes: Sizes) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "fsdp.json")
        mp.spawn(fsdp_worker, args=(processes, free_port(), fields, sizes, out), nprocs=processes)
        return json.loads(Path(out).read_text())


def attempt(check, *args) -> dict:
    """check(*args), or what went wrong: one run on a lent GPU must report every part, failed or not."""
    try:
        return check(*args)
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}"[-ERROR_CHARS:]}


# ---- report ----------------------------------------------------------------------------------------------------


def attention_line(check: dict) -> str:
    if "error" in check:
        return f"attention check: FAILED: {check['error']}"
    first, second = check["implementations"]
    return (
        f"attention: {first} vs {second} on the full architecture ({check['parameters'] / 1e6:.1f} M parameters, "
        f"{check['image_tokens']} tokens per image): losses {check['loss'][first]:.4f} / {check['loss'][second]:.4f}; "
        f"same choice {check['same_choice']}/{check['observations']} (ties {check['ties']}), max |Δ log p| "
        f"{check['max_abs_logprob_difference']:.2e}: {'PASS' if check['passed'] else 'FAIL'}; same greedy answer "
        f"{check['same_greedy_answer']}/{check['observations']}"
    )


def pvp_line(check: dict) -> str:
    if "error" in check:
        return f"packed PVP: FAILED: {check['error']}"
    first, second = check["implementations"]
    return (
        f"packed PVP ({check['questions']} questions in rows of {check['row_tokens']} tokens, 4D segment mask): "
        f"{first} vs {second} losses {check['loss'][first]:.4f} / {check['loss'][second]:.4f}: "
        f"{'PASS' if check['passed'] else 'FAIL'}"
    )


def throughput_line(row: dict) -> str:
    if "skipped" in row or "error" in row:
        what = f"skipped: {row['skipped']}" if "skipped" in row else f"FAILED: {row['error']}"
        return f"| {row['model']} | {what} | | | | | | |"
    peak, predicted = row.get("peak_memory_gib"), row.get("predicted_memory_gib")
    return (
        f"| {row['model']} | {row['parameters'] / 1e6:.1f} M | {row['dtype']} | {row['attn_implementation']} "
        f"| {row['train_samples_per_s']:.1f} | {row['play_actions_per_s']:.1f} "
        f"| {'-' if peak is None else f'{peak:.2f}'} | {'-' if predicted is None else f'{predicted:.2f}'} |"
    )


def fsdp_line(fsdp: dict) -> str:
    if "skipped" in fsdp:
        return f"FSDP: skipped: {fsdp['skipped']}"
    if "error" in fsdp:
        return f"FSDP: FAILED: {fsdp['error']}"
    peak = fsdp["peak_memory_gib_per_rank"]
    return (
        f"FSDP over {fsdp['processes']} processes ({fsdp['backend']}, {fsdp['parameters'] / 1e6:.1f} M parameters): "
        f"{fsdp['samples_per_s']:.1f} samples/s, loss {fsdp['loss_first_step']:.4f} -> {fsdp['loss_last_step']:.4f}"
        + ("" if peak is None else f", peak {peak:.2f} GiB per rank")
    )


def table(results: dict) -> str:
    gpus = results["gpus"]
    lines = [
        f"device: {results['device']} ({gpus} GPU{'s' * (gpus != 1)}), torch {results['torch']}, CUDA "
        f"{results['cuda']}, flash_attn {results['flash_attn']}, precision {results['precision']}"
        + (", --smoke sizes" if results["smoke"] else ""),
        *(f"fallback: {reason}" for reason in results["fallbacks"]),
        "",
        attention_line(results["attention_check"]),
        pvp_line(results["pvp_packed_check"]),
        "",
        f"training: {BATCH} CarRacing observations per step, projector + LoRA; play: LoRA merged, FrameCache, "
        f"{len(SPEC.action_names)} actions",
        "| model | parameters | dtype | attention | train samples/s | play actions/s | peak GiB | predicted GiB |",
        "|---|---|---|---|---|---|---|---|",
        *(throughput_line(row) for row in results["throughput"]),
        "",
        fsdp_line(results["fsdp"]),
        f"{results['wall_s']:.0f} s after the imports",
    ]
    return "\n".join(lines)


def passed(results: dict) -> bool:
    checks = [results["attention_check"], results["pvp_packed_check"]]
    parts = [*checks, *results["throughput"], results["fsdp"]]
    return all(check.get("passed", False) for check in checks) and not any("error" in part for part in parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the results JSON")
    parser.add_argument("--smoke", action="store_true", help="micro sizes and a few steps (the CPU test)")
    parser.add_argument(
        "--fsdp-processes", type=int, help="FSDP over this many processes (default: every GPU when there are several)"
    )
    args = parser.parse_args()
    start = time.perf_counter()
    machine = inspect_machine()
    sizes = SIZES["smoke" if args.smoke else "gpu"]
    tokenizer = build_tokenizer(game_texts())
    fallbacks = list(machine.fallbacks)
    attention = attempt(check_attention, tokenizer, machine, sizes)
    pvp_packed = attempt(check_packed_pvp, tokenizer, machine, sizes)
    rows = [{"model": "tiny", **attempt(throughput, tokenizer, machine, sizes, "tiny", {})}]
    if machine.device.type == "cuda" and not args.smoke:
        one_b = dict(dtype=machine.dtype, **FULL_ARCHITECTURE, **ONE_B)
        rows.append({"model": "~1.2B", **attempt(throughput, tokenizer, machine, sizes, "full", one_b)})
    else:
        reason = "--smoke" if args.smoke else "no GPU"
        fallbacks.append(f"the ~1.2 B model is not measured ({reason})")
        rows.append({"model": "~1.2B", "skipped": reason})
    processes = args.fsdp_processes or (machine.gpus if machine.gpus > 1 else 0)
    if processes > 1:
        fsdp = attempt(check_fsdp, processes, sizes.full_architecture if args.smoke else ONE_B, sizes)
    else:
        fsdp = {"skipped": f"{machine.gpus} GPU{'s' * (machine.gpus != 1)}: FSDP needs several"}
        fallbacks.append(f"FSDP not run ({fsdp['skipped']})")
    results = {
        "device": machine.name,
        "gpus": machine.gpus,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "flash_attn": flash_attn_version(),
        "precision": "bf16" if machine.bf16 else "fp32",
        "smoke": args.smoke,
        "fallbacks": fallbacks,
        "attention_check": attention,
        "pvp_packed_check": pvp_packed,
        "throughput": rows,
        "fsdp": fsdp,
        "wall_s": time.perf_counter() - start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(table(results))
    sys.exit(0 if passed(results) else 1)


if __name__ == "__main__":
    main()
