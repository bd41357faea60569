"""Constrained choice among answer strings: the candidates' tokens as a prefix tree, scored in one pass.

A candidate's score is log P(its tokens, then eos | prompt). Candidates that share a prefix
("left_gas", "left_brake") share the tree nodes of that prefix, so each prefix token is fed
to the LLM once; eos is never fed, it is read from the logits at a candidate's last node.
"""

from typing import NamedTuple

import torch

ROOT = -1  # the context of a candidate's first token: the prompt's last position


class Choice(NamedTuple):
    answers: list[str]  # the chosen candidate per observation
    index: torch.Tensor  # [B]
    prob: torch.Tensor  # [B], probability of the chosen candidate
    probs: torch.Tensor  # [B, C], normalised over the candidates
    # [B] bool: unconstrained greedy decoding would have produced one of the candidates' token
    # sequences followed by eos (False: it would have produced something illegal).
    greedy_legal: torch.Tensor


class AnswerTree:
    """Token sequences of the candidates merged into a prefix tree.

    Node n holds token[n], follows parent[n] (ROOT for a first token) and sits depth[n] tokens
    after the prompt. The tree is laid out in rows, each row holding some nodes after a copy of
    the prompt: one row with every node when a node can be told to attend to its ancestors only
    (a 4D mask), or one row per candidate holding its path when attention is plain causal.
    """

    def __init__(self, answers: list[list[int]], eos_token_id: int, one_row_per_candidate: bool):
        self.eos = eos_token_id
        self.one_row_per_candidate = one_row_per_candidate
        self.token: list[int] = []
        self.parent: list[int] = []
        self.depth: list[int] = []
        self.child: dict[tuple[int, int], int] = {}  # (node, token) -> node
        self.paths: list[list[int]] = []
        for ids in answers:
            node, path = ROOT, []
            for token in ids:
                if (node, token) not in self.child:
                    self.child[node, token] = len(self.token)
                    self.token.append(token)
                    self.parent.append(node)
                    self.depth.append(len(path))
                node = self.child[node, token]
                path.append(node)
            self.paths.append(path)
        self.ends = {path[-1] if path else ROOT for path in self.paths}  # where eos completes a candidate
        self.rows = [list(path) for path in self.paths] if one_row_per_candidate else [list(range(len(self.token)))]
        # Where each context's logits are found: (row, kept position); kept position 0 is the prompt's last token.
        self.home = {ROOT: (0, 0)}
        for r, nodes in reversed(list(enumerate(self.rows))):
            self.home.update({node: (r, 1 + slot) for slot, node in enumerate(nodes)})

    @property
    def block_len(self) -> int:
        return max(len(nodes) for nodes in self.rows)

    def ancestry(self) -> torch.Tensor:
        """[N, N] bool: node q may attend to node k (k is q or one of its ancestors)."""
        n = len(self.token)
        allowed = torch.eye(n, dtype=torch.bool)
        for node in range(n):
            if self.parent[node] != ROOT:
                allowed[node] |= allowed[self.parent[node]]
        return allowed

    def terms(self) -> tuple[list[int], list[int], list[int], list[int]]:
        """Every log-prob a score sums: (row, kept position, token, candidate) per term."""
        rows, kept, tokens, owners = [], [], [], []
        for c, path in enumerate(self.paths):
            row = c if self.one_row_per_candidate else 0
            slot = {node: 1 + i for i, node in enumerate(self.rows[row])}
            contexts = [ROOT, *path]
            targets = [self.token[node] for node in path] + [self.eos]
            for context, token in zip(contexts, targets):
                rows.append(row)
                kept.append(0 if context == ROOT else slot[context])
                tokens.append(token)
                owners.append(c)
        return rows, kept, tokens, owners

    def greedy_is_legal(self, argmax: list[list[list[int]]]) -> bool:
        """Follow the argmax tokens [row][kept position] of one observation from the prompt; legal when
        they spell a candidate and then eos."""
        node = ROOT
        while True:
            row, kept = self.home[node]
            token = argmax[row][kept]
            if token == self.eos:
                return node in self.ends
            if (node, token) not in self.child:
                return False
            node = self.child[node, token]


class ChoiceLayout(NamedTuple):
    """Everything about one choose() call that does not depend on the images: built once per
    (prompts, candidates) and reused every step of a game."""

    tree: AnswerTree
    input_ids: torch.Tensor  # [R, L], R = prompts x tree rows; image placeholders still in
    position_ids: torch.Tensor  # [R, L]
    attention_mask: torch.Tensor  # [R, L] (one row per candidate) or [R, 1, L, L] additive
    kept: torch.Tensor  # [K+1], positions whose logits score: the prompt's last token and the tree
    terms: tuple[torch.Tensor, ...]  # row, kept position, token, candidate: [terms] each


def layout(
    prefixes: list[list[int]],
    tree: AnswerTree,
    pad_token_id: int,
    dtype: torch.dtype,
    device: torch.device,
) -> ChoiceLayout:
    """Left-pad the prompts to one length, follow each with its tree rows, and mask the tree."""
    prompt_len, block_len = max(len(p) for p in prefixes), tree.block_len
    ancestry = tree.ancestry()  # [N, N]
    ids, pos, prompt_keys, block_keys = [], [], [], []
    for prefix in prefixes:
        left = prompt_len - len(prefix)
        for nodes in tree.rows:
            right = block_len - len(nodes)
            ids.append([pad_token_id] * left + prefix + [tree.token[n] for n in nodes] + [pad_token_id] * right)
            pos.append(
                [0] * left + list(range(len(prefix))) + [len(prefix) + tree.depth[n] for n in nodes] + [0] * right
            )
            prompt_keys.append([False] * left + [True] * len(prefix))
            block = torch.zeros(block_len, block_len, dtype=torch.bool)
            block[: len(nodes), : len(nodes)] = ancestry[nodes][:, nodes]
            block_keys.append(block)
    prompt_keys = torch.tensor(prompt_keys)  # [R, P]
    block_keys = torch.stack(block_keys)  # [R, K, K]
    if tree.one_row_per_candidate:  # every row is prompt + one path: plain causal attention over the non-pad tokens
        attention_mask = torch.cat([prompt_keys, block_keys.diagonal(dim1=1, dim2=2)], dim=1).long()
    else:
        rows, length = len(ids), prompt_len + block_len
        causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool).tril()
        top = torch.cat(
            [causal & prompt_keys[:, None, :], torch.zeros(rows, prompt_len, block_len, dtype=torch.bool)], 2
        )
        bottom = torch.cat([prompt_keys[:, None, :].expand(-1, block_len, -1), block_keys], 2)
        allowed = torch.cat([top, bottom], dim=1) | torch.eye(
            length, dtype=torch.bool
        )  # pad rows see themselves (no NaN)
        attention_mask = torch.zeros(rows, 1, length, length, dtype=dtype).masked_fill(
            ~allowed[:, None], torch.finfo(dtype).min
        )
    return ChoiceLayout(
        tree,
        torch.tensor(ids, device=device),
        torch.tensor(pos, device=device),
        attention_mask.to(device),
        torch.arange(prompt_len - 1, prompt_len + block_len, device=device),
        tuple(torch.tensor(x, device=device) for x in tree.terms()),
    )
