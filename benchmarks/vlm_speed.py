"""Speed of the tiny VLM on CPU: training throughput and play latency with the frame cache.

    python benchmarks/vlm_speed.py [--threads 1] [--steps 100]

Training: forward + backward + AdamW step on one batch, every part trainable (the tiny preset's first
stage), with train.loop's kernels (train.onednn.cpu_kernels), on PVP batches and on game-imitation batches (the
game prompt is much longer). Game training and play are measured with both game instructions
(VLMConfig.game_instruction): the paper's, and none.

Game training side by side: whole steps as train.loop runs them for recipe=game (GameTask.batch on
random frames, loss, backward, clipping, AdamW) on four paths that alternate step by step, so that
load from other processes hits them alike: today's (PyTorch's default kernels: MKL's sgemm), the
loop's default (cpu_kernels in fp32: the same arithmetic on oneDNN's matmul), bf16 autocast with
PyTorch's default attention kernel (flash), and precision=bf16 as the loop runs it (cpu_kernels under
bf16 autocast: attention on SDPA's math path; opt-in: other arithmetic).

Play, in steady state as a policy plays: the LoRA weights merged into the LLM, each action brings
one new frame, FrameCache encodes only that frame, and choose() scores every legal action of the
game in one forward pass. The reference without the cache encodes the whole stack each action;
the two alternate action by action so both see the same machine load. The shipped checkpoint of
each game (checkpoints/game_<game>) is timed the same way. Wall time is what a game
would see; CPU time (process_time) is what an action costs the core it runs on: less affected
than wall time when other jobs share the cores, though not immune (shared caches, frequency).
"""

import argparse
import contextlib
import os
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch

from agents.vlm_policy import game_prompt, shipped_checkpoint
from collect.dataset import stack_indices
from envs.games import GAMES, GameSpec
from train.onednn import cpu_kernels
from train.tasks.game import GameTask
from vlm import TRAINING_STAGES, VLM, FrameCache, VLMConfig, build_tokenizer, encode, prompts
from vlm.prompts import GAME_INSTRUCTIONS

TRAIN_BATCH = 16
TRAIN_STEPS = 10
WARMUP_STEPS = 3
EPISODE_STEPS = 300  # frames of the random episode that game training draws from


@contextlib.contextmanager
def bf16_training(kernels=contextlib.nullcontext):
    with torch.autocast("cpu", dtype=torch.bfloat16), kernels():
        yield


TRAINING_PATHS = {  # the context of a game training step's forward pass
    "today (MKL)": contextlib.nullcontext,
    "fp32 cpu_kernels (default)": cpu_kernels,
    "bf16 autocast, flash attention": bf16_training,
    "bf16 cpu_kernels (precision=bf16)": lambda: bf16_training(cpu_kernels),
}


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def train_samples_per_second(model: VLM, samples: list[dict]) -> float:
    """Samples/s of forward + backward + AdamW steps on one batch (median step)."""
    model.train()
    model.set_trainable(**TRAINING_STAGES["scratch"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = model.collate(samples)

    def step():
        with cpu_kernels():
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(WARMUP_STEPS):
        step()
    return len(samples) / statistics.median(timed(step)[0] for _ in range(TRAIN_STEPS))


def pvp_samples(model: VLM, rng: np.random.Generator) -> list[dict]:
    frames = rng.integers(0, 256, size=(TRAIN_BATCH, 96, 96, 3), dtype=np.uint8)
    images = model.preprocess(frames)
    samples = []
    for i in range(TRAIN_BATCH):
        y, x = (int(v) for v in rng.integers(0, prompts.RECONSTRUCT_SIZE, size=2))
        rgb = prompts.reconstruction_target(frames[i])[y, x]
        prompt, answer = prompts.reconstruct_prompt(y, x), prompts.reconstruct_answer(rgb)
        samples.append(dict(images=images[i : i + 1], prompt=prompt, answer=answer))
    return samples


def game_samples(model: VLM, spec: GameSpec, rng: np.random.Generator) -> list[dict]:
    frames = rng.integers(0, 256, size=(TRAIN_BATCH, spec.n_stack, *spec.frame_shape), dtype=np.uint8)
    images = model.preprocess(frames)  # [B, n_stack, 3, S, S]
    prompt = game_prompt(model.config, spec)
    return [
        dict(images=images[i], prompt=prompt, answer=str(rng.choice(spec.action_names))) for i in range(TRAIN_BATCH)
    ]


class RandomEpisode:
    """What GameTask reads of a collected dataset (its length, spec, and each step's stacked frames
    and action code, stacked as CollectedDataset stacks them), on one episode of random frames."""

    def __init__(self, spec: GameSpec, steps: int, rng: np.random.Generator):
        self.spec = spec
        self.frames = rng.integers(0, 256, size=(steps, *spec.frame_shape), dtype=np.uint8)
        self.action_codes = rng.integers(len(spec.action_names), size=steps)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, step: int) -> SimpleNamespace:
        stack = stack_indices(np.array([step]), self.spec.n_stack)[0]
        return SimpleNamespace(frames=self.frames[stack], action_code=int(self.action_codes[step]))


def compare_game_training(tokenizer, spec: GameSpec, rng: np.random.Generator) -> dict[str, float]:
    """Samples/s of recipe=game training steps on each of TRAINING_PATHS, alternating step by step (median step)."""
    model = VLM.from_config(VLMConfig.preset("tiny", game_instruction="none"), tokenizer=tokenizer)
    model.train()
    model.set_trainable(**TRAINING_STAGES["game"], vision=True, llm=True)  # what recipe=game trains of the tiny preset
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    task = GameTask([RandomEpisode(spec, EPISODE_STEPS, rng)], instruction="none")

    def step(forward_context):
        batch = task.batch(model, rng, TRAIN_BATCH)
        with forward_context():
            loss = task.loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = {path: [] for path in TRAINING_PATHS}
    for i in range(WARMUP_STEPS + TRAIN_STEPS):
        for path, forward_context in TRAINING_PATHS.items():
            wall, _ = timed(lambda context=forward_context: step(context))
            if i >= WARMUP_STEPS:
                seconds[path].append(wall)
    return {path: TRAIN_BATCH / statistics.median(values) for path, values in seconds.items()}


def play(model: VLM, spec: GameSpec, steps: int, rng: np.random.Generator) -> dict:
    """Median wall and CPU seconds per action with the frame cache, and wall seconds without it."""
    model.eval()
    prompt = game_prompt(model.config, spec)
    actions = list(spec.action_names)
    stream = rng.integers(0, 256, size=(WARMUP_STEPS + steps + spec.n_stack, *spec.frame_shape), dtype=np.uint8)
    cache = FrameCache(model, capacity=2 * spec.n_stack)

    def with_cache(t: int):
        model.choose(prompt, actions, image_tokens=cache(stream[t : t + spec.n_stack])[None])

    def without_cache(t: int):
        model.choose(prompt, actions, images=model.preprocess(stream[t : t + spec.n_stack])[None])

    cached, cached_cpu, uncached = [], [], []
    for t in range(WARMUP_STEPS + steps):
        wall, cpu = timed(lambda t=t: with_cache(t))
        wall_uncached, _ = timed(lambda t=t: without_cache(t))
        if t >= WARMUP_STEPS:
            cached.append(wall)
            cached_cpu.append(cpu)
            uncached.append(wall_uncached)
    return dict(
        wall=statistics.median(cached),
        cpu=statistics.median(cached_cpu),
        uncached=statistics.median(uncached),
        prompt_tokens=len(
            encode(model.tokenizer, prompt, None, model.num_image_tokens, model.config.num_prompt_slots)[0]
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (more than the free cores slows everything)"
    )
    parser.add_argument("--steps", type=int, default=100, help="timed actions per game")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    specs = list(GAMES.values())

    # Answers get their own texts so that they are tokenized as they appear after the prompt.
    instructions = [prompts.game_instruction(s.objective, s.tips, s.action_names) for s in specs]
    tokenizer = build_tokenizer(extra_texts=instructions + [a for s in specs for a in s.action_names])
    model = VLM.from_config(VLMConfig.preset("tiny"), tokenizer=tokenizer)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"tiny VLM: {params / 1e6:.2f}M parameters, {model.num_image_tokens} tokens per image; torch threads "
        f"{args.threads}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"
    )
    rates = [f"PVP {train_samples_per_second(model, pvp_samples(model, rng)):.1f}"]
    for instruction in GAME_INSTRUCTIONS:
        model.config.game_instruction = instruction
        rates += [
            f"{s.name} game ({instruction}) {train_samples_per_second(model, game_samples(model, s, rng)):.1f}"
            for s in specs
        ]
    print(f"training samples/s (batch {TRAIN_BATCH}, all parts trainable, median step): {', '.join(rates)}\n")

    today = next(iter(TRAINING_PATHS))
    print(
        f"game training steps (recipe=game, instruction none, batch {TRAIN_BATCH}), samples/s (x {today}), median "
        f"of {TRAIN_STEPS} steps per path, paths alternating; load average {os.getloadavg()[0]:.1f} at start"
    )
    for spec in specs:
        rate = compare_game_training(tokenizer, spec, rng)
        paths = ", ".join(f"{path} {rate[path]:.1f} ({rate[path] / rate[today]:.2f}x)" for path in TRAINING_PATHS)
        print(f"  {spec.name:<14} {paths}")
    print(f"  (load average {os.getloadavg()[0]:.1f} at the end)\n")

    model.merge_lora()
    print(
        f"{'game':<14} {'instruction':<11} {'stack':<11} {'actions':>7} {'prompt tok':>10} {'ms/action':>9} "
        f"{'actions/s':>9} {'cpu ms/action':>13} {'no cache: ms':>12} {'speed-up':>8}"
    )
    verdicts = []
    for spec in specs:
        for instruction in GAME_INSTRUCTIONS:
            model.config.game_instruction = instruction
            result = play(model, spec, args.steps, rng)
            stack = f"{spec.n_stack}x{spec.frame_shape[0]}x{spec.frame_shape[1]}"
            print(
                f"{spec.name:<14} {instruction:<11} {stack:<11} {len(spec.action_names):>7} "
                f"{result['prompt_tokens']:>10} "
                f"{result['wall'] * 1e3:>9.1f} {1 / result['wall']:>9.1f} {result['cpu'] * 1e3:>13.1f} "
                f"{result['uncached'] * 1e3:>12.1f} {result['uncached'] / result['wall']:>7.2f}x"
            )
            target = spec.decisions_per_second
            verdict = "meets" if 1 / result["wall"] >= target else "misses"
            verdicts.append(
                f"{spec.name} (instruction {instruction}): {1 / result['wall']:.1f} actions/s wall-clock "
                f"({verdict} the real-time target of {target}), {1 / result['cpu']:.1f} actions/s by CPU time"
            )
    for spec in specs:
        if shipped_checkpoint(spec).is_dir():
            shipped = VLM.from_pretrained(str(shipped_checkpoint(spec)))
            shipped.merge_lora()
            result = play(shipped, spec, args.steps, rng)
            verdicts.append(
                f"{spec.name} (shipped checkpoint {shipped_checkpoint(spec).name}, "
                f"instruction {shipped.config.game_instruction}): "
                f"{1 / result['wall']:.1f} actions/s wall-clock, {1 / result['cpu']:.1f} actions/s by CPU time"
            )
    print(f"(median over {args.steps} actions; load average {os.getloadavg()[0]:.1f} at the end)\n")
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
