"""The chunked LM-head cross-entropy gives the plain loss and the plain gradients, without whole logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pretrain.chunked_ce import chunked_cross_entropy, enable_chunked_loss
from pretrain.config import ModelConfig
from pretrain.model import GPT

TINY = dict(vocab_size=1000, seq_len=32, n_layer=2, n_head=4, d_model=64)  # 1000 pads to 1024 rows
VARIANTS = {
    "gpt2-tied": dict(),
    "llama-untied": dict(pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False, tie_embeddings=False),
}


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 1000, (3, 32), generator=g)
    targets = torch.randint(0, 1000, (3, 32), generator=g)
    targets[1, 5:9] = -100  # ignored positions (padding) must not count in the mean or the gradient
    return idx, targets


def _loss_and_grads(model: GPT, idx, targets, chunk: int, autocast: bool) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    enable_chunked_loss(model, chunk)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits, loss = model(idx, targets)
    assert (logits is None) == (chunk > 0)  # the chunked path never forms the whole logits
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("chunk", [7, 40, 96])  # 96 rows = the whole batch in one chunk; 7 and 40 leave a remainder
def test_fp32_loss_and_every_gradient_equal_the_plain_path(variant: str, chunk: int) -> None:
    torch.manual_seed(0)
    model = GPT(ModelConfig(**TINY, **VARIANTS[variant]))
    idx, targets = _batch()
    plain_loss, plain_grads = _loss_and_grads(model, idx, targets, 0, autocast=False)
    loss, grads = _loss_and_grads(model, idx, targets, chunk, autocast=False)
    assert loss.item() == pytest.approx(plain_loss.item(), rel=1e-6)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    assert model.lm_head.weight.grad[1000:].abs().max() == 0  # padded rows: never scored, never embedded here


@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_autocast_matches_the_plain_path_to_bf16_rounding(variant: str) -> None:
    torch.manual_seed(0)
    model = GPT(ModelConfig(**TINY, **VARIANTS[variant]))
    idx, targets = _batch(1)
    plain_loss, plain_grads = _loss_and_grads(model, idx, targets, 0, autocast=True)
    loss, grads = _loss_and_grads(model, idx, targets, 40, autocast=True)
    assert loss.item() == pytest.approx(plain_loss.item(), rel=2e-3)
    for name, grad in plain_grads.items():
        rel = (grads[name] - grad).norm() / grad.norm()
        assert rel < 2e-2, (name, rel.item())


def test_bf16_weights_without_autocast_as_under_the_engine() -> None:
    """DeepSpeed bf16 runs the model in bf16 weights with no autocast: loss and hidden gradient still agree."""
    torch.manual_seed(0)
    hidden = torch.randn(50, 64, dtype=torch.bfloat16, requires_grad=True)
    weight = (torch.randn(1024, 64) * 0.02).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, 1000, (50,))
    plain = F.cross_entropy((hidden @ weight.t())[:, :1000].float(), targets)
    plain.backward()
    want_h, want_w = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    loss = chunked_cross_entropy(hidden[None], weight, targets[None], 1000, 16)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(plain.item(), rel=1e-3)
    assert hidden.grad.dtype == weight.grad.dtype == torch.bfloat16
    assert ((hidden.grad.float() - want_h.float()).norm() / want_h.float().norm()) < 1e-2
    assert ((weight.grad.float() - want_w.float()).norm() / want_w.float().norm()) < 1e-2


def test_all_targets_ignored_gives_nan_like_the_plain_loss() -> None:
    hidden, weight = torch.randn(4, 8), torch.randn(16, 8)
    targets = torch.full((4,), -100)
    assert torch.isnan(F.cross_entropy(hidden @ weight.t(), targets))
    assert torch.isnan(chunked_cross_entropy(hidden, weight, targets, 16, 3))


def test_bad_chunk_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="chunk_tokens must be >= 1"):
        chunked_cross_entropy(torch.randn(2, 4), torch.randn(8, 4), torch.zeros(2, dtype=torch.long), 8, 0)
    with pytest.raises(ValueError, match=">= 0"):
        enable_chunked_loss(GPT(ModelConfig(**TINY)), -1)
