"""`pretrain evaluate RUN_OR_CKPT --data DIR`: validation loss and perplexity of a checkpoint, one process.

The windows are the trainer's own (`pretrain.data.validation_indices`: evenly spread, non-overlapping
seq_len+1 token samples of the validation split), so with the same --samples the numbers equal the `val_loss`
the training run logged for that step. Weights are consolidated to fp32 (pretrain/interop/consolidated.py); on a GPU
the forward runs under bf16 autocast. The loss is the mean next-token cross-entropy over every predicted token.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

from data_pipeline.shards import TokenStream
from pretrain.data import validation_batches, validation_indices
from pretrain.errors import PretrainError, UsageError
from pretrain.interop.consolidated import inference_model, load_consolidated, pick_device
from pretrain.metrics import perplexity


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module, stream: TokenStream, seq_len: int, indices: list[int], batch_size: int
) -> float:
    """Mean token cross-entropy (nats) over the given validation samples."""
    device = next(model.parameters()).device
    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    loss_sum, tokens = 0.0, 0
    for x, y, _ in validation_batches(stream, seq_len, indices, batch_size, rank=0, world_size=1):
        with autocast:
            _, loss = model(x.to(device), y.to(device))
        loss_sum += loss.item() * y.numel()
        tokens += y.numel()
    return loss_sum / tokens


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="run folder, its checkpoints/ folder, or one checkpoints/<tag> folder")
    parser.add_argument("--data", default=None, help="dataset folder (default: the run's data.path)")
    parser.add_argument("--samples", type=int, default=None, help="validation samples (default: data.val_samples)")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per forward (default: micro batch)")
    parser.add_argument("--split", default="validation", help="manifest split to evaluate")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")


def run(args: argparse.Namespace) -> int:
    if args.samples is not None and args.samples < 1:  # before minutes of checkpoint loading
        raise UsageError(f"--samples must be >= 1, got {args.samples}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    consolidated = load_consolidated(args.checkpoint)
    cfg = consolidated.cfg
    stream = TokenStream(Path(args.data or cfg.data.path), args.split)
    if stream.vocab_size > cfg.model.vocab_size:
        raise PretrainError(
            f"{stream.data_dir}: vocab {stream.vocab_size} > the model's {cfg.model.vocab_size}; "
            "evaluate on the dataset the run trained on"
        )
    samples = args.samples if args.samples is not None else cfg.data.val_samples
    indices = validation_indices(stream, cfg.model.seq_len, samples)
    model = inference_model(consolidated, pick_device(args.device)[0])
    loss = validation_loss(model, stream, cfg.model.seq_len, indices, args.batch_size or cfg.train.micro_batch_size)
    print(f"samples: {len(indices)}")
    print(f"tokens: {len(indices) * cfg.model.seq_len}")
    print(f"loss: {loss:.4f}")
    print(f"perplexity: {perplexity(loss):.2f}")
    return 0
