"""On CUDA: GPT-2 and Llama logits in bf16 against fp32 and against transformers, at 2048 positions.

The CPU tests (tests/unit/test_hf.py) check fp32 parity on CPU; these run the kernels users train with (SDPA's flash
path, bf16 tensor cores) and the full 2048-position tables. Skipped without CUDA; benchmarks/gpu_run.sh runs
them with `pytest -m cuda`. Errors are relative norms ||ours - theirs|| / ||theirs|| over all logits.
"""

from __future__ import annotations

import copy

import pytest
import torch

from pretrain.config import ModelConfig
from pretrain.interop.hf import to_hf
from pretrain.model import GPT

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SHAPE = dict(vocab_size=1000, seq_len=2048, n_layer=4, n_head=4, d_model=256)  # head size 64: flash kernels apply
FAMILIES = {
    "gpt2": dict(),
    "llama": dict(pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False, n_kv_head=2, tie_embeddings=False),
}
FP32_TOLERANCE = 1e-4  # same math, different kernels (TF32 is off for fp32 matmuls by default)
BF16_TOLERANCE = 2e-2  # bf16 operands through 4 blocks: METHOD.md's 1e-3..1e-2 per op, compounded


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    return ((a - b).norm() / b.norm()).item()


def models(family: str) -> tuple[GPT, torch.nn.Module]:
    """Our model and transformers' with the same weights, both fp32 on the GPU, eval mode."""
    from transformers import GPT2LMHeadModel, LlamaForCausalLM

    torch.manual_seed(0)
    ours = GPT(ModelConfig(**SHAPE, **FAMILIES[family])).eval()
    hf_config, state = to_hf(ours, ours.cfg)
    theirs = (GPT2LMHeadModel if family == "gpt2" else LlamaForCausalLM)(hf_config).eval()
    theirs.load_state_dict(state, strict=True)
    return ours.cuda(), theirs.cuda()


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_logits_bf16_against_fp32_and_transformers(family: str) -> None:
    ours, theirs = models(family)
    idx = torch.randint(0, 1000, (2, 2048), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    ours32, theirs32 = ours(idx)[0], theirs(idx).logits
    assert rel(ours32, theirs32) < FP32_TOLERANCE
    ours16 = copy.deepcopy(ours).to(torch.bfloat16)(idx)[0]
    theirs16 = theirs.to(torch.bfloat16)(idx).logits
    assert ours16.dtype == torch.bfloat16
    assert rel(ours16, ours32) < BF16_TOLERANCE, "bf16 drifted from fp32"
    assert rel(ours16, theirs16) < BF16_TOLERANCE, "bf16 disagrees with transformers in bf16"
    # the last positions carry the largest angles: a table computed in low precision shows there first
    assert rel(ours16[:, -256:], ours32[:, -256:]) < BF16_TOLERANCE


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_autocast_training_loss_matches_fp32(family: str) -> None:
    """The reference's precision (autocast over fp32 weights) gives the fp32 loss to bf16 accuracy, and finite grads."""
    ours, _ = models(family)
    ours.train()
    g = torch.Generator("cuda").manual_seed(2)
    idx, targets = (torch.randint(0, 1000, (2, 2048), device="cuda", generator=g) for _ in range(2))
    _, loss32 = ours(idx, targets)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        _, loss16 = ours(idx, targets)
    assert loss16.dtype == torch.float32  # the loss is computed from fp32 logits
    assert abs(loss16.item() - loss32.item()) / loss32.item() < 2e-3
    loss16.backward()
    assert all(torch.isfinite(p.grad).all() for p in ours.parameters() if p.grad is not None)
