"""Scoring answers instead of generating them, and the referring-segmentation target and its cIoU.

A question's image and the start of its text (bos, the image block, "[segmentation] {phrase} loc: [") run once
into a KV cache; every (question, candidate answer) pair continues from it, and a candidate's score is the summed
log-probability of its tokens and eos, as VLM.choose scores one. Training validation (train/tasks) and the
evaluation commands (eval/) share these, so that both count a mask the same way.
"""

import copy

import numpy as np
import torch
from PIL import Image

from vlm import prompts
from vlm.model import VLM
from vlm.tokenizer import common_prefix_length, encode, encode_answer

SIZE = prompts.RECONSTRUCT_SIZE  # the segmentation grid is the PVP grid: 64x64
GRID = [(y, x) for y in range(SIZE) for x in range(SIZE)]  # row-major, as masks are flattened
MASK_ANSWERS = (prompts.segmentation_answer(False), prompts.segmentation_answer(True))  # candidate index = inside
SCORE_BATCH = 512  # continuations per forward pass


def segmentation_target(mask: np.ndarray) -> np.ndarray:
    """bool [H, W] object mask -> bool [64, 64]: a grid cell is inside when its nearest-resized mask pixel is."""
    cells = Image.fromarray(mask.astype(np.uint8)).resize((SIZE, SIZE), Image.NEAREST)
    return np.asarray(cells).astype(bool)


def grid_targets(masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{phrase: bool [64, 64] target} of the phrases whose mask (bool [H, W]) covers a grid cell: a shot thinner
    than a cell can fall between the cells the nearest resize samples, and there is then nothing to segment."""
    targets = {phrase: segmentation_target(mask) for phrase, mask in masks.items()}
    return {phrase: target for phrase, target in targets.items() if target.any()}


def overlap(prediction: np.ndarray, target: np.ndarray) -> tuple[int, int]:
    """(intersection, union) pixel counts of two bool masks; cIoU = sum of intersections / sum of unions."""
    return int((prediction & target).sum()), int((prediction | target).sum())


def ciou(intersections: list[int], unions: list[int]) -> float:
    """Cumulative IoU over (frame, phrase) pairs; 1.0 when every mask and prediction is empty (nothing to miss)."""
    union = sum(unions)
    return sum(intersections) / union if union else 1.0


@torch.inference_mode()
def continuation_logprobs(
    model: VLM, prefix_embeds: torch.Tensor, continuations: list[tuple[list[int], list[int]]], batch: int = SCORE_BATCH
) -> torch.Tensor:
    """log p(answer | prefix, context) summed over the answer's tokens, for each (context ids, answer ids) pair
    continuing prefix_embeds [1, P, D] (the answer ids end with eos, see tokenizer.encode_answer) -> [N] float32."""
    prefix_length = prefix_embeds.shape[1]
    out = model.llm(inputs_embeds=prefix_embeds, use_cache=True, logits_to_keep=1)
    prefix_cache, first_logits = out.past_key_values, out.logits[:, -1].float()  # [1, V]: predicts token 0
    rows = [context + answer for context, answer in continuations]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths together: little padding
    scores = torch.zeros(len(rows))
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        length = len(rows[chunk[-1]])
        ids = torch.full((len(chunk), length), model.tokenizer.pad_token_id, dtype=torch.long)  # [n, L]
        scored = torch.zeros(len(chunk), length, dtype=torch.bool)  # [n, L]: the answer's tokens
        for row, index in enumerate(chunk):
            context, answer = continuations[index]
            ids[row, : len(rows[index])] = torch.tensor(rows[index])
            scored[row, len(context) : len(rows[index])] = True
        ids, scored = ids.to(model.device), scored.to(model.device)
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(len(chunk))
        positions = torch.arange(prefix_length, prefix_length + length, device=model.device).expand(len(chunk), -1)
        # Right padding: a real token never attends to the pad tokens after it, so no attention mask is needed.
        logits = model.llm(input_ids=ids, position_ids=positions, past_key_values=cache).logits.float()  # [n, L, V]
        predicting = torch.cat([first_logits.expand(len(chunk), 1, -1), logits[:, :-1]], dim=1)  # token t's logits
        token_logp = predicting.log_softmax(-1).gather(-1, ids[..., None])[..., 0]  # [n, L]
        scores[chunk] = (token_logp * scored).sum(-1).cpu()
    return scores


def choose_after_prefix(
    model: VLM,
    prefix_embeds: torch.Tensor,
    contexts: list[list[int]],
    candidates: list[str],
    batch: int = SCORE_BATCH,
) -> torch.Tensor:
    """Scores [N, C] of each candidate answer after each context ids (N questions sharing prefix_embeds [1, P, D])."""
    answers = [encode_answer(model.tokenizer, candidate) for candidate in candidates]
    pairs = [(context, answer) for context in contexts for answer in answers]
    return continuation_logprobs(model, prefix_embeds, pairs, batch).reshape(len(contexts), len(candidates))


class MaskPredictor:
    """The model's 0|1 at every cell of the 64x64 grid for a phrase about a frame: the more likely answer of the
    two (log-probabilities after the shared prefix, see continuation_logprobs)."""

    def __init__(self, model: VLM, batch: int = SCORE_BATCH):
        self.model, self.batch = model, batch
        self._questions: dict[str, tuple[list[int], list[list[int]]]] = {}  # phrase -> (prefix ids, contexts)

    def questions(self, phrase: str) -> tuple[list[int], list[list[int]]]:
        """(ids every grid question about `phrase` starts with, each one's remaining ids), cached per phrase."""
        if phrase not in self._questions:
            model = self.model
            ids = [
                encode(
                    model.tokenizer,
                    prompts.segmentation_prompt(phrase, y, x),
                    None,
                    model.num_image_tokens,
                    model.config.num_prompt_slots,
                )[0]
                for y, x in GRID
            ]
            shared = common_prefix_length(ids)
            self._questions[phrase] = ids[0][:shared], [row[shared:] for row in ids]
        return self._questions[phrase]

    @torch.inference_mode()
    def __call__(self, frame: np.ndarray, phrases: list[str]) -> dict[str, np.ndarray]:
        """uint8 [H, W, 3] and its phrases -> {phrase: bool [64, 64] predicted mask}; the frame is encoded once."""
        model = self.model
        image_tokens = model.encode_images(model.preprocess(np.array(frame[None])))  # [1, T, D]; a writable copy
        masks = {}
        for phrase in phrases:
            prefix, contexts = self.questions(phrase)
            embeds = model.embed(torch.tensor([prefix], device=model.device), image_tokens=image_tokens)  # [1, P, D]
            scores = choose_after_prefix(model, embeds, contexts, list(MASK_ANSWERS), self.batch)  # [4096, 2]
            masks[phrase] = (scores.argmax(-1) == 1).numpy().reshape(SIZE, SIZE)
        return masks
