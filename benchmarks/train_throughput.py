"""Training throughput of the DeepSpeed ZeRO-3 bf16 trainer against a plain-PyTorch step, in one run.

    DS_ACCELERATOR=cpu python benchmarks/train_throughput.py --preset debug --steps 10 --warmup 3
    python benchmarks/train_throughput.py --preset gpt3-1.3b --seq-len 2048 --micro-batch 8   # one H100/H200

Both sides train the same GPT (same preset, micro batch, sequence length, seed) on the same synthetic tokens:

- trainer:   pretrain.engine.build_engine with the run's DeepSpeed JSON forced to ZeRO-3 + bf16 (activation
             checkpointing as the preset sets it), engine(x, y) / engine.backward / engine.step;
- reference: the model alone, fp32 master weights, bf16 autocast, torch AdamW (fused on CUDA), SDPA attention,
             global-norm clipping, no DeepSpeed and no activation checkpointing.

Each side runs --warmup untimed steps, then --steps timed ones. Printed per side: tokens/s (from the median step
time, robust to a shared machine's stalls), model TFLOP/s
(pretrain/flops.py FLOPs per token x tokens/s; recomputation not counted), MFU against the device's dense bf16
peak (989 TFLOP/s for H100/H200; on CPU only with --peak-tflops, else n/a) and peak memory (CUDA: max allocated;
CPU: max resident set size sampled after each step). The last line is the anchor ratio trainer/reference.
World size 1 only: the reference has no data parallelism to compare a multi-rank trainer against.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass
class Measurement:
    """One side's timed steps."""

    name: str
    tokens_per_s: float
    tflops: float
    mfu: float | None
    peak_mem_gib: float
    final_loss: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="debug", help="model/training preset (debug, llama-debug, gpt3-1.3b, ...)")
    p.add_argument("--micro-batch", type=int, default=None, help="sequences per step (default: the preset's)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default: the preset's)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per side (allocator, kernels, caches)")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak bf16 TFLOP/s for MFU (CPU: none)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)
    for name in ("steps", "micro_batch", "seq_len"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def run_config(args: argparse.Namespace):
    """The preset with this benchmark's shape: one micro batch per step (no accumulation), world size 1."""
    from pretrain.config import load_config

    base = load_config(args.preset)
    micro = args.micro_batch or base.train.micro_batch_size
    seq = args.seq_len or base.model.seq_len
    overrides = [
        f"model.seq_len={seq}",
        f"train.micro_batch_size={micro}",
        f"train.global_batch_tokens={micro * seq}",
        f"train.max_steps={args.warmup + args.steps + 1}",
        f"optim.warmup_steps={min(base.optim.warmup_steps, args.warmup + args.steps)}",
        "log.tensorboard=false",
        "log.csv=false",
        *args.overrides,
    ]
    return load_config(args.preset, None, overrides)


def zero3_bf16_config(cfg, run_dir: Path) -> dict:
    """The trainer's resolved DeepSpeed JSON (CPU variant on CPU), forced to ZeRO-3 + bf16 as benchmarked."""
    from pretrain.engine import ds_config_for_run

    if not torch.cuda.is_available() and Path(cfg.train.ds_config).name != "zero3_cpu.json":
        cfg.train.ds_config = str(ROOT / "ds_configs" / "zero3_cpu.json")  # FusedAdam needs CUDA
    ds = ds_config_for_run(cfg, 1, run_dir)
    ds["bf16"] = {**ds.get("bf16", {}), "enabled": True}
    ds.pop("fp16", None)
    ds["zero_optimization"]["stage"] = 3
    return ds


def synthetic_batches(cfg, count: int, device: torch.device, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed random token batches (throughput does not depend on the text); the same for both sides."""
    g = torch.Generator().manual_seed(seed)
    shape = (cfg.train.micro_batch_size, cfg.model.seq_len + 1)
    rows = [torch.randint(0, cfg.model.vocab_size, shape, generator=g) for _ in range(count)]
    return [(r[:, :-1].contiguous().to(device), r[:, 1:].contiguous().to(device)) for r in rows]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def memory_now(device: torch.device) -> float:
    """GiB: CUDA peak allocated since the last reset, or this process's current resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**30


def timed(
    name: str, step: Callable, batches: list, warmup: int, device: torch.device, flops: float, peak: float | None
) -> Measurement:
    """Run warmup steps, then time each of the rest; tokens/s from the median step time.

    The median, not the mean: on a shared machine one step stalled by another process should not move the
    number (each step ends in `.item()`, which waits for the device, so per-step times are real).
    """
    for x, y in batches[:warmup]:
        step(x, y)
    sync(device)
    timed_batches, peak_mem, loss, seconds = batches[warmup:], memory_now(device), float("nan"), []
    for x, y in timed_batches:
        start = time.perf_counter()
        loss = step(x, y)
        sync(device)
        seconds.append(time.perf_counter() - start)
        peak_mem = max(peak_mem, memory_now(device))
    tokens_per_s = timed_batches[0][0].numel() / statistics.median(seconds)
    tflops = tokens_per_s * flops / 1e12
    return Measurement(name, tokens_per_s, tflops, tflops / peak if peak else None, peak_mem, float(loss))


def trainer_step(engine) -> Callable:
    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        _, loss = engine(x, y)
        engine.backward(loss)
        engine.step()
        return loss.item()

    return step


def reference_step(model: torch.nn.Module, cfg, device: torch.device) -> Callable:
    """Plain PyTorch: bf16 autocast over fp32 weights, AdamW (fused on CUDA), clipping, no DeepSpeed."""
    from pretrain.engine import decay_groups

    optim = torch.optim.AdamW(
        decay_groups(model, cfg.optim.weight_decay),
        lr=cfg.optim.lr,
        betas=cfg.optim.betas,
        eps=cfg.optim.eps,
        fused=device.type == "cuda",
    )

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            _, loss = model(x, y)
        loss.backward()
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optim.step()
        optim.zero_grad(set_to_none=True)
        return loss.item()

    return step


def start_single_process_group() -> None:
    """World size 1 for DeepSpeed (gloo on CPU, nccl on CUDA) unless a launcher already set RANK."""
    if "RANK" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from pretrain.engine import init_distributed

    _, world_size = init_distributed()
    if world_size != 1:
        raise SystemExit(f"train_throughput: world size {world_size}; run it as one process (the reference is 1 GPU)")


def measure_trainer(cfg, args, batches, flops: float, peak: float | None) -> Measurement:
    from pretrain.engine import build_engine

    with tempfile.TemporaryDirectory() as run_dir:
        ds = zero3_bf16_config(cfg, Path(run_dir))
        torch.manual_seed(args.seed)
        engine = build_engine(cfg, ds)
        device = engine.device if isinstance(engine.device, torch.device) else torch.device(engine.device)
        reset_peak(device)
        moved = [(x.to(device), y.to(device)) for x, y in batches]
        result = timed("trainer", trainer_step(engine), moved, args.warmup, device, flops, peak)
        engine.destroy()
    return result


def measure_reference(cfg, args, batches, device: torch.device, flops: float, peak: float | None) -> Measurement:
    from pretrain.model import GPT

    torch.manual_seed(args.seed)
    model = GPT(cfg.model).to(device).train()
    reset_peak(device)
    result = timed("reference", reference_step(model, cfg, device), batches, args.warmup, device, flops, peak)
    del model
    return result


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def report(cfg, args, device: torch.device, flops: float, peak: float | None, sides: list[Measurement]) -> None:
    """`name: value` lines (grep-able), one block per side, then the anchor ratio."""
    trainer, reference = sides
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}")
    print(f"preset: {args.preset}  micro_batch: {cfg.train.micro_batch_size}  seq_len: {cfg.model.seq_len}")
    print(
        f"steps: {args.steps} timed after {args.warmup} warm-up  activation_checkpointing (trainer): "
        f"{cfg.train.activation_checkpointing}"
    )
    print(f"model_flops_per_token: {flops:.4g}  peak_tflops: {fmt(peak, '.1f')}")
    for side in sides:
        print(f"{side.name}_tokens_per_s: {side.tokens_per_s:.1f}")
        print(f"{side.name}_tflops: {side.tflops:.4g}")
        print(f"{side.name}_mfu: {fmt(side.mfu, '.4f')}")
        print(f"{side.name}_peak_mem_gib: {side.peak_mem_gib:.3f}")
        print(f"{side.name}_final_loss: {side.final_loss:.4f}")
    print(f"ratio_trainer_over_reference: {trainer.tokens_per_s / reference.tokens_per_s:.3f}")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    from pretrain import flops as model_flops
    from pretrain.config import ConfigError
    from pretrain.metrics import peak_tflops

    args = parse_args(argv)
    try:
        cfg = run_config(args)
    except ConfigError as err:
        print(f"train_throughput: error: {err}", file=sys.stderr)
        return 2
    start_single_process_group()
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    flops = model_flops.flops_per_token(cfg.model, cfg.model.seq_len)
    peak = peak_tflops(args.peak_tflops)
    batches = synthetic_batches(cfg, args.warmup + args.steps, torch.device("cpu"), args.seed)
    trainer = measure_trainer(cfg, args, batches, flops, peak)
    reference = measure_reference(cfg, args, [(x.to(device), y.to(device)) for x, y in batches], device, flops, peak)
    report(cfg, args, device, flops, peak, [trainer, reference])
    with contextlib.suppress(Exception):
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
