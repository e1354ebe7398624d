"""The tiny launches' global batch as one micro-batch per rank, for tests whose cost is forward/backward passes.

support/launch.py's runs take the debug preset's 1024-token step at seq_len 32: 32 sequences, as 8 micro-batches
of 2 per rank at 2 ranks. One micro-batch of 16 per rank trains on the same sequences (the sample order depends on
global positions only) with the same mean gradient, so the losses agree to float rounding (~1e-6 relative), at an
eighth of the passes through ZeRO-3's gather hooks and activation checkpointing.
"""

from __future__ import annotations

GLOBAL_BATCH_SEQUENCES = 1024 // 32  # the debug preset's train.global_batch_tokens over launch.py's model.seq_len


def one_micro_batch(world_size: int) -> str:
    """The --set that makes each rank's share of the global batch a single micro-batch."""
    return f"train.micro_batch_size={GLOBAL_BATCH_SEQUENCES // world_size}"
