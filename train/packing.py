"""Shared-prefix packing: several questions about one image in one row, the image computed once.

A row holds the tokens the questions share (bos, the image block, the start of the question) once,
then each question's remaining tokens as its own segment. A segment attends to the prefix and to
itself only, with the positions it would have alone, so every question is computed exactly as if it
were its own sample (tests/test_train.py checks the loss against the plain batch) while the image
and the prefix cost one pass instead of one per question.
"""

import torch
import torch.nn.functional as F

from vlm import IGNORE_INDEX, VLM, common_prefix_length, encode

PAD_SEGMENT, PREFIX_SEGMENT = -1, 0  # segment ids: question j of a row is segment j + 1


def pack_row(encoded: list[tuple[list[int], list[int]]]) -> tuple[list[int], list[int], list[int], list[int]]:
    """(ids, labels) of questions about the same images -> one row: ids, next-token targets, positions, segments.

    The shared prefix stops at least one token before the first answer token, so every segment starts
    with a question token and the prefix never has to predict a segment's token.
    """
    first_answer = min(next(i for i, t in enumerate(labels) if t != IGNORE_INDEX) for _, labels in encoded)
    prefix = min(common_prefix_length([ids for ids, _ in encoded]), first_answer - 1)
    ids, targets, positions, segments = (
        list(encoded[0][0][:prefix]),
        [IGNORE_INDEX] * prefix,
        list(range(prefix)),
        [PREFIX_SEGMENT] * prefix,
    )
    for j, (sample_ids, labels) in enumerate(encoded):
        ids += sample_ids[prefix:]
        targets += labels[prefix + 1 :] + [IGNORE_INDEX]  # the token at t predicts the label at t + 1
        positions += range(prefix, len(sample_ids))
        segments += [j + 1] * (len(sample_ids) - prefix)
    return ids, targets, positions, segments


def pack(model: VLM, groups: list[tuple[torch.Tensor, list[tuple[str, str]]]]) -> dict[str, torch.Tensor]:
    """groups: (images [n_img, 3, S, S], [(prompt, answer), ...]) -> a packed batch, one row per group.

    -> images [R, n_img, 3, S, S]; input_ids, targets, position_ids, segments [R, L] (right-padded).
    """
    rows = []
    for _, questions in groups:
        encoded = [
            encode(model.tokenizer, prompt, answer, model.num_image_tokens, model.config.num_prompt_slots)
            for prompt, answer in questions
        ]
        rows.append(pack_row(encoded))
    length = max(len(row[0]) for row in rows)

    def padded(column: int, value: int) -> torch.Tensor:
        return torch.tensor([row[column] + [value] * (length - len(row[column])) for row in rows], dtype=torch.long)

    return {
        "images": torch.stack([images for images, _ in groups]),
        "input_ids": padded(0, model.tokenizer.pad_token_id),
        "targets": padded(1, IGNORE_INDEX),
        "position_ids": padded(2, 0),
        "segments": padded(3, PAD_SEGMENT),
    }


def segment_mask(segments: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[R, L] segment ids -> additive attention mask [R, 1, L, L]: causal, prefix + own segment only."""
    keys, queries = segments[:, None, :], segments[:, :, None]
    allowed = (keys != PAD_SEGMENT) & ((keys == PREFIX_SEGMENT) | (keys == queries))
    allowed &= torch.ones_like(allowed[0]).tril()
    allowed |= torch.eye(
        segments.shape[1], dtype=torch.bool, device=segments.device
    )  # padding rows must not be empty (NaN)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def packed_loss(model: VLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over every answer token of a packed batch (what the plain batch's loss is)."""
    input_ids = batch["input_ids"].to(model.device)
    embeds = model.embed(input_ids, images=batch["images"])  # [R, L, D]
    logits = model.llm(
        inputs_embeds=embeds,
        attention_mask=segment_mask(batch["segments"].to(model.device), embeds.dtype),
        position_ids=batch["position_ids"].to(model.device),
    ).logits  # [R, L, V]
    return F.cross_entropy(
        logits.flatten(0, 1).float(), batch["targets"].to(model.device).flatten(), ignore_index=IGNORE_INDEX
    )
