"""The reference a cached generator is checked against: greedy decoding that recomputes the whole context each step."""

from __future__ import annotations

import torch

from pretrain.model import GPT


@torch.no_grad()
def argmax_without_cache(model: GPT, prompt: list[int], new_tokens: int) -> list[int]:
    """Re-run the full context every step, take the argmax of the last position; returns prompt + new tokens."""
    ids = list(prompt)
    for _ in range(new_tokens):
        logits, _ = model(torch.tensor([ids]))
        ids.append(int(logits[0, -1].argmax()))
    return ids
