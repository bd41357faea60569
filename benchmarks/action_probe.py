"""Can the expert's action be read from the frames the VLM sees? Separates the frames, the vision tower and the LLM.

    python benchmarks/action_probe.py --data ~/.cache/vlmplay/data/spaceinvaders_greedy [--steps 1000]

Trains small classifiers (stacked frames -> expert action code) on the VLM's own preprocessed input
(`vlm.vision.preprocess_images` at the tiny preset's image size) and reports held-out action accuracy
every --eval-every steps, beside the majority action's accuracy:

- cnn: a 3-layer convolutional network over the frames stacked as channels (the Atari expert's
  kind of network). Above the majority: the action is in the pixels the VLM gets.
- vit: the tiny VLM's own vision tower and projector (the same architecture and initialisation as
  `python -m train ... init=none`), one frame at a time, with an MLP on the concatenated visual tokens
  in place of the LLM. Above the majority while the VLM's game training stays at the prior: the
  vision tower can learn the game.
- llm: vision tower, projector and the tiny LLM of the same new VLM over the visual tokens, the
  action read by a linear layer from the LLM's last hidden state (no prompt text, no action words).
  At the majority where vit is above it: reading the visual tokens is what the LLM has not learned.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from collect.dataset import CollectedDataset, stack_indices
from collect.sources import open_collected
from vlm.config import VISION_STEMS, VLMConfig
from vlm.model import VLM
from vlm.vision import preprocess_images

PREPROCESS_CHUNK = 512  # frames resized per call
CNN_WIDTH = 32
HIDDEN = 256
CNN_POOL = 4  # the CNN's feature map is pooled to CNN_POOL x CNN_POOL
MAX_GRAD_NORM = 1.0


class StackCNN(nn.Module):
    """Frames stacked as channels: [B, S, 3, H, W] -> logits [B, A]."""

    def __init__(self, n_stack: int, n_actions: int):
        super().__init__()
        c = CNN_WIDTH
        self.net = nn.Sequential(
            nn.Conv2d(3 * n_stack, c, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(CNN_POOL),
            nn.Flatten(),
            nn.Linear(2 * c * CNN_POOL**2, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, n_actions),
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames.flatten(1, 2))  # [B, S*3, H, W] -> [B, A]


class VisionTowerMLP(nn.Module):
    """The tiny VLM's vision tower + projector per frame, an MLP on all visual tokens: [B, S, 3, H, W] -> [B, A]."""

    def __init__(self, config: VLMConfig, n_stack: int, n_actions: int):
        super().__init__()
        vlm = VLM.from_config(config)
        self.vision, self.projector = vlm.vision, vlm.projector
        tokens = vlm.num_image_tokens * n_stack * vlm.llm.config.hidden_size
        self.head = nn.Sequential(nn.Linear(tokens, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, n_actions))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        tokens = self.projector(self.vision(frames.flatten(0, 1)))  # [B*S, T, D]
        return self.head(tokens.reshape(frames.shape[0], -1))  # [B, S*T*D] -> [B, A]


class VisionTowerLLM(nn.Module):
    """The tiny VLM's vision tower, projector and LLM over the visual tokens of all frames:
    [B, S, 3, H, W] -> [B, A]."""

    def __init__(self, config: VLMConfig, n_actions: int):
        super().__init__()
        vlm = VLM.from_config(config)
        self.vision, self.projector, self.llm = vlm.vision, vlm.projector, vlm.llm
        self.head = nn.Linear(vlm.llm.config.hidden_size, n_actions)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        tokens = self.projector(self.vision(frames.flatten(0, 1)))  # [B*S, T, D]
        tokens = tokens.reshape(frames.shape[0], -1, tokens.shape[-1])  # [B, S*T, D]
        hidden = self.llm(inputs_embeds=tokens, output_hidden_states=True).hidden_states[-1]  # [B, S*T, D]
        return self.head(hidden[:, -1])


def preprocessed_episodes(dataset: CollectedDataset, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per episode: every frame preprocessed once (float16 [L+1, 3, size, size]) and the action codes [L]."""
    episodes = []
    for index in range(len(dataset.episodes)):
        arrays = dataset.episode(index)
        frames = arrays.frames
        chunks = [
            np.array(frames[i : i + PREPROCESS_CHUNK]) for i in range(0, len(frames), PREPROCESS_CHUNK)
        ]  # writable copies
        pixels = torch.cat([preprocess_images(chunk, size) for chunk in chunks])
        episodes.append((pixels.half(), torch.from_numpy(np.asarray(arrays.action_codes[:-1]))))
    return episodes


def stacks(pixels: torch.Tensor, steps: np.ndarray, n_stack: int) -> torch.Tensor:
    """[N] steps -> [N, S, 3, H, W], stacked as the dataset stacks them."""
    return pixels[torch.from_numpy(stack_indices(steps, n_stack))].float()


def accuracy(model: nn.Module, episodes, n_stack: int, batch: int) -> float:
    correct = total = 0
    model.eval()
    with torch.no_grad():
        for pixels, codes in episodes:
            for start in range(0, len(codes), batch):
                steps = np.arange(start, min(start + batch, len(codes)))
                correct += (model(stacks(pixels, steps, n_stack)).argmax(1) == codes[steps]).sum().item()
                total += len(steps)
    model.train()
    return correct / total


def train_probe(name: str, model: nn.Module, train, val, args, n_stack: int, majority: float) -> None:
    rng = np.random.default_rng(args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    lengths = np.array([len(codes) for _, codes in train])
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        episode_ids = rng.choice(len(train), size=args.batch, p=lengths / lengths.sum())
        frames, codes = [], []
        for e in episode_ids:
            s = rng.integers(lengths[e])
            frames.append(stacks(train[e][0], np.array([s]), n_stack)[0])
            codes.append(train[e][1][s])
        loss = F.cross_entropy(model(torch.stack(frames)), torch.stack(codes))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        if step % args.eval_every == 0 or step == args.steps:
            acc = accuracy(model, val, n_stack, args.batch * 8)
            print(
                f"| {name} | {step} | {step * args.batch} | {acc:.3f} | {majority:.3f} | "
                f"{time.perf_counter() - start:.0f} |",
                flush=True,
            )


PROBES = ("cnn", "vit", "llm")


def build_probe(name: str, config: VLMConfig, n_stack: int, n_actions: int) -> nn.Module:
    if name == "cnn":
        return StackCNN(n_stack, n_actions)
    if name == "vit":
        return VisionTowerMLP(config, n_stack, n_actions)
    return VisionTowerLLM(config, n_actions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a collected dataset folder")
    parser.add_argument(
        "--val-seeds", type=int, nargs="+", default=[27, 28, 29], help="episodes held out (the game recipe's)"
    )
    parser.add_argument("--probes", nargs="+", default=list(PROBES), choices=list(PROBES))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--vision-stem",
        choices=VISION_STEMS,
        default=VLMConfig.preset("tiny").vision_stem,
        help="the tiny tower's patch embedding (vlm.config.VLMConfig.vision_stem)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    # The split training makes: the validation episodes held out, the rest trained on.
    train_set, val_set = (
        open_collected(args.data, None, held_out=args.val_seeds),
        open_collected(args.data, args.val_seeds),
    )
    config = VLMConfig.preset("tiny", vision_stem=args.vision_stem)
    n_stack, n_actions = train_set.n_stack, len(train_set.spec.action_names)
    train, val = preprocessed_episodes(train_set, config.image_size), preprocessed_episodes(val_set, config.image_size)
    val_codes = torch.cat([codes for _, codes in val])
    majority = torch.bincount(val_codes, minlength=n_actions).max().item() / len(val_codes)

    print(
        f"{train_set.spec.name}: {len(train_set)} training / {len(val_set)} held-out steps (seeds {args.val_seeds}), "
        f"{n_stack} frames at {config.image_size} px, vision stem {config.vision_stem}, "
        f"batch {args.batch}, lr {args.lr}, one thread\n"
    )
    print("| probe | step | samples | held-out accuracy | majority action | seconds |")
    print("|---|---|---|---|---|---|")
    for name in args.probes:
        torch.manual_seed(args.seed)  # the CNN's initialisation (the VLM seeds its own from config.seed)
        model = build_probe(name, config, n_stack, n_actions)
        train_probe(name, model, train, val, args, n_stack, majority)


if __name__ == "__main__":
    main()
