"""The cost of keeping packed documents apart (model.doc_mask) against plain causal attention.

Anchor: the same model without doc_mask (SDPA with is_causal, which picks flash/efficient kernels on GPU).
Ours: doc_mask=true on sequences packed from documents of `--doc-tokens` mean length (each ends with EOS).
On CPU that is SDPA with a dense (B, 1, T, T) boolean mask; on CUDA FlexAttention's block masks (compiled once,
before timing), whose cost falls as documents get shorter because whole blocks outside a document are skipped.
Times one forward + backward of a Llama-shaped model (median of `--repeats`; CPU time on CPU, so run it with
OMP_NUM_THREADS=1 for a per-core figure), and prints the ratio.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_doc_mask.py [--seq 1024] [--batch 4] [--doc-tokens 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pretrain.config import ModelConfig
from pretrain.model import GPT

EOS = 2


def packed_batch(batch: int, seq: int, doc_tokens: int, vocab: int, device: torch.device) -> torch.Tensor:
    """Random tokens with an EOS ending a document every ~doc_tokens tokens (exponential lengths)."""
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(3, vocab, (batch, seq), generator=g)
    ends = torch.rand((batch, seq), generator=g) < 1.0 / doc_tokens
    return idx.masked_fill(ends, EOS).to(device)


def step_seconds(model: GPT, idx: torch.Tensor, repeats: int) -> float:
    """Median seconds of one forward + backward (after two warm-up steps: compilation, allocator). On CPU the
    process's CPU time, not wall time: on a shared machine the wall clock measures the neighbours."""
    clock = time.perf_counter if idx.is_cuda else time.process_time
    targets = torch.roll(idx, -1, dims=1)
    times = []
    for i in range(repeats + 2):
        if idx.is_cuda:
            torch.cuda.synchronize()
        start = clock()
        _, loss = model(idx, targets)
        loss.backward()
        if idx.is_cuda:
            torch.cuda.synchronize()
        if i >= 2:
            times.append(clock() - start)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--doc-tokens", type=int, default=256)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shape = dict(vocab_size=4096, seq_len=args.seq, n_layer=args.layers, n_head=args.d_model // 64)
    shape |= dict(d_model=args.d_model, pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False, eos_id=EOS)
    idx = packed_batch(args.batch, args.seq, args.doc_tokens, 4096, device)
    results = {}
    for name, sets in (("causal", {}), ("doc_mask", {"doc_mask": True, "doc_positions_reset": True})):
        torch.manual_seed(0)
        model = GPT(ModelConfig(**shape, **sets)).to(device).train()
        with torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"):
            results[name] = step_seconds(model, idx, args.repeats)
    docs = int((idx == EOS).sum()) + args.batch
    print(f"device {device.type}, batch {args.batch} x {args.seq} tokens, {docs} documents, {args.layers} layers")
    print(f"anchor causal (SDPA is_causal)   {results['causal'] * 1e3:9.1f} ms per forward+backward")
    kind = "FlexAttention block mask" if device.type == "cuda" else "SDPA dense mask"
    print(f"doc_mask ({kind})        {results['doc_mask'] * 1e3:9.1f} ms per forward+backward")
    print(f"ratio doc_mask / causal: {results['doc_mask'] / results['causal']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
