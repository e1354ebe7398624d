"""`train.compile: true`: torch.compile per transformer block, as torchtitan does, applied from outside the model.

Why per block and not the whole model: the blocks are identical, so Dynamo traces one and reuses its code for
every layer (start-up does not grow with depth); and the pieces that must stay outside a graph stay outside.
Each block's `forward` is compiled, not the module call: the module's `__call__` (with DeepSpeed ZeRO-3's
fetch/release hooks) and activation checkpointing's wrapper run eagerly around it, and nothing distributed is
traced. ZeRO-3 is told to treat a block as one leaf (`set_z3_leaf_modules`): the block's hook gathers all of its
parameters at once, so no hook fires inside the compiled code (which would break the graph at every linear).

Compiled artefacts are cached by the library (inductor's FX-graph cache and AOTAutograd's cache): a relaunch
with the same shapes loads them instead of compiling. The cache lives under `TORCHINDUCTOR_CACHE_DIR`, which
this module points at `~/.cache/dspretrain/inductor` unless it is already set (torch's default is under /tmp,
which a reboot or a cluster's job cleanup empties).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

CACHE_DIR = Path("~/.cache/dspretrain/inductor").expanduser()


def use_persistent_cache() -> str:
    """Point inductor's caches at a folder that outlives /tmp, unless the environment chose one; return it."""
    return os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(CACHE_DIR))


def compile_blocks(model: torch.nn.Module, zero3: bool) -> int:
    """Compile the forward of every block of `model` (a pretrain.model.GPT) in place; return how many."""
    use_persistent_cache()
    if zero3:
        from deepspeed.utils import set_z3_leaf_modules

        set_z3_leaf_modules(model, [type(model.blocks[0])])
    for block in model.blocks:
        block.forward = torch.compile(block.forward)
    return len(model.blocks)
