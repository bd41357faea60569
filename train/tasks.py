"""Training tasks, one task per batch, mixed by sampling ratio (MiniGPT-v2's scheme).

pvp   pixel value prediction (PAE-LaMM): a random image of the sources, a uniform location on its
      64x64 target, "[reconstruct] loc: [y,x] rgb: " -> "[r,g,b]"
game  imitation of an expert: a collected observation (stacked frames) -> the expert's action word
"""

from dataclasses import dataclass

import numpy as np

from collect.dataset import CollectedDataset
from envs import UserError
from train.data import ImageSources, open_collected
from train.packing import pack
from vlm import VLM, prompts

PVP, GAME = "pvp", "game"


def pvp_question(frame: np.ndarray, rng: np.random.Generator) -> dict:
    """One PVP question about frame uint8 [H, W, 3]: a uniform location on its 64x64 target."""
    target = prompts.reconstruction_target(frame)  # [64, 64, 3] uint8
    y, x = (int(v) for v in rng.integers(0, prompts.RECONSTRUCT_SIZE, size=2))
    return dict(
        prompt=prompts.reconstruct_prompt(y, x),
        answer=prompts.reconstruct_answer(target[y, x]),
        y=y,
        x=x,
        target=target,
    )


@dataclass
class PVPTask:
    """A batch of `batch_size` questions: batch_size / queries_per_image random images, each asked at
    queries_per_image uniform locations, packed so each image is encoded once (train/packing.py)."""

    sources: ImageSources
    queries_per_image: int

    def batch(self, model: VLM, rng: np.random.Generator, batch_size: int) -> dict:
        groups = []
        for _ in range(batch_size // self.queries_per_image):
            frame = self.sources[int(rng.integers(len(self.sources)))]
            questions = [pvp_question(frame, rng) for _ in range(self.queries_per_image)]
            groups.append((model.preprocess(frame[None]), [(q["prompt"], q["answer"]) for q in questions]))
        return pack(model, groups)


@dataclass
class GameTask:
    """A batch of observations of one game (an expert dataset drawn by its number of steps), prompted
    with the game template and the model's game_instruction (set from `instruction` by `configure`)."""

    datasets: list[CollectedDataset]
    instruction: str = prompts.GAME_INSTRUCTIONS[0]

    def configure(self, model: VLM) -> None:
        """The model keeps the instruction it is trained with in its config, so that it plays with it."""
        if self.instruction not in prompts.GAME_INSTRUCTIONS:
            raise UserError(
                f"game task instruction={self.instruction!r}: choose one of {', '.join(prompts.GAME_INSTRUCTIONS)}"
            )
        model.config.game_instruction = self.instruction

    def batch(self, model: VLM, rng: np.random.Generator, batch_size: int) -> dict:
        sizes = np.array([len(d) for d in self.datasets], dtype=np.float64)
        dataset = self.datasets[int(rng.choice(len(self.datasets), p=sizes / sizes.sum()))]
        spec = dataset.spec
        prompt = model.game_prompt(spec)
        samples = []
        for index in rng.integers(len(dataset), size=batch_size):
            sample = dataset[int(index)]
            samples.append(
                dict(
                    images=model.preprocess(np.array(sample.frames)),
                    prompt=prompt,
                    answer=spec.action_names[sample.action_code],
                )
            )
        return model.collate(samples)


def game_datasets(sources: ImageSources, game: str | None = None) -> list[CollectedDataset]:
    """The expert datasets among the sources (same episodes; of `game` if given), with each game's own frame stack."""
    return [open_collected(d.root, d.seeds) for d in sources.expert_datasets(game)]


def build_tasks(task_configs: dict, sources: ImageSources, game: str | None = None) -> tuple[dict, dict[str, str]]:
    """{name: (task, batch_size, ratio)} of the tasks whose data the sources hold, and {name: why} of the others."""
    tasks, left_out = {}, {}
    for name, options in task_configs.items():
        if name == PVP:
            if int(options["batch_size"]) % int(options["queries_per_image"]):
                raise UserError(
                    f"pvp batch_size {options['batch_size']} is not a multiple of queries_per_image {options['queries_per_image']}"
                )
            tasks[name] = (
                PVPTask(sources, int(options["queries_per_image"])),
                int(options["batch_size"]),
                float(options["ratio"]),
            )
        elif name == GAME:
            datasets = game_datasets(sources, game)
            if datasets:
                task = GameTask(datasets, str(options.get("instruction", GameTask.instruction)))
                tasks[name] = (task, int(options["batch_size"]), float(options["ratio"]))
            else:
                left_out[name] = f"no dataset an expert played{' ' + game if game else ''} among the sources"
        else:
            raise UserError(f"unknown task {name!r}: the tasks are {PVP}, {GAME}")
    if not tasks:
        raise UserError(f"none of the tasks {sorted(task_configs)} has data: {left_out}")
    return tasks, left_out


class TaskMixer:
    """Picks the task of each batch with probability proportional to its ratio."""

    def __init__(self, ratios: dict[str, float]):
        if any(r <= 0 for r in ratios.values()):
            raise UserError(f"task ratios must be positive, got {ratios}")
        self.names = list(ratios)
        weights = np.array([ratios[n] for n in self.names], dtype=np.float64)
        self.probs = weights / weights.sum()

    def pick(self, rng: np.random.Generator) -> str:
        return self.names[int(rng.choice(len(self.names), p=self.probs))]
