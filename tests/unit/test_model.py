"""Behaviour of the GPT model: causality, loss scale, learning, KV-cache generation, GQA, checkpointing."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from pretrain.config import ModelConfig, load_config
from pretrain.model import GPT, Rotary, nucleus_filter, sample_next

TINY = dict(vocab_size=300, seq_len=32, n_layer=2, n_head=4, d_model=64)
POSITIONS = {
    "learned": dict(pos_emb="learned"),
    "sinusoidal": dict(pos_emb="sinusoidal"),
    "rope": dict(pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False),
    "rope-gqa": dict(pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False, n_kv_head=2, tie_embeddings=False),
}


def tiny_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(**{**TINY, **overrides})).eval()


@pytest.mark.parametrize("variant", POSITIONS)
def test_future_tokens_never_change_past_logits(variant: str) -> None:
    model = tiny_model(**POSITIONS[variant])
    idx = torch.randint(0, 300, (2, 20))
    for t in (0, 7, 18):
        changed = idx.clone()
        changed[:, t + 1 :] = torch.randint(0, 300, changed[:, t + 1 :].shape)
        a, _ = model(idx)
        b, _ = model(changed)
        assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])  # the later positions do see the change


@pytest.mark.parametrize("variant", POSITIONS)
def test_loss_at_init_is_uniform_guess(variant: str) -> None:
    """Small init means near-uniform predictions: cross-entropy ≈ ln(vocab)."""
    model = tiny_model(**{**POSITIONS[variant], "vocab_size": 5000})
    idx, targets = torch.randint(0, 5000, (2, 4, 32))
    logits, loss = model(idx, targets)
    assert logits.shape == (4, 32, 5000)  # padded rows (5056) sliced away
    assert abs(loss.item() - math.log(5000)) < 0.05 * math.log(5000)


@pytest.mark.parametrize("preset", ["debug", "llama-debug"])
def test_debug_preset_overfits_one_batch(preset: str) -> None:
    """Memorising 2x128 tokens proves gradients reach every part; 80 AdamW steps take ~2 s on one core."""
    cfg = load_config(preset).model
    torch.manual_seed(0)
    model = GPT(cfg).train()
    idx, targets = torch.randint(0, cfg.vocab_size, (2, 2, cfg.seq_len))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(80):
        _, loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1


def test_ignore_index_masks_targets() -> None:
    model = tiny_model()
    idx, targets = torch.randint(0, 300, (2, 2, 16))
    masked = targets.clone()
    masked[:, 8:] = -100
    _, loss_masked = model(idx, masked)
    logits, _ = model(idx)
    expected = torch.nn.functional.cross_entropy(logits[:, :8].reshape(-1, 300), targets[:, :8].reshape(-1))
    assert torch.allclose(loss_masked, expected, atol=1e-6)


def test_gqa_equals_multi_head_with_repeated_kv() -> None:
    """n_kv_head=2 of 4: query heads 0,1 share kv head 0 and 2,3 share kv head 1 (HF's repeat_kv order)."""
    gqa = tiny_model(pos_emb="rope", n_kv_head=2)
    mha = tiny_model(pos_emb="rope")
    state = gqa.state_dict()
    hs = 16
    for i in range(2):
        w = state[f"blocks.{i}.attn.qkv.weight"]
        b = state[f"blocks.{i}.attn.qkv.bias"]
        q, k, v = w.split((64, 32, 32))
        qb, kb, vb = b.split((64, 32, 32))
        expand = [h.view(2, hs, -1).repeat_interleave(2, dim=0).reshape(64, -1) for h in (k, v)]
        state[f"blocks.{i}.attn.qkv.weight"] = torch.cat([q, *expand])
        bias_expand = [h.view(2, hs).repeat_interleave(2, dim=0).reshape(64) for h in (kb, vb)]
        state[f"blocks.{i}.attn.qkv.bias"] = torch.cat([qb, *bias_expand])
    mha.load_state_dict(state)
    idx = torch.randint(0, 300, (2, 12))
    assert torch.allclose(gqa(idx)[0], mha(idx)[0], atol=1e-5)


def test_rope_scores_depend_only_on_relative_position() -> None:
    rotary = Rotary(head_dim=16, max_len=64, theta=10000.0)
    q, k = torch.randn(2, 1, 1, 1, 16)
    score = [(rotary(q, m) * rotary(k, m + 5)).sum() for m in (0, 10, 40)]
    assert torch.allclose(score[0], score[1], atol=1e-5) and torch.allclose(score[0], score[2], atol=1e-5)
    assert not torch.allclose((rotary(q, 0) * rotary(k, 1)).sum(), score[0], atol=1e-3)


def greedy_by_recomputing(model: GPT, idx: torch.Tensor, steps: int) -> torch.Tensor:
    for _ in range(steps):
        logits, _ = model(idx[:, -model.cfg.seq_len :])  # crop to the context window
        idx = torch.cat((idx, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    return idx


@pytest.mark.parametrize("variant", POSITIONS)
def test_kv_cached_generation_equals_recomputation(variant: str) -> None:
    """Runs past seq_len=32, so the cache rebuild on overflow is exercised too."""
    model = tiny_model(**POSITIONS[variant])
    prompt = torch.randint(0, 300, (2, 5))
    cached = model.generate(prompt, max_new_tokens=40, temperature=0.0)
    assert cached.shape == (2, 45)
    assert torch.equal(cached, greedy_by_recomputing(model, prompt, 40))


@pytest.mark.parametrize("variant", POSITIONS)
def test_chunked_prefill_through_cache_equals_full_forward(variant: str) -> None:
    """Chunks after the first attend to cached keys through an explicit offset causal mask."""
    model = tiny_model(**POSITIONS[variant])
    idx = torch.randint(0, 300, (2, 30))
    full, _ = model(idx)
    cache = model.new_kv_cache(batch=2)
    chunks = [model(idx[:, a:b], kv_cache=cache)[0] for a, b in ((0, 7), (7, 8), (8, 19), (19, 30))]
    assert cache.pos == 30
    assert torch.allclose(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=0)


def test_generate_stops_at_eos_and_pads_finished_rows() -> None:
    model = tiny_model()
    prompt = torch.randint(0, 300, (2, 4))
    free = model.generate(prompt, max_new_tokens=30, temperature=0.0)
    eos = int(free[0, 5])  # row 0's second generated token becomes "EOS"
    out = model.generate(prompt, max_new_tokens=30, temperature=0.0, eos_id=eos)
    # each row follows the free run up to its first EOS and pads with EOS after; the loop stops once all have one
    ends = [4 + next((i + 1 for i, t in enumerate(row[4:].tolist()) if t == eos), 30) for row in free]
    assert ends[0] <= 6 and out.size(1) == max(ends)
    for row, end in enumerate(ends):
        assert torch.equal(out[row, :end], free[row, :end]) and (out[row, end:] == eos).all()


def test_sampling_is_reproducible_with_generator_and_respects_top_k() -> None:
    model = tiny_model()
    prompt = torch.randint(0, 300, (1, 4))
    runs = [model.generate(prompt, 10, top_k=5, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    draws = torch.cat([sample_next(logits, 1.0, 2, None) for _ in range(200)])
    assert set(draws.flatten().tolist()) == {1, 3}
    assert sample_next(logits, 0.0, None, None).item() == 1


def test_nucleus_keeps_smallest_set_reaching_top_p() -> None:
    probs = torch.tensor([[0.5, 0.05, 0.3, 0.15]])
    kept = nucleus_filter(probs.log(), top_p=0.75).isfinite()
    assert kept.tolist() == [[True, False, True, False]]  # 0.5 + 0.3 reaches 0.75
    assert nucleus_filter(probs.log(), top_p=0.1).isfinite().tolist() == [[True, False, False, False]]


def test_activation_checkpointing_keeps_gradients_and_calls_fn() -> None:
    model = tiny_model(**POSITIONS["rope-gqa"], n_layer=4).train()
    idx, targets = torch.randint(0, 300, (2, 2, 16))
    _, loss = model(idx, targets)
    loss.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    calls = []

    def recording_checkpoint(block, x):
        calls.append(block)
        return checkpoint(block, x, use_reentrant=False)

    model.set_activation_checkpointing(recording_checkpoint, every_k=2)
    _, loss = model(idx, targets)
    loss.backward()
    assert calls == [model.blocks[0], model.blocks[2]]
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, reference[name], atol=1e-6), name
    model.eval()
    calls.clear()
    model(idx)
    assert calls == []  # inference never recomputes


def test_init_std_and_tied_head() -> None:
    model = GPT(ModelConfig(vocab_size=1000, seq_len=64, n_layer=8, n_head=4, d_model=256))
    assert model.lm_head.weight is model.wte.weight
    assert abs(model.blocks[0].attn.qkv.weight.std().item() - 0.02) < 0.001
    assert abs(model.blocks[3].mlp.down.weight.std().item() - 0.02 / math.sqrt(16)) < 0.0005
    assert abs(model.blocks[3].attn.proj.weight.std().item() - 0.02 / math.sqrt(16)) < 0.0005
    assert model.blocks[1].mlp.up.bias.abs().max().item() == 0.0


def test_too_long_input_names_the_config_key() -> None:
    with pytest.raises(ValueError, match="model.seq_len=32"):
        tiny_model()(torch.zeros(1, 33, dtype=torch.long))
