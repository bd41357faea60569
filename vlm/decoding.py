"""Greedy decoding from a KV cache: the one decoder behind `VLM.generate` and the reconstruction evaluator."""

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def greedy_continue(
    llm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    logits: torch.Tensor,
    cache,
    next_positions: torch.Tensor,
    max_new_tokens: int,
    attention_mask: torch.Tensor | None = None,
) -> list[str]:
    """Answer texts of B rows decoded greedily until eos (or max_new_tokens).

    logits [B, V]: the next-token logits after each row's prompt; cache: the prompts' KV cache (extended in
    place); next_positions [B]: the position of each row's first new token; attention_mask [B, L]: the
    prompts' mask, for left-padded rows (None when no row is padded).
    """
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    done = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    generated = []
    for step in range(max_new_tokens):
        token = torch.where(done, pad, logits.argmax(-1))  # [B]
        generated.append(token)
        done |= token == eos
        if done.all() or step == max_new_tokens - 1:
            break
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
        logits = llm(
            input_ids=token[:, None],
            attention_mask=attention_mask,
            position_ids=(next_positions + step)[:, None],
            past_key_values=cache,
            use_cache=True,
        ).logits[:, -1]
    texts = []
    for row in torch.stack(generated, dim=1).tolist():
        row = row[: row.index(eos)] if eos in row else row
        texts.append(tokenizer.decode(row, skip_special_tokens=True))
    return texts
