"""LM-head cross-entropy in row chunks: the (tokens x vocab) logits never exist whole, in fp32 or in bf16.

The plain loss path materialises bf16 logits (N x V), an fp32 copy, the fp32 log-softmax saved for backward and
an fp32 gradient of the same size: for gpt3-1.3b at micro batch 8 x 2048 tokens and V = 50,304 that is ~10 GB.
Here the hidden states (N x C) are split into chunks of `chunk_tokens` rows; per chunk the logits are formed,
reduced to loss terms, and turned straight into their gradient (softmax - one_hot) / n_valid, whose products with
the head weight (dh) and the hidden states (dW, accumulated in fp32) are kept for backward. Backward only scales
those by the incoming gradient, so the head matmul is not recomputed. Peak extra memory: one chunk's fp32 logits
and an fp32 (V x C) weight-gradient buffer. Same result as `F.cross_entropy(logits.float(), targets)` up to
summation order (fp32 exactly to rounding; bf16 within bf16 rounding of the matmuls), ignore_index -100 included.

Under ZeRO-3 the head weight is read outside the LM head's own forward, so DeepSpeed must be told to gather it
for the whole model's forward: `enable_chunked_loss` does that (`deepspeed.zero.register_external_parameter`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE_INDEX = -100


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of (hidden @ weight[:vocab].T) against targets; gradients computed in forward."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab: int, chunk: int):
        # hidden (N, C), weight (Vpad, C), targets (N,)
        head = weight[:vocab]  # (V, C): padded rows never score (the plain path slices logits the same way)
        n_valid = (targets != IGNORE_INDEX).sum()
        want_dh, want_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dh = torch.empty_like(hidden) if want_dh else None
        dw = torch.zeros(head.shape, dtype=torch.float32, device=weight.device) if want_dw else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        scale = 1.0 / n_valid.clamp(min=1).float()
        for start in range(0, hidden.size(0), chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk]
            logits = (h @ head.t()).float()  # (n, V) in fp32, one chunk only
            total += F.cross_entropy(logits, t, ignore_index=IGNORE_INDEX, reduction="sum")
            if not (want_dh or want_dw):
                continue
            valid = (t != IGNORE_INDEX).unsqueeze(1)  # (n, 1); no host sync anywhere in this loop
            grad = torch.softmax(logits, dim=-1)  # d(sum of losses)/d(logits) = softmax - one_hot, 0 where ignored
            grad.scatter_add_(1, t.clamp(min=0).unsqueeze(1), -valid.float())
            grad = (grad * valid * scale).to(hidden.dtype)
            if want_dh:
                dh[start : start + chunk] = grad @ head
            if want_dw:
                dw += (grad.t() @ h).float()
        ctx.save_for_backward(dh if want_dh else None, dw if want_dw else None)
        ctx.weight_shape, ctx.weight_dtype = weight.shape, weight.dtype
        return total / n_valid.float()  # 0/0 = nan when every target is ignored, as F.cross_entropy

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        dh, dw = ctx.saved_tensors
        grad_hidden = dh * grad_loss.to(dh.dtype) if dh is not None else None
        grad_weight = None
        if dw is not None:
            grad_weight = torch.zeros(ctx.weight_shape, dtype=ctx.weight_dtype, device=dw.device)
            grad_weight[: dw.size(0)] = (dw * grad_loss).to(ctx.weight_dtype)  # padded rows get no gradient
        return grad_hidden, grad_weight, None, None, None


def chunked_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int, chunk_tokens: int
) -> torch.Tensor:
    """Mean next-token loss of hidden (B, T, C) through the LM head weight (Vpad, C), `chunk_tokens` rows at a time."""
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    flat = hidden.reshape(-1, hidden.size(-1))
    if torch.is_autocast_enabled(hidden.device.type):  # match the plain path: the head matmul runs in autocast dtype
        dtype = torch.get_autocast_dtype(hidden.device.type)
        flat = flat.to(dtype)
        weight = weight.to(dtype)
    with torch.autocast(hidden.device.type, enabled=False):
        return _ChunkedLinearCrossEntropy.apply(flat, weight, targets.reshape(-1), vocab_size, chunk_tokens)


def enable_chunked_loss(model: nn.Module, chunk_tokens: int) -> None:
    """Make `model` (a pretrain.model.GPT) compute its training loss with chunked_cross_entropy; 0 turns it off.

    Under ZeRO-3 (the head weight carries DeepSpeed's `ds_id`) the weight is registered as an external parameter
    of the whole model, so DeepSpeed gathers it for the model's forward, where the loss reads it.
    """
    if chunk_tokens < 0:
        raise ValueError(f"chunk_tokens must be >= 0 (0 = plain loss), got {chunk_tokens}")
    model.loss_chunk_tokens = chunk_tokens
    weight = model.lm_head.weight
    if chunk_tokens and hasattr(weight, "ds_id"):
        # imported here, not at the top: the single-device model imports this module, and importing DeepSpeed
        # guesses the accelerator and prints it on stdout (export/evaluate/generate keep stdout for results)
        import deepspeed

        deepspeed.zero.register_external_parameter(model, weight)
