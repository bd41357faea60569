"""Scoring answers instead of generating them, and the referring-segmentation target and its cIoU.

A question's image and the start of its text (bos, the image block, "[segmentation] {phrase} loc: [") run once
into a KV cache; every question continues from it once, with its candidate answers as a prefix tree after it, and
a candidate's score is the summed log-probability of its tokens and eos, as VLM.choose scores one. Training
validation (train/tasks) and the evaluation commands (eval/) share these, so that both count a mask the same way.
"""

import copy

import numpy as np
import torch
from PIL import Image

from vlm import prompts
from vlm.choice import AnswerTree
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


def phrase_coverage(frames_targets) -> dict[str, tuple[np.ndarray, int]]:
    """{phrase: (int [64, 64] how many frames cover each cell, how many frames show the phrase)} over an iterable of
    grid_targets dicts, one per frame: a phrase's prior over the grid, its mean fraction of the grid and its
    majority mask both come from it."""
    coverage: dict[str, tuple[np.ndarray, int]] = {}
    for targets in frames_targets:
        for phrase, target in targets.items():
            covered, present = coverage.get(phrase, (0, 0))
            coverage[phrase] = (covered + target.astype(np.int64), present + 1)
    return coverage


def overlap(prediction: np.ndarray, target: np.ndarray) -> tuple[int, int]:
    """(intersection, union) pixel counts of two bool masks; cIoU = sum of intersections / sum of unions."""
    return int((prediction & target).sum()), int((prediction | target).sum())


def ciou(intersections: list[int], unions: list[int]) -> float:
    """Cumulative IoU over (frame, phrase) pairs; 1.0 when every mask and prediction is empty (nothing to miss)."""
    union = sum(unions)
    return sum(intersections) / union if union else 1.0


@torch.inference_mode()
def choose_after_prefix(
    model: VLM,
    prefix_embeds: torch.Tensor,
    contexts: list[list[int]],
    candidates: list[str],
    batch: int = SCORE_BATCH,
) -> torch.Tensor:
    """Scores [N, C]: log p(candidate tokens, eos | prefix, context) of each candidate answer after each context
    ids (N questions sharing prefix_embeds [1, P, D]).

    The prefix runs once into a KV cache. Each context is one row: the context, then every node of the candidates'
    prefix tree (vlm.choice.AnswerTree), each node attending to the prefix, the context and its own ancestors only,
    so that a context is fed once however many candidates follow it."""
    tree = AnswerTree([encode_answer(model.tokenizer, c)[:-1] for c in candidates], model.tokenizer.eos_token_id, False)
    nodes = tree.rows[0]  # every node; eos is read from the logits, never fed
    _, kept, tokens, owners = (torch.tensor(x) for x in tree.terms())  # every term of a score: [T] each (one row)
    prefix_length, device = prefix_embeds.shape[1], model.device
    out = model.llm(inputs_embeds=prefix_embeds, use_cache=True, logits_to_keep=1)
    prefix_cache, first_logits = out.past_key_values, out.logits[:, -1].float()  # [1, V]: after the prefix
    ancestry = tree.ancestry()  # [K, K]
    order = sorted(range(len(contexts)), key=lambda i: len(contexts[i]))  # similar lengths together: little padding
    scores = torch.zeros(len(contexts), len(candidates))
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        width = len(contexts[chunk[-1]])  # contexts are left-padded to this; the tree follows at width..
        length = width + len(nodes)
        ids = torch.full((len(chunk), length), model.tokenizer.pad_token_id, dtype=torch.long)  # [n, L]
        positions = torch.zeros(len(chunk), length, dtype=torch.long)  # [n, L]
        allowed = torch.zeros(len(chunk), length, prefix_length + length, dtype=torch.bool)  # [n, L, P+L]
        allowed[:, :, :prefix_length] = True  # every token (pads too: no empty row) sees the prefix
        for row, index in enumerate(chunk):
            context = contexts[index]
            left = width - len(context)
            ids[row, left:width] = torch.tensor(context, dtype=torch.long)
            ids[row, width:] = torch.tensor([tree.token[n] for n in nodes])
            positions[row, left:width] = torch.arange(prefix_length, prefix_length + len(context))
            positions[row, width:] = prefix_length + len(context) + torch.tensor([tree.depth[n] for n in nodes])
            context_keys = slice(prefix_length + left, prefix_length + width)
            allowed[row, left:width, context_keys] = torch.ones(len(context), len(context), dtype=torch.bool).tril()
            allowed[row, width:, context_keys] = True
            allowed[row, width:, prefix_length + width :] = ancestry
        mask = torch.zeros(allowed.shape, dtype=first_logits.dtype).masked_fill(
            ~allowed, torch.finfo(first_logits.dtype).min
        )
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(len(chunk))
        logits = model.llm(
            input_ids=ids.to(device), position_ids=positions.to(device), attention_mask=mask[:, None].to(device),
            past_key_values=cache,
        ).logits.float()  # [n, L, V]  # fmt: skip
        # The logits that predict a candidate's first token: the context's last token's (at width - 1), or the
        # prefix's for an empty context; then each node's, predicting the token after it (or eos).
        empty = torch.tensor([not contexts[index] for index in chunk], device=logits.device)
        last = torch.where(empty[:, None], first_logits, logits[:, max(width - 1, 0)])  # [n, V]
        predicting = torch.cat([last[:, None], logits[:, width:]], dim=1).log_softmax(-1)  # [n, K+1, V]
        term_logp = predicting[:, kept, tokens]  # [n, T]
        scores[chunk] = torch.zeros(len(chunk), len(candidates)).index_add_(1, owners, term_logp.cpu())
    return scores


FRACTION_FLOOR = 1e-4  # a recorded fraction is kept inside (1e-4, 1 - 1e-4): a finite log-odds


def logit(p: float) -> float:
    p = min(max(p, FRACTION_FLOOR), 1 - FRACTION_FLOOR)
    return float(np.log(p / (1 - p)))


def label_shift_threshold(model: VLM, phrase: str) -> float:
    """The log-odds log p(1)/p(0) above which a cell is inside `phrase`'s mask: 0 (the likelier answer) unless the
    model records the prior its segmentation training asked under; then logit(inside fraction) - logit(the
    phrase's grid fraction). Training draws a cell inside the mask with probability f and each side's cells
    uniformly, so only the class prior differs from the grid's (a label shift, Saerens et al. 2002): the model's
    odds are the grid's times odds(f) / odds(the phrase's fraction), and this undoes that factor."""
    config = model.config
    fraction = config.segmentation_phrase_fractions.get(phrase)
    if config.segmentation_inside_fraction is None or fraction is None:
        return 0.0
    return logit(config.segmentation_inside_fraction) - logit(fraction)


class MaskPredictor:
    """The model's 0|1 at every cell of the 64x64 grid for a phrase about a frame: 1 where the log-odds of the two
    answers (log-probabilities after the shared prefix, see choose_after_prefix) pass label_shift_threshold, or
    simply the likelier answer with `label_shift=False`."""

    def __init__(self, model: VLM, batch: int = SCORE_BATCH, label_shift: bool = True):
        self.model, self.batch, self.label_shift = model, batch, label_shift
        self._questions: dict[str, tuple[list[int], list[list[int]]]] = {}  # phrase -> (prefix ids, contexts)

    def threshold(self, phrase: str) -> float:
        return label_shift_threshold(self.model, phrase) if self.label_shift else 0.0

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
            log_odds = scores[:, 1] - scores[:, 0]  # [4096]: inside against outside
            masks[phrase] = (log_odds > self.threshold(phrase)).numpy().reshape(SIZE, SIZE)
        return masks
