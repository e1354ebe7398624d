"""Documents kept apart in packed sequences (model.doc_mask, model.doc_positions_reset) and the stability levers
(model.qk_norm, model.z_loss): each changes what it claims and nothing else. In-process, CPU, fp32."""

from __future__ import annotations

import pytest
import torch

from pretrain.config import ModelConfig, load_config
from pretrain.errors import ConfigError
from pretrain.model import GPT, find_documents, z_loss_term

EOS = 2
BASE = dict(vocab_size=96, seq_len=48, n_layer=2, n_head=4, d_model=32, eos_id=EOS)
LLAMA = dict(pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False, n_kv_head=2, tie_embeddings=False)


def model(**sets: object) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(**{**BASE, **sets})).eval()


def two_documents(first: int = 13, second: int = 27) -> tuple[torch.Tensor, torch.Tensor]:
    """A packed row [doc A ... EOS, doc B ...] and doc B alone; no EOS inside either document."""
    g = torch.Generator().manual_seed(1)
    a = torch.randint(3, 96, (first,), generator=g)
    a[-1] = EOS
    b = torch.randint(3, 96, (second,), generator=g)
    return torch.cat([a, b])[None], b[None]


@pytest.mark.parametrize(
    "sets",
    [
        dict(pos_emb="learned", doc_positions_reset=True),
        dict(pos_emb="sinusoidal", doc_positions_reset=True),
        dict(**LLAMA, doc_positions_reset=True),
        dict(**LLAMA),  # RoPE scores depend on relative positions only: no reset needed
    ],
    ids=["learned", "sinusoidal", "rope-reset", "rope"],
)
def test_a_document_packed_after_another_has_its_logits_alone(sets: dict) -> None:
    packed, alone = two_documents()
    gpt = model(doc_mask=True, **sets)
    with torch.no_grad():
        logits_packed, _ = gpt(packed)
        logits_alone, _ = gpt(alone)
        logits_first, _ = gpt(packed[:, :13])
    torch.testing.assert_close(logits_packed[:, 13:], logits_alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits_packed[:, :13], logits_first, rtol=1e-5, atol=1e-5)
    plain = model(**{k: v for k, v in sets.items() if k != "doc_positions_reset"})
    with torch.no_grad():
        crossing, _ = plain(packed)
    assert (crossing[:, 13:] - logits_alone).abs().max() > 1e-2  # without the mask, B sees A


def test_without_an_eos_the_document_mask_is_plain_causal_attention() -> None:
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(3, 96, (3, 48), generator=g)
    with torch.no_grad():
        masked, _ = model(doc_mask=True, doc_positions_reset=True, **LLAMA)(idx)
        plain, _ = model(**LLAMA)(idx)
    torch.testing.assert_close(masked, plain, rtol=1e-5, atol=1e-5)


def test_documents_are_found_from_the_eos_tokens() -> None:
    cfg = ModelConfig(**BASE, doc_mask=True, doc_positions_reset=True)
    idx = torch.tensor([[5, EOS, 7, 8, EOS, EOS, 9], [EOS, 4, 4, 4, 4, 4, EOS]])
    documents = find_documents(idx, cfg, use_flex=False)
    assert documents.doc_ids.tolist() == [[0, 0, 1, 1, 1, 2, 3], [0, 1, 1, 1, 1, 1, 1]]
    assert documents.positions.tolist() == [[0, 1, 0, 1, 2, 0, 0], [0, 0, 1, 2, 3, 4, 5]]
    mask = documents.dense_mask()[0, 0]
    assert mask[3].tolist() == [False, False, True, True, False, False, False]


def test_activation_checkpointing_keeps_the_document_mask() -> None:
    """The checkpointed blocks get the layout through the function they recompute: same loss and gradients."""
    packed, _ = two_documents()
    targets = torch.roll(packed, -1, dims=1)

    def recompute(fn, x):
        return torch.utils.checkpoint.checkpoint(fn, x, use_reentrant=False)

    grads = []
    for checkpointed in (False, True):
        gpt = model(doc_mask=True, doc_positions_reset=True, **LLAMA).train()
        if checkpointed:
            gpt.set_activation_checkpointing(recompute)
        _, loss = gpt(packed, targets)
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in gpt.parameters()]))
    assert grads[0][0] == grads[1][0]
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b)


def test_document_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="model.eos_id: model.doc_mask needs the EOS id"):
        ModelConfig(**{**BASE, "eos_id": None}, doc_mask=True)
    with pytest.raises(ConfigError, match="model.doc_positions_reset: needs model.doc_mask=true"):
        ModelConfig(**BASE, doc_positions_reset=True)


# --------------------------------------------------------------------------- QK-norm


def _scale_query_and_key_weights(gpt: GPT, factor: float) -> None:
    with torch.no_grad():
        for block in gpt.blocks:
            kv_width = gpt.cfg.n_kv_head * gpt.cfg.head_dim
            block.attn.qkv.weight[: gpt.cfg.d_model + kv_width] *= factor  # rows of q and k, not v


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys() -> None:
    idx = torch.randint(3, 96, (2, 48), generator=torch.Generator().manual_seed(3))
    for sets, invariant in ((dict(qk_norm=True), True), (dict(), False)):
        gpt = model(**LLAMA, **sets)
        with torch.no_grad():
            before, _ = gpt(idx)
            _scale_query_and_key_weights(gpt, 7.0)
            after, _ = gpt(idx)
        if invariant:
            torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
        else:
            assert (after - before).abs().max() > 1e-2


def test_qk_norm_adds_only_its_two_gains_per_layer() -> None:
    plain, normed = model(**LLAMA).state_dict(), model(**LLAMA, qk_norm=True).state_dict()
    added = sorted(set(normed) - set(plain))
    assert added == [f"blocks.{i}.attn.{n}.weight" for i in range(2) for n in ("k_norm", "q_norm")]
    assert set(plain) <= set(normed)
    assert all(bool((normed[k] == 1).all()) for k in added)  # gains start at 1: RMS-normalised q and k
    assert normed["blocks.0.attn.k_norm.weight"].numel() == 2 * 8  # n_kv_head x head_dim


# --------------------------------------------------------------------------- z-loss


def test_z_loss_adds_its_term_to_the_training_loss_only() -> None:
    idx = torch.randint(3, 96, (2, 48), generator=torch.Generator().manual_seed(4))
    targets = torch.roll(idx, -1, dims=1)
    targets[0, :5] = -100  # ignored targets are not scored by either term
    plain, with_z = model(), model(z_loss=1e-2)
    plain.train(), with_z.train()
    logits, loss = plain(idx, targets)
    logits_z, loss_z = with_z(idx, targets)
    assert torch.equal(logits, logits_z)
    flat = logits.float().reshape(-1, 96)
    lse = torch.logsumexp(flat, dim=-1)[targets.reshape(-1) != -100]
    assert loss_z.item() == pytest.approx(loss.item() + 1e-2 * (lse**2).mean().item(), rel=1e-6)
    assert z_loss_term(flat, targets.reshape(-1)).item() == pytest.approx((lse**2).mean().item(), rel=1e-6)
    plain.eval(), with_z.eval()
    assert plain(idx, targets)[1].item() == with_z(idx, targets)[1].item()  # validation loss: cross-entropy only


def test_z_loss_is_refused_with_the_chunked_loss() -> None:
    with pytest.raises(ConfigError, match="model.z_loss: the chunked loss"):
        load_config("debug", None, ["model.z_loss=1e-4", "train.loss_chunk_tokens=1024"])


def test_a_qk_norm_model_is_not_exported_without_its_gains() -> None:
    from pretrain.interop.hf import hf_family

    with pytest.raises(ConfigError, match="model.qk_norm=true: no Hugging Face architecture expresses this model"):
        hf_family(ModelConfig(**BASE, **LLAMA, qk_norm=True))
