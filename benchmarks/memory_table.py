"""GPU memory per rank of a recipe on the full preset (LLaMA-2-7B + CLIP ViT-L/14) for 1, 2, 4, 8 GPUs, under
strategy=ddp and strategy=fsdp, computed from the config: nothing is measured, downloaded or allocated.

    python benchmarks/memory_table.py [--recipe pvp] [--batch N] [--game carracing] [--gpus 1 2 4 8] [override ...]

Overrides are `python -m train`'s (`recipe.stages.game.trainable=game`, `model.config.lora_r=16`, ...).

Parameters are counted on the real model built on the `meta` device: `VLM(config, towers)` with the towers built by
the project's own `vision_tower_from_config` / `llm_from_config` from the published architectures of
openai/clip-vit-large-patch14 and meta-llama/Llama-2-7b-hf (written below, so their directories are not needed),
each part in the dtype the preset builds it in (towers bfloat16; projector, prompt encoder, LoRA
float32). Which parts train is the recipe's `trainable` plus the model's `extra_trainable`, as `python -m train`
reads them. Gradients have their parameter's dtype, AdamW keeps two states per trainable parameter in that dtype
(the vision tower trains in bfloat16 without fp32 master weights, as train.loop does). ddp replicates all three;
fsdp shards them 1/N. Activations are per rank and not sharded.

Activations are what autograd saves for the backward pass under train.loop's bf16 autocast on a GPU, enumerated
per layer below from the code path (frozen base weights save no inputs), plus the logits at the loss: bf16 logits,
their fp32 copy and fp32 log-probabilities, all live when backward starts. tests/test_memory_table.py checks the
LLM's enumeration against autograd's saved tensors on a small LLaMA with LoRA. The batch is the paper's (PAE-LaMM
§4: PVP 64 / 16 / 64 in stages 1 / 2 / 3, CarRacing 8, SpaceInvaders 3, on 4 A100s), taken per GPU: an assumption,
the paper does not say whether it is per GPU or global (for a global batch pass --batch B/N); PVP batches are
packed as the pvp task packs them (queries_per_image questions share one image row). Sequences are the longest
each task asks (two-digit locations, three-digit colour values, the longest action word). train.loop has no
gradient checkpointing, so every layer's activations are kept.

Not counted: the CUDA context and NCCL buffers, allocator fragmentation, DDP's gradient buckets
(a second copy of the trainable gradients), FSDP's all-gathered unit (one decoder layer's parameters, prefetched),
optimizer step temporaries, buffers (< 1 MiB).
"""

import argparse
import dataclasses
import os
from dataclasses import dataclass

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from agents.vlm_policy import game_prompt
from core.cli import CONFIGS_DIR, HYDRA_VERSION_BASE
from envs.games import GAMES, GameSpec
from train.__main__ import game_texts, new_model, stage_configs
from train.loop import StageConfig
from train.packing import pack_row
from train.tasks.game import GameTask
from vlm import VLM, VLMConfig, build_tokenizer, encode, load_tokenizer, prompts
from vlm.llm import llm_from_config
from vlm.vision import vision_tower_from_config

GIB = 2**30
GPU_COUNTS = (1, 2, 4, 8)
BF16, FP32, INT64 = 2, 4, 8  # bytes per element
ADAM_STATES = 2  # exp_avg, exp_avg_sq
# config.json of openai/clip-vit-large-patch14 (vision_config) and of meta-llama/Llama-2-7b-hf.
CLIP_VIT_L_14 = dict(
    model_type="clip_vision_model",
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    projection_dim=768,
    hidden_act="quick_gelu",
)
LLAMA_2_7B = dict(
    model_type="llama",
    vocab_size=32000,
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
)
# PAE-LaMM §4, "Training and Hyperparameters": batch sizes, taken per GPU (the paper does not say).
PAPER_PVP_BATCH = {"pvp_stage1": 64, "pvp_stage2": 16, "pvp_stage3": 64}
PAPER_GAME_BATCH = {"carracing": 8, "spaceinvaders": 3}
LONGEST_RGB = (255, 255, 255)
LONGEST_X = 63
FIRST_TWO_DIGIT_ROW, ROW_STEP = 10, 3  # rows 10, 13, 16, ...: two digits, not all with the same first digit


def train_config(recipe: str, model: str, overrides: list[str]):
    """The config `python -m train recipe=R model=M OVERRIDES` runs with."""
    with initialize_config_dir(config_dir=str(CONFIGS_DIR), version_base=HYDRA_VERSION_BASE):
        return compose(config_name="train", overrides=[f"recipe={recipe}", f"model={model}", *overrides])


def meta_model(model_cfg) -> VLM:
    """The preset's VLM on the meta device. The full preset's towers come from the architectures above (their
    directories are not needed) and its text is tokenized by the LLM's tokenizer when its directory exists, else
    by the project's BPE as a stand-in (which splits digits one by one, as LLaMA's does)."""
    if model_cfg.preset != "full":
        with torch.device("meta"):
            return new_model(model_cfg)
    config = VLMConfig.preset("full", **OmegaConf.to_container(model_cfg.config))
    stand_in = config.llm_path is None or not os.path.isdir(config.llm_path)
    tokenizer = build_tokenizer(game_texts()) if stand_in else load_tokenizer(config.llm_path)
    with torch.device("meta"):
        clip = vision_tower_from_config(CLIP_VIT_L_14, config.torch_dtype, "sdpa", config.vision_stem)
        llm = llm_from_config(LLAMA_2_7B, config.torch_dtype, "sdpa")
        return VLM(config, clip, llm, tokenizer)


def tokenizer_source(model: VLM) -> str:
    if model.config.llm_path and os.path.isdir(model.config.llm_path):
        return f"the LLM's own tokenizer ({model.config.llm_path})"
    return "the project's BPE as a stand-in (the LLM's tokenizer is not on this machine)"


def parameter_counts(model: VLM) -> dict[str, int]:
    return {part: sum(p.numel() for p in params) for part, params in model.parameter_groups().items()}


@dataclass
class Batch:
    """One micro-batch of one task, as the LLM and the vision tower see it."""

    task: str
    samples: int
    rows: int
    length: int  # LLM tokens per row (rows are padded to the longest)
    images: int
    packed: bool  # a 4D segment mask [rows, 1, L, L] goes to attention

    @property
    def tokens(self) -> int:
        return self.rows * self.length

    def describe(self) -> str:
        what = f"{self.samples} questions" if self.task == "pvp" else f"{self.samples} observations"
        return f"{self.task}: {what}, {self.rows} × {self.length} tokens, {self.images} image{'s' * (self.images > 1)}"


def longest_pvp_questions(n: int) -> list[tuple[str, str]]:
    two_digit_rows = prompts.RECONSTRUCT_SIZE - FIRST_TWO_DIGIT_ROW
    rows = [FIRST_TWO_DIGIT_ROW + ROW_STEP * j % two_digit_rows for j in range(n)]
    return [(prompts.reconstruct_prompt(y, LONGEST_X), prompts.reconstruct_answer(LONGEST_RGB)) for y in rows]


def pvp_batch(model: VLM, questions: int, queries_per_image: int) -> Batch:
    if questions % queries_per_image:
        raise SystemExit(f"--batch {questions} is not a multiple of the pvp queries_per_image {queries_per_image}")
    encoded = [
        encode(model.tokenizer, p, a, model.num_image_tokens, model.config.num_prompt_slots)
        for p, a in longest_pvp_questions(queries_per_image)
    ]
    rows = questions // queries_per_image
    return Batch("pvp", questions, rows, len(pack_row(encoded)[0]), rows, packed=True)


def game_batch(model: VLM, spec: GameSpec, observations: int, instruction: str) -> Batch:
    prompt = game_prompt(dataclasses.replace(model.config, game_instruction=instruction), spec)
    answer = max(spec.action_names, key=lambda name: len(model.tokenizer.encode(name, add_special_tokens=False)))
    length = len(encode(model.tokenizer, prompt, answer, model.num_image_tokens, model.config.num_prompt_slots)[0])
    return Batch("game", observations, observations, length, observations * spec.n_stack, packed=False)


def stage_batches(model: VLM, stage: StageConfig, batch: int | None, spec: GameSpec) -> list[Batch]:
    batches = []
    for task, options in stage.tasks.items():
        if task == "pvp":
            size = batch or PAPER_PVP_BATCH.get(stage.name, options["batch_size"])
            batches.append(pvp_batch(model, size, options["queries_per_image"]))
        elif task == "game":
            size = batch or PAPER_GAME_BATCH[spec.name]
            batches.append(game_batch(model, spec, size, options.get("instruction", GameTask.instruction)))
        else:
            raise SystemExit(f"stage {stage.name}: no activation model for task {task!r}")
    return batches


# ---- activations: what autograd saves, per layer, under bf16 autocast ------------------------------------------


def lora_modules(model: VLM) -> list[tuple[int, int, int]]:
    """(in_features, out_features, r) of the LoRA-wrapped linear layers of one decoder layer."""
    first_layer = model.llm.get_base_model().model.layers[0]
    return [
        (m.in_features, m.out_features, m.r["default"])
        for m in first_layer.modules()
        if hasattr(m, "lora_A") and "default" in m.lora_A
    ]


def llm_layer_bytes_per_token(llm_config, lora: list[tuple[int, int, int]], lora_dropout: float) -> int:
    """One LLaMA decoder layer with frozen base weights and trainable LoRA (bf16 weights, autocast).

    RMSNorm saves its fp32 input (x2 norms) and 1/rms; the frozen q/k/v/o/gate/up/down projections save no input;
    attention saves q, k, v, its output (bf16) and the log-sum-exp (fp32 per head); the MLP saves gate, silu(gate)
    and up (bf16). Each LoRA layer saves autocast's bf16 copy of its input (peft casts it to the fp32 adapter
    dtype first), the bf16 rank-r activation, and with dropout the boolean dropout mask of the input.
    """
    h, inter, heads = llm_config.hidden_size, llm_config.intermediate_size, llm_config.num_attention_heads
    kv = llm_config.num_key_value_heads * h // heads
    norms = 2 * (FP32 * h + FP32)
    attention = BF16 * (h + 2 * kv + h) + FP32 * heads
    mlp = 3 * BF16 * inter
    adapters = sum(BF16 * (n_in + r) + (n_in if lora_dropout > 0 else 0) for n_in, _, r in lora)
    return norms + attention + mlp + adapters


def llm_saved_bytes(model: VLM, tokens: int) -> int:
    """Autograd's saved tensors of the whole LLM for `tokens` tokens (the LoRA-trainable path)."""
    config = model.llm.config
    lora = lora_modules(model)
    per_token = (
        config.num_hidden_layers * llm_layer_bytes_per_token(config, lora, model.config.lora_dropout)
        + FP32 * config.hidden_size
        + FP32  # the final RMSNorm
        + 2 * BF16 * (config.hidden_size // config.num_attention_heads)  # rotary cos and sin
        + FP32 * config.vocab_size  # log-softmax output of the loss
        + INT64  # targets
    )
    lora_weight_copies = config.num_hidden_layers * sum(BF16 * r * (n_in + n_out) for n_in, n_out, r in lora)
    return tokens * per_token + lora_weight_copies


def vision_layer_bytes_per_token(vision_config) -> int:
    """One CLIP encoder layer with trainable weights (bf16, autocast). Autocast runs LayerNorm in fp32, so each
    LayerNorm saves an fp32 copy of its input and its statistics, and each linear layer saves its own bf16 copy of
    its input (q, k and v three of the first LayerNorm's output); attention saves q, k, v, its output and the
    log-sum-exp; quick_gelu saves fc1's output and its sigmoid, fc2 its input."""
    h, inter, heads = vision_config.hidden_size, vision_config.intermediate_size, vision_config.num_attention_heads
    layer_norms = 2 * (FP32 * h + 2 * FP32)
    linear_inputs = BF16 * (3 * h + h + h + inter)  # q/k/v, out_proj, fc1, fc2
    attention = 4 * BF16 * h + FP32 * heads
    quick_gelu = 2 * BF16 * inter
    return layer_norms + linear_inputs + attention + quick_gelu


def activation_bytes(model: VLM, trainable: list[str], batch: Batch) -> int:
    """Bytes kept for the backward pass of one micro-batch, and the logits at the loss."""
    if "llm" in trainable:
        raise SystemExit("the LLM's own weights train in this stage: only the LoRA-trainable LLM path is modelled")
    vision_config = model.vision.clip.config
    total = llm_saved_bytes(model, batch.tokens)
    total += batch.tokens * (BF16 + FP32) * model.llm.config.vocab_size  # bf16 logits and their fp32 copy
    # sdpa keeps its attention mask: packed rows' bf16 segment mask, padded rows' boolean mask (flash: none)
    total += batch.rows * batch.length**2 * (BF16 if batch.packed else 1)
    if "projector" in trainable:
        total += batch.images * model.num_image_tokens * BF16 * model.projector.proj.in_features
    if "vision" in trainable:
        tokens_per_image = (model.config.image_size // vision_config.patch_size) ** 2 + 1  # patches + CLS
        encoder = vision_config.num_hidden_layers * vision_layer_bytes_per_token(vision_config)
        pre_layer_norm = FP32 * vision_config.hidden_size + 2 * FP32
        patch_convolution_input = BF16 * 3 * model.config.image_size**2
        total += batch.images * (tokens_per_image * (encoder + pre_layer_norm) + patch_convolution_input)
    return total


# ---- the table -------------------------------------------------------------------------------------------------


@dataclass
class StageMemory:
    stage: StageConfig
    batch: Batch  # the stage's largest micro-batch
    trainable_parameters: int
    parameters: int  # bytes, frozen and trainable
    gradients: int
    optimizer: int
    activations: int

    def per_rank(self, strategy: str, gpus: int) -> float:
        states = self.parameters + self.gradients + self.optimizer
        return (states / (gpus if strategy == "fsdp" else 1) + self.activations) / GIB


def stage_memory(model: VLM, stage: StageConfig, batch: int | None, spec: GameSpec) -> StageMemory:
    model.set_trainable(**{part: True for part in stage.trainable})
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable_bytes = sum(p.numel() * p.element_size() for p in trainable)
    candidates = [(activation_bytes(model, stage.trainable, b), b) for b in stage_batches(model, stage, batch, spec)]
    activations, largest = max(candidates, key=lambda candidate: candidate[0])
    return StageMemory(
        stage=stage,
        batch=largest,
        trainable_parameters=sum(p.numel() for p in trainable),
        parameters=sum(p.numel() * p.element_size() for p in model.parameters()),
        gradients=trainable_bytes,
        optimizer=ADAM_STATES * trainable_bytes,
        activations=activations,
    )


def markdown_tables(memories: list[StageMemory], gpus: list[int]) -> str:
    lines = [
        "| stage | trains | micro-batch per rank | parameters | gradients | AdamW states | activations |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in memories:
        lines.append(
            f"| {m.stage.name} | {', '.join(m.stage.trainable)} ({count(m.trainable_parameters)}) "
            f"| {m.batch.describe()} | {m.parameters / GIB:.2f} | {m.gradients / GIB:.2f} | {m.optimizer / GIB:.2f} "
            f"| {m.activations / GIB:.2f} |"
        )
    lines += ["", "| stage | strategy | " + " | ".join(f"{n} GPU{'s' if n > 1 else ''}" for n in gpus) + " |"]
    lines.append("|---|---|" + "---|" * len(gpus))
    for m in memories:
        for strategy in ("ddp", "fsdp"):
            cells = " | ".join(f"{m.per_rank(strategy, n):.1f}" for n in gpus)
            lines.append(f"| {m.stage.name} | {strategy} | {cells} |")
    return "\n".join(lines)


def count(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.3f} B"
    return f"{n / 1e6:.1f} M" if n >= 1e5 else f"{n:,}"


def describe_model(model: VLM) -> str:
    counts = parameter_counts(model)
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    parts = ", ".join(f"{part} {count(n)}" for part, n in counts.items())
    return f"{count(sum(counts.values()))} parameters ({parts}; dtypes {', '.join(dtypes)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="pvp", help="a recipe of configs/recipe/")
    parser.add_argument("--model", default="full", help="a model of configs/model/ (the table is meant for full)")
    parser.add_argument("--batch", type=int, help="samples per rank for every task (default: the paper's batch)")
    parser.add_argument("--game", default="carracing", choices=GAMES, help="the game task's game")
    parser.add_argument("--gpus", type=int, nargs="+", default=list(GPU_COUNTS), help="GPU counts of the columns")
    parser.add_argument("overrides", nargs="*", help="python -m train overrides, e.g. model.config.lora_r=16")
    args = parser.parse_args()

    cfg = train_config(args.recipe, args.model, args.overrides)
    model = meta_model(cfg.model)
    spec = GAMES[args.game]
    memories = [stage_memory(model, stage, args.batch, spec) for stage in stage_configs(cfg)]
    batch_source = f"{args.batch} per rank" if args.batch else "the paper's, taken per GPU"
    print(f"model={args.model}: {describe_model(model)}")
    print(
        f"recipe={args.recipe}, game={args.game}, batch {batch_source}; {model.num_image_tokens} LLM tokens per "
        f"{model.config.image_size} px image; text tokens counted with {tokenizer_source(model)}; "
        "bf16 autocast, no gradient checkpointing (train.loop has none)\n"
    )
    print("GiB per rank:\n")
    print(markdown_tables(memories, args.gpus))
    print(
        "\nddp: parameters, gradients and AdamW states replicated on every rank; fsdp: all three sharded 1/N. "
        "Activations per rank (not sharded) at the micro-batch shown, the stage's largest. Not counted: CUDA "
        "context and NCCL buffers, fragmentation, DDP's gradient buckets, FSDP's all-gathered unit."
    )


if __name__ == "__main__":
    main()
