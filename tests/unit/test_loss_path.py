"""What the loss path holds: no logits kept through backward, the auto choice of the chunked loss, the plan's count."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from pretrain.chunked_ce import (
    AUTO_CHUNK_LINE_BYTES,
    auto_chunk_tokens,
    chunked_loss_bytes,
    loss_chunk_tokens,
    plain_loss_bytes,
)
from pretrain.config import load_config
from pretrain.errors import ConfigError
from pretrain.model import GPT
from pretrain.plan import fp8_line, loss_path_line


def _logits_alive_at_backward(keep_logits: bool) -> bool:
    """Run the trainer's forward idiom; is the LM head's padded output still alive when backward starts?"""
    torch.manual_seed(0)
    model = GPT(load_config("debug", None, ["model.vocab_size=200"]).model)  # padded to 256: the slice is a view
    head_out: list[weakref.ref] = []
    model.lm_head.register_forward_hook(lambda mod, inp, out: head_out.append(weakref.ref(out)))
    idx = torch.randint(0, 200, (2, 64))
    if keep_logits:
        logits, loss = model(idx, idx)
    else:
        loss = model(idx, idx)[1]  # pretrain/train.py: Trainer.train_step
    gc.collect()
    alive = head_out[0]() is not None
    loss.backward()
    return alive


def test_trainer_idiom_frees_the_logits_before_backward() -> None:
    assert _logits_alive_at_backward(keep_logits=True)  # the old `_, loss = ...`: the view kept them
    assert not _logits_alive_at_backward(keep_logits=False)


def test_auto_chunks_exactly_from_the_line() -> None:
    vocab = 50257
    tokens_at_line = -(-AUTO_CHUNK_LINE_BYTES // (12 * vocab))
    assert loss_chunk_tokens(None, tokens_at_line - 1, vocab) == 0
    assert loss_chunk_tokens(None, tokens_at_line, vocab) == auto_chunk_tokens(vocab) == 1024
    assert loss_chunk_tokens(0, 10**6, vocab) == 0 and loss_chunk_tokens(512, 8, vocab) == 512  # explicit wins
    assert auto_chunk_tokens(128256) == 512 and 4 * 512 * 128256 <= 2**28


@pytest.mark.parametrize(
    ("preset", "chunked"), [("debug", False), ("llama-debug", False), ("gpt2-124m", True), ("gpt3-1.3b", True)]
)
def test_presets_chunk_where_the_plain_loss_is_large(preset: str, chunked: bool) -> None:
    cfg = load_config(preset)
    tokens = cfg.train.micro_batch_size * cfg.model.seq_len
    assert bool(loss_chunk_tokens(cfg.train.loss_chunk_tokens, tokens, cfg.model.vocab_size)) is chunked


def test_chunked_path_holds_a_fraction_of_the_plain_one_at_gpt3_1_3b() -> None:
    """The issue's numbers: micro batch 8 x 2048 tokens x 50,257 = ~10 GB plain; chunked about a ninth of it."""
    tokens, vocab = 8 * 2048, 50257
    plain = plain_loss_bytes(tokens, vocab)
    assert plain == pytest.approx(9.9e9, rel=0.01)
    chunked = chunked_loss_bytes(tokens, vocab, 50304, 2048, 1024)
    assert chunked < plain / 8
    line = loss_path_line(load_config("gpt3-1.3b"))
    assert (
        line
        == "chunked, 1024 tokens a chunk (auto: chunked from 1 GiB of plain): 1.12 GiB per micro-batch (plain: 9.20 GiB)"
    )


def test_plan_names_an_explicit_plain_loss() -> None:
    line = loss_path_line(load_config("gpt3-1.3b", None, ["train.loss_chunk_tokens=0"]))
    assert line == "plain cross-entropy (train.loss_chunk_tokens): 9.20 GiB of fp32 temporaries per micro-batch"


def test_plan_counts_what_fp8_changes() -> None:
    with_ac = fp8_line(load_config("gpt3-1.3b", None, ["train.precision=fp8"]))
    assert with_ac.startswith("weights, gradients and optimizer states unchanged")
    assert "0.14 GiB of float8 casts" in with_ac  # 8 x 2048 x 8192 input + 2048 x 8192 weight, 1 byte each
    no_ac = fp8_line(load_config("gpt3-1.3b", None, ["train.precision=fp8", "train.activation_checkpointing=off"]))
    assert "+ 2.25 GiB: with no activation checkpointing" in no_ac  # 2 bytes x 1.21B non-embedding parameters


def test_negative_chunk_is_refused_naming_auto() -> None:
    with pytest.raises(ConfigError, match=r"train\.loss_chunk_tokens.*null \(auto\)"):
        load_config("debug", None, ["train.loss_chunk_tokens=-1"])
