"""Minimal reproducer of DeepSpeed 0.19.8's ZeRO-3 "invalid gradient ... expected shape compatible with [0]" abort.

Only torch and deepspeed: a 2-block MLP under ZeRO-3 with DeepSpeed's (reentrant) activation checkpointing, an
evaluation pass every `--eval-every` steps, and a thread that looks at the main thread's stack every `--sample-ms`
milliseconds, as a watchdog, sampling profiler or debugger does. With `--sampler hold` the thread keeps the frames it
sampled until its next look (what pretrain/watchdog.py did, for the main thread); `release` drops them at once
(what it does now); `off` starts no thread. On CUDA (DS_ACCELERATOR unset) it runs the GPU path: NCCL, FusedAdam,
overlap_comm (benchmarks/gpu_run.sh runs it there).

Why it aborts (RELIABILITY.md has the whole story): ZeRO-3's gradient hook calls
`deepspeed.runtime.utils.count_used_parameters_in_backward`, which asks torch for every parameter's gradient
accumulator (`torch.autograd.graph._get_grad_fn_or_grad_acc`). For a parameter that is partitioned at that moment
(numel 0) and has no accumulator yet, that call *creates* one whose input metadata is the partitioned shape [0].
It is meant to die when the function returns; a frame of the hook held by anyone keeps it alive, and the next
recomputation of that parameter's checkpointed block reuses it: its backward then fails autograd's shape check.
Right after an evaluation pass the prefetch trace is being recorded again, nothing is prefetched, and more
parameters are partitioned when the hook runs.

  DS_ACCELERATOR=cpu OMP_NUM_THREADS=1 python -m torch.distributed.run --nproc_per_node 2 \\
      benchmarks/zero3_invalid_gradient.py --steps 300 --sampler hold --sample-ms 2 [--bf16] [--seed 1]

Prints one JSON line on rank 0: {"aborted_at_step": N or null, "steps": ..., "sampler": ..., ...}; exit 1 on abort.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import deepspeed
import torch
import torch.nn as nn

D_MODEL, D_FF, VOCAB, SEQ, MICRO, ACCUM = 64, 256, 128, 32, 2, 2


def ds_config(bf16: bool, prefetch: bool, cuda: bool) -> dict:
    """ds_configs/zero3_cpu.json's ZeRO settings (tiny buckets, matrices partitioned: threshold 1000); without
    prefetch every parameter is partitioned again right after its use, as after an evaluation pass. On CUDA the
    GPU path of ds_configs/zero3_bf16.json: FusedAdam and overlap_comm."""
    bucket, reuse = (500000, 10000000) if prefetch else (0, 0)
    return {
        "train_micro_batch_size_per_gpu": MICRO,
        "gradient_accumulation_steps": ACCUM,
        "bf16": {"enabled": bf16},
        "zero_optimization": {
            "stage": 3,
            "overlap_comm": cuda,
            "contiguous_gradients": True,
            "reduce_bucket_size": 500000,
            "stage3_prefetch_bucket_size": bucket,
            "stage3_param_persistence_threshold": 1000,
            "stage3_max_live_parameters": 10000000,
            "stage3_max_reuse_distance": reuse,
        },
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": not cuda}},
        "steps_per_print": 1000000,
    }


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(D_MODEL, D_FF), nn.Linear(D_FF, D_MODEL)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.nn.functional.gelu(self.up(x)))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, D_MODEL)
        self.blocks = nn.ModuleList(Block() for _ in range(2))
        self.head = nn.Linear(D_MODEL, VOCAB)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        for block in self.blocks:
            x = deepspeed.checkpointing.checkpoint(block, x) if self.training else block(x)
        return nn.functional.cross_entropy(self.head(x).float().flatten(0, 1), targets.flatten())


def start_sampler(mode: str, interval_s: float) -> None:
    """A daemon thread that samples every thread's innermost frame; `hold` keeps them until the next sample. All
    threads: on CUDA the autograd engine runs the backward, ZeRO-3's hooks included, on its own device thread."""

    def hold() -> None:
        while True:
            frames = sys._current_frames()  # noqa: F841 (held across the sleep on purpose)
            time.sleep(interval_s)

    def release() -> None:
        while True:
            frames = sys._current_frames()
            del frames
            time.sleep(interval_s)

    if mode != "off":
        threading.Thread(target=hold if mode == "hold" else release, daemon=True).start()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--sampler", choices=("hold", "release", "off"), default="hold")
    p.add_argument("--sample-ms", type=float, default=2.0)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--prefetch", choices=("on", "off"), default="on", help="off: the state after an evaluation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    from deepspeed.accelerator import get_accelerator

    cuda = get_accelerator().device_name() == "cuda"
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", verbose=False)
    rank = torch.distributed.get_rank()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.manual_seed(args.seed)
    config = ds_config(args.bf16, args.prefetch == "on", cuda)
    with deepspeed.zero.Init(config_dict_or_path=config):
        model = Net()
    deepspeed.checkpointing.configure(None, num_checkpoints=len(model.blocks))
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
    start_sampler(args.sampler, args.sample_ms / 1000)
    data = torch.Generator().manual_seed(args.seed * 1000 + rank)
    aborted_at, error = None, None
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, VOCAB, (MICRO, SEQ + 1), generator=data).to(engine.device)
        try:
            for _ in range(ACCUM):  # engine.step() updates at the last micro-batch
                engine.backward(engine(idx[:, :-1], idx[:, 1:]))
                engine.step()
        except RuntimeError as err:
            aborted_at, error = step, str(err).splitlines()[0]
            break
        if step % args.eval_every == 0:
            engine.eval()
            with torch.no_grad():
                engine(idx[:, :-1], idx[:, 1:])
            engine.train()
    report = {"aborted_at_step": aborted_at, "steps": args.steps, "rank": rank, "sampler": args.sampler}
    report |= {"sample_ms": args.sample_ms, "bf16": args.bf16, "prefetch": args.prefetch, "seed": args.seed}
    report |= {"device": "cuda" if cuda else "cpu", "world_size": torch.distributed.get_world_size()}
    report["error"] = error
    if aborted_at is not None or rank == 0:
        print(json.dumps(report), flush=True)
    if aborted_at is not None:
        os._exit(1)  # the other rank waits in a collective; the launcher ends it
    return 0


if __name__ == "__main__":
    sys.exit(main())
