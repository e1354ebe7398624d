"""The FlexAttention path of model.doc_mask (what CUDA runs) gives the dense-mask fallback's logits. On CPU it
compiles FlexAttention through inductor (about a minute on a busy 2-core machine, and a compiler process),
hence the integration tier."""

from __future__ import annotations

import pytest
import torch

from pretrain import model as model_module
from pretrain.config import ModelConfig
from pretrain.model import GPT


def test_flex_block_masks_match_the_dense_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ModelConfig(
        vocab_size=96, seq_len=256, n_layer=2, n_head=4, n_kv_head=2, d_model=32, eos_id=2, doc_mask=True,
        doc_positions_reset=True, pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False,
    )  # fmt: skip
    torch.manual_seed(0)
    gpt = GPT(cfg).eval()
    idx = torch.randint(3, 96, (2, 256), generator=torch.Generator().manual_seed(5))
    idx[0, [40, 41, 200]] = 2  # documents of 41, 1, 159 and 55 tokens; the second row: 130 + 126 (a block edge)
    idx[1, 129] = 2
    with torch.no_grad():
        dense, _ = gpt(idx)
        monkeypatch.setattr(model_module, "flex_attention_runs", lambda device, dropout: True)
        flex, _ = gpt(idx)
    torch.testing.assert_close(flex, dense, rtol=1e-5, atol=1e-5)
