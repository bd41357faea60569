"""Batching samples of one task.

A sample is a dict:
    "images":         float [n_img, 3, S, S] from preprocess_images (same n_img across the batch)
    "prompt":         str from vlm.prompts (markers included)
    "answer":         str, or None at inference
    "prompt_coords":  optional [k, 4] normalised (x0, y0, x1, y1), k <= num_prompt_slots
    "prompt_kinds":   optional [k] KIND_POINT / KIND_BOX
"""

import torch
from transformers import PreTrainedTokenizerBase

from vlm.tokenizer import IGNORE_INDEX, encode


def pad_sequences(sequences: list[list[int]], value: int, side: str) -> torch.Tensor:
    """Lists of ints -> [B, L], padded with value on the given side ("left" or "right")."""
    length = max(len(s) for s in sequences)
    rows = [[value] * (length - len(s)) + s if side == "left" else s + [value] * (length - len(s)) for s in sequences]
    return torch.tensor(rows, dtype=torch.long)


def collate(
    samples: list[dict],
    tokenizer: PreTrainedTokenizerBase,
    num_image_tokens: int,
    num_prompt_slots: int,
    padding_side: str = "right",
) -> dict[str, torch.Tensor]:
    """-> images [B, n_img, 3, S, S], input_ids / attention_mask / labels [B, L], and, when any
    sample has visual prompts, prompt_coords [B, slots, 4], prompt_kinds [B, slots], prompt_valid [B, slots]."""
    encoded = [encode(tokenizer, s["prompt"], s.get("answer"), num_image_tokens, num_prompt_slots) for s in samples]
    ids = [e[0] for e in encoded]
    batch = {
        "input_ids": pad_sequences(ids, tokenizer.pad_token_id, padding_side),
        "attention_mask": pad_sequences([[1] * len(i) for i in ids], 0, padding_side),
        "labels": pad_sequences([e[1] for e in encoded], IGNORE_INDEX, padding_side),
    }
    if "images" in samples[0]:
        batch["images"] = torch.stack([torch.as_tensor(s["images"]) for s in samples])
    if any("prompt_coords" in s for s in samples):
        coords = torch.zeros(len(samples), num_prompt_slots, 4)
        kinds = torch.zeros(len(samples), num_prompt_slots, dtype=torch.long)
        valid = torch.zeros(len(samples), num_prompt_slots, dtype=torch.bool)
        for b, sample in enumerate(samples):
            k = len(sample.get("prompt_kinds", ()))
            if k > num_prompt_slots:
                raise ValueError(f"sample {b} has {k} visual prompts; the encoder has {num_prompt_slots} slots")
            if k:
                coords[b, :k] = torch.as_tensor(sample["prompt_coords"], dtype=torch.float32).reshape(k, 4)
                kinds[b, :k] = torch.as_tensor(sample["prompt_kinds"], dtype=torch.long)
                valid[b, :k] = True
        batch.update(prompt_coords=coords, prompt_kinds=kinds, prompt_valid=valid)
    return batch
