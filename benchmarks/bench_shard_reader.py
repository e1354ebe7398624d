"""Random training windows through TokenStream vs. slicing one raw numpy memmap of the same tokens.

Anchor: `memmap[s : s + 2049].astype(int64)` on a flat .bin file (Megatron-style, the fastest possible reader).
Ours: `TokenStream.window(s, 2049).astype(int64)` over many Arrow shards (binary search over shard starts, a
copy only when a window crosses a shard edge). Target: ours >= 0.5x the anchor. The `.astype(int64)` is the copy
a data loader makes anyway (token ids become an int64 tensor).

Also prints what one H200 consumes training a 1.3B GPT at 40% MFU, to show the reader's headroom:
tokens/s = 0.4 * 989e12 / pretrain.flops.flops_per_token(gpt3-1.3b)  (PaLM's FLOPs per token, fwd+bwd; the
import does not pull in torch).

    .venv/bin/python benchmarks/bench_shard_reader.py [--tokens 50_000_000] [--windows 200_000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from data_pipeline.shards import ShardWriter, TokenStream, split_entry, write_manifest
from pretrain.config import load_config
from pretrain.flops import flops_per_token

SEQ = 2049
H200_BF16_DENSE_FLOPS = 989e12


def h200_tokens_per_s(mfu: float = 0.4) -> float:
    return mfu * H200_BF16_DENSE_FLOPS / flops_per_token(load_config("gpt3-1.3b").model)


def build(root: Path, tokens: int, shard_mb: int) -> np.ndarray:
    """Random docs (mean 1000 tokens) into shards of shard_mb and a flat .bin with the same stream."""
    rng = np.random.default_rng(0)
    stream = rng.integers(0, 32000, size=tokens, dtype=np.uint16)
    cuts = np.sort(rng.choice(np.arange(1, tokens), size=tokens // 1000, replace=False))
    writer = ShardWriter(root / "shards", "train", vocab_size=32000, eos_id=2, tokenizer_sha256="0" * 64,
                         target_bytes=shard_mb << 20)  # fmt: skip
    for i, doc in enumerate(np.split(stream, cuts)):
        writer.add(str(i), doc)
    splits = {"train": split_entry(writer.close())}
    write_manifest(root, {"format": "arrow-token-shards/v1", "vocab_size": 32000, "eos_id": 2, "splits": splits})
    stream.tofile(root / "flat.bin")
    return stream


def tokens_per_s(read, starts: np.ndarray) -> float:
    started = time.perf_counter()
    for s in starts:
        read(int(s))
    return len(starts) * SEQ / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=50_000_000)
    parser.add_argument("--windows", type=int, default=200_000)
    parser.add_argument("--shard-mb", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stream = build(root, args.tokens, args.shard_mb)
        flat = np.memmap(root / "flat.bin", dtype=np.uint16, mode="r").view(np.ndarray)  # no subclass overhead
        ts = TokenStream(root, "train")
        starts = np.random.default_rng(1).integers(0, args.tokens - SEQ, size=args.windows)
        for s in starts[:1000]:  # same bytes, or the comparison means nothing
            assert np.array_equal(ts.window(int(s), SEQ), stream[s : s + SEQ])
        rounds = [  # alternate, so load from other processes on a shared machine hits both alike
            (
                tokens_per_s(lambda s: flat[s : s + SEQ].astype(np.int64), starts),
                tokens_per_s(lambda s: ts.window(s, SEQ).astype(np.int64), starts),
            )
            for _ in range(3)
        ]
        anchor, ours = max(r[0] for r in rounds), max(r[1] for r in rounds)
        shards = len(ts._tokens)
    need = h200_tokens_per_s()
    print(f"{args.tokens} tokens in {shards} shards, {args.windows} random windows of {SEQ} tokens")
    print(f"anchor  numpy memmap slice      {anchor / 1e6:9.1f} M tokens/s")
    print(f"ours    TokenStream.window      {ours / 1e6:9.1f} M tokens/s")
    print(f"ratio ours/anchor: {ours / anchor:.2f}x (target >= 0.50)")
    print(f"one H200, 1.3B GPT at 40% MFU consumes {need / 1e3:.1f} k tokens/s -> reader headroom {ours / need:,.0f}x")
    return 0 if ours / anchor >= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
