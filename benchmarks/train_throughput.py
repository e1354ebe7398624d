"""Training throughput of the DeepSpeed trainer against a plain-PyTorch step, lever by lever, in one run.

    DS_ACCELERATOR=cpu python benchmarks/train_throughput.py --preset debug --steps 10 --warmup 3
    python benchmarks/train_throughput.py --preset gpt3-1.3b --seq-len 2048 --micro-batch 8 \\
        --variants preset,ckpt_off,chunked_ce,zero2 --json-dir out/   # one H100/H200

Both sides train the same GPT (same preset, micro batch, sequence length, seed) on the same synthetic tokens:

- reference: the model alone, fp32 master weights, bf16 autocast, torch AdamW (fused on CUDA), SDPA attention,
             global-norm clipping, no DeepSpeed and no activation checkpointing (`--reference off` skips it);
- variants:  pretrain.engine.build_engine with the run's DeepSpeed JSON (bf16 forced on), then one lever of LEVERS
             changed: `preset` is the preset's own settings; engine(x, y) / engine.backward / engine.step.

Each side runs --warmup untimed steps, then --steps timed ones; every step copies its batch from pinned host memory
without blocking (as a data loader would) and ends in `loss.item()`. Printed per side, as `name_field: value`
lines: tokens/s (from the median step time, robust to a shared machine's stalls), model TFLOP/s (pretrain/flops.py
FLOPs per token x tokens/s; recomputation not counted), MFU against the device's dense bf16 peak, looked up by its
name (pretrain/metrics.py: 989 TFLOP/s for an H100 SXM or H200, 756 for an H100 PCIe; the JSON's peak_source says
which; on CPU only with --peak-tflops, else n/a), peak memory (CUDA: max allocated; CPU: max resident set size
sampled after each step), first and last loss, and `ratio_<variant>_over_reference`.

Each side runs in a process of its own (engine.destroy() does not free a DeepSpeed engine, so ten engines in one
process would not fit; a fresh process also gives each side the whole GPU and a real time limit). Each writes
DIR/<group>__<name>.json (--json-dir; a temporary folder otherwise), and a side whose JSON is already there is not
measured again. A side that runs out of memory or raises is recorded with status oom/error, one that outlives
--variant-timeout-s is killed and recorded as "timeout", and the next side runs; if this process is stopped
(SIGTERM), the side being measured is killed with it. World size 1 only: the reference has no data parallelism to
compare a multi-rank trainer with (tests/integration/test_two_rank_zero3.py checks 2 ranks).

`--largest DS_JSON` prints, largest first, the presets whose ZeRO-3 model states (DeepSpeed's estimator) plus a
rough activation allowance fit this machine with that JSON, for gpu_run.sh to try in turn.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHUNKED_CE_TOKENS = 4096  # rows per chunk: 4096 x 50,304 fp32 logits = 0.8 GB at a time for GPT-2's vocabulary


@dataclass(frozen=True)
class Lever:
    """One change against the preset's trainer settings (run-config overrides, DeepSpeed JSON keys, or code)."""

    what: str
    run_sets: tuple[str, ...] = ()  # `section.key=value` overrides of the run config
    ds_sets: tuple[tuple[str, object], ...] = ()  # dotted DeepSpeed JSON keys and their values
    compile: bool = False  # engine.compile() (with compile.deepcompile in ds_sets: DeepSpeed's compiler)
    pageable_copy: bool = False  # batches copied from pageable memory (a host sync per step) instead of pinned


LEVERS: dict[str, Lever] = {
    "preset": Lever("the preset's settings: ZeRO-3, bf16, the JSON's optimizer, its activation checkpointing"),
    "ckpt_every": Lever("activation checkpointing of every block", ("train.activation_checkpointing=every",)),
    "ckpt_every_k2": Lever(
        "activation checkpointing of every 2nd block",
        ("train.activation_checkpointing=every_k", "train.checkpoint_every_k=2"),
    ),
    "ckpt_off": Lever("no activation checkpointing", ("train.activation_checkpointing=off",)),
    "persist_all": Lever(
        "stage3_param_persistence_threshold 1e10: no parameter is ever released (no per-module gathers)",
        ds_sets=(("zero_optimization.stage3_param_persistence_threshold", 10**10),),
    ),
    "prefetch_2e8": Lever(
        "stage3_prefetch_bucket_size 2e8 and reduce_bucket_size 2e8 (4x the shipped 5e7)",
        ds_sets=(
            ("zero_optimization.stage3_prefetch_bucket_size", 2 * 10**8),
            ("zero_optimization.reduce_bucket_size", 2 * 10**8),
        ),
    ),
    "torch_adamw": Lever(
        "torch.optim.AdamW(fused=True) inside DeepSpeed instead of FusedAdam",
        ds_sets=(("optimizer.params.torch_adam", True), ("optimizer.params.fused", True)),
    ),
    "chunked_ce": Lever(
        f"cross-entropy in {CHUNKED_CE_TOKENS}-token chunks (pretrain/chunked_ce.py)",
        run_sets=(f"train.loss_chunk_tokens={CHUNKED_CE_TOKENS}",),
    ),
    "pageable_copy": Lever("batch copied from pageable host memory: a host sync each step", pageable_copy=True),
    "zero2": Lever("ZeRO stage 2 (parameters whole on every rank)", ds_sets=(("zero_optimization.stage", 2),)),
    "zero1": Lever("ZeRO stage 1 (parameters and gradients whole)", ds_sets=(("zero_optimization.stage", 1),)),
    "fp8": Lever(
        "train.precision=fp8: the blocks' linears in float8, tensorwise scales (torchao; pretrain/fp8.py)",
        ("train.precision=fp8", "train.fp8_recipe=tensorwise"),
    ),
    "fp8_rowwise": Lever(
        "train.precision=fp8 with rowwise scales", ("train.precision=fp8", "train.fp8_recipe=rowwise")
    ),
    "block_compile": Lever(
        "train.compile=true: torch.compile per block (pretrain/compile.py)", ("train.compile=true",)
    ),
    "fp8_block_compile": Lever(
        "fp8 (tensorwise) and torch.compile per block", ("train.precision=fp8", "train.compile=true")
    ),
    "doc_mask": Lever(
        "model.doc_mask=true: the document-mask attention path (FlexAttention block masks on CUDA); the synthetic "
        "tokens take id 0 as EOS, so documents end wherever it is drawn",
        ("model.doc_mask=true", "model.eos_id=0"),
    ),
    "compile": Lever("engine.compile(): torch.compile of the model through DeepSpeed", compile=True),
    "deepcompile": Lever(
        'DeepSpeed\'s compiler: "compile": {"deepcompile": true} and engine.compile()',
        ds_sets=(("compile.deepcompile", True),),
        compile=True,
    ),
}
REFERENCES = {
    "reference": "plain PyTorch: bf16 autocast, fp32 weights, fused AdamW, SDPA, no DeepSpeed",
    "reference_compile": "the reference with every block torch.compile'd (block.compile())",
}


@dataclass
class Measurement:
    """One side's timed steps, or why there are none (status oom/error/timeout)."""

    group: str
    name: str
    what: str
    status: str = "ok"
    tokens_per_s: float | None = None
    tflops: float | None = None
    mfu: float | None = None
    peak_mem_gib: float | None = None
    first_loss: float | None = None
    final_loss: float | None = None
    step_seconds: list[float] = field(default_factory=list)
    setup_seconds: float | None = None
    error: str | None = None
    context: dict = field(default_factory=dict)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="debug", help="model/training preset (debug, llama-debug, gpt3-1.3b, ...)")
    p.add_argument("--micro-batch", type=int, default=None, help="sequences per step (default: the preset's)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default: the preset's)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per side (allocator, kernels, caches)")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak bf16 TFLOP/s for MFU (CPU: none)")
    p.add_argument("--ds-config", default=None, help="DeepSpeed JSON (default: the preset's train.ds_config)")
    p.add_argument("--variants", default="preset", help=f"comma-separated, from: {', '.join(LEVERS)}")
    p.add_argument("--reference", default="reference", help=f"'off' or comma-separated, from: {', '.join(REFERENCES)}")
    p.add_argument("--json-dir", default=None, help="write one JSON per side here; sides already there are skipped")
    p.add_argument("--group", default=None, help="name prefix of the JSON files (default: preset_sSEQ_mbMICRO)")
    p.add_argument("--variant-timeout-s", type=float, default=None, help="a side running longer is killed: 'timeout'")
    p.add_argument("--largest", default=None, metavar="DS_JSON", help="print presets that fit with this JSON; exit")
    p.add_argument("--memory-gib", type=float, default=None, help="with --largest: device memory (default: measured)")
    p.add_argument("--host-gib", type=float, default=None, help="with --largest: host memory (default: measured)")
    p.add_argument("--candidates", default=None, help="with --largest: presets to consider (default: all)")
    p.add_argument("--check-only", action="store_true", help="build every side's configuration, measure nothing")
    p.add_argument("--side", default=None, help=argparse.SUPPRESS)  # internal: measure this one side in-process
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)
    for name in ("steps", "micro_batch", "seq_len"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    args.variants = [v for v in args.variants.split(",") if v]
    args.references = [] if args.reference == "off" else [r for r in args.reference.split(",") if r]
    unknown = [v for v in args.variants if v not in LEVERS] + [r for r in args.references if r not in REFERENCES]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; variants: {', '.join(LEVERS)}; references: {', '.join(REFERENCES)}")
    return args


# --------------------------------------------------------------------------- configuration


def run_config(args: argparse.Namespace, extra: tuple[str, ...] = ()):
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
        *([f"train.ds_config={args.ds_config}"] if args.ds_config else []),
        *args.overrides,
        *extra,
    ]
    return load_config(args.preset, None, overrides)


def set_dotted(tree: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def trainer_ds_config(cfg, lever: Lever, run_dir: Path) -> dict:
    """The trainer's resolved DeepSpeed JSON with bf16 on and the lever's keys set.

    On CPU (the rehearsal) a GPU JSON keeps its ZeRO settings but takes torch's AdamW, because FusedAdam and
    DeepSpeedCPUAdam need CUDA or a compiled op; offload's pinned memory is turned off (no CUDA to pin for).
    """
    from pretrain.engine import ds_config_for_run

    ds = ds_config_for_run(cfg, 1, run_dir)
    ds["bf16"] = {**ds.get("bf16", {}), "enabled": True}  # fp8 too: bf16 outside the float8 matmuls
    ds.pop("fp16", None)
    if not torch.cuda.is_available():
        ds["optimizer"]["params"]["torch_adam"] = True
        for offload in ("offload_optimizer", "offload_param"):
            if offload in ds["zero_optimization"]:
                ds["zero_optimization"][offload]["pin_memory"] = False
    for dotted, value in lever.ds_sets:
        set_dotted(ds, dotted, value)
    return ds


def group_name(args: argparse.Namespace, cfg) -> str:
    return args.group or f"{args.preset}_s{cfg.model.seq_len}_mb{cfg.train.micro_batch_size}"


# --------------------------------------------------------------------------- timing


def synthetic_batches(cfg, count: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed random token batches on the host (throughput does not depend on the text); the same for every side."""
    g = torch.Generator().manual_seed(seed)
    shape = (cfg.train.micro_batch_size, cfg.model.seq_len + 1)
    rows = [torch.randint(0, cfg.model.vocab_size, shape, generator=g) for _ in range(count)]
    return [(r[:, :-1].contiguous(), r[:, 1:].contiguous()) for r in rows]


def host_batches(batches: list, pinned: bool) -> list:
    """Pinned copies (CUDA only) so `to(device, non_blocking=True)` is a true asynchronous DMA."""
    if not (pinned and torch.cuda.is_available()):
        return batches
    return [(x.pin_memory(), y.pin_memory()) for x, y in batches]


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


def timed(result: Measurement, step: Callable, batches: list, warmup: int, device, flops: float, peak) -> None:
    """Run warmup steps, then time each of the rest; tokens/s from the median step time.

    The median, not the mean: on a shared machine one step stalled by another process should not move the
    number (each step ends in `.item()`, which waits for the device, so per-step times are real).
    """
    losses = [step(x, y) for x, y in batches[:warmup]]
    sync(device)
    timed_batches, peak_mem = batches[warmup:], memory_now(device)
    for x, y in timed_batches:
        start = time.perf_counter()
        losses.append(step(x, y))
        sync(device)
        result.step_seconds.append(time.perf_counter() - start)
        peak_mem = max(peak_mem, memory_now(device))
    result.tokens_per_s = timed_batches[0][0].numel() / statistics.median(result.step_seconds)
    result.tflops = result.tokens_per_s * flops / 1e12
    result.mfu = result.tflops / peak if peak else None
    result.peak_mem_gib = peak_mem
    result.first_loss, result.final_loss = losses[0], losses[-1]


def trainer_step(engine, device: torch.device, non_blocking: bool) -> Callable:
    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        loss = engine(x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking))[1]
        engine.backward(loss)
        engine.step()
        return loss.item()

    return step


def reference_step(model: torch.nn.Module, cfg, device: torch.device) -> Callable:
    """Plain PyTorch: bf16 autocast over fp32 weights, AdamW (fused), clipping, no DeepSpeed."""
    from pretrain.engine import decay_groups

    optim = torch.optim.AdamW(
        decay_groups(model, cfg.optim.weight_decay),
        lr=cfg.optim.lr,
        betas=cfg.optim.betas,
        eps=cfg.optim.eps,
        fused=True,
    )

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            _, loss = model(x, y)
        loss.backward()
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optim.step()
        optim.zero_grad(set_to_none=True)
        return loss.item()

    return step


# --------------------------------------------------------------------------- the two sides


def start_single_process_group() -> None:
    """World size 1 for DeepSpeed (gloo on CPU, nccl on CUDA) unless a launcher started this process."""
    from infra import launcher_env

    if launcher_env.launcher() == launcher_env.NONE:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from pretrain.engine import init_distributed

    _, world_size = init_distributed()
    if world_size != 1:
        raise SystemExit(f"train_throughput: world size {world_size}; run it as one process (the reference is 1 GPU)")


def measure_variant(args, name: str, batches: list, flops: float, peak, result: Measurement) -> None:
    from pretrain.engine import build_engine, zero_stage

    lever = LEVERS[name]
    cfg = run_config(args, lever.run_sets)
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        ds = trainer_ds_config(cfg, lever, Path(run_dir))
        result.context |= {
            "zero_stage": zero_stage(ds),
            "activation_checkpointing": cfg.train.activation_checkpointing,
            "optimizer": "torch AdamW" if ds["optimizer"]["params"].get("torch_adam") else "DeepSpeed default",
            "ds_config": str(cfg.train.ds_config),
            "ds_zero_optimization": {k: v for k, v in ds["zero_optimization"].items() if not k.startswith("_")},
        }
        torch.manual_seed(args.seed)
        engine = build_engine(cfg, ds)
        try:
            result.context["optimizer_class"] = type(getattr(engine.optimizer, "optimizer", engine.optimizer)).__name__
            result.context["loss_chunk_tokens"] = engine.module.loss_chunk_tokens
            if lever.compile:
                engine.compile()
            device = engine.device if isinstance(engine.device, torch.device) else torch.device(engine.device)
            reset_peak(device)
            result.setup_seconds = time.perf_counter() - started
            step = trainer_step(engine, device, non_blocking=not lever.pageable_copy)
            timed(result, step, host_batches(batches, pinned=not lever.pageable_copy), args.warmup, device, flops, peak)
        finally:
            engine.destroy()
            del engine


def measure_reference(args, name: str, batches: list, device: torch.device, flops: float, peak, result) -> None:
    from pretrain.model import GPT

    cfg = run_config(args)
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    with torch.device(device):  # built where it trains: initialising 1.3B parameters on the host takes seconds
        model = GPT(cfg.model).train()
    if name == "reference_compile":
        for block in model.blocks:
            block.compile()
    reset_peak(device)
    result.setup_seconds = time.perf_counter() - started
    timed(
        result, reference_step(model, cfg, device), host_batches(batches, pinned=True), args.warmup, device, flops, peak
    )


# --------------------------------------------------------------------------- one side, guarded


def measure_side(args, name: str, result: Measurement, json_path: Path) -> None:
    """In this (child) process: measure one side; an OOM or error becomes its status; the JSON is written either way."""
    from pretrain import flops as model_flops
    from pretrain.metrics import peak_tflops

    try:
        start_single_process_group()
        cfg = run_config(args)
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        flops = model_flops.flops_per_token(cfg.model, cfg.model.seq_len)
        peak = peak_tflops(args.peak_tflops)
        result.context["environment"] = environment(cfg, args, device, flops, peak)
        batches = synthetic_batches(cfg, args.warmup + args.steps, args.seed)
        if name in REFERENCES:
            measure_reference(args, name, batches, device, flops, peak, result)
        else:
            measure_variant(args, name, batches, flops, peak, result)
    except torch.OutOfMemoryError as err:
        result.status, result.error = "oom", str(err).splitlines()[0]
    except Exception as err:  # recorded in the JSON; the parent goes on with the next side
        message = f"{type(err).__name__}: {err}"
        result.status, result.error = (
            "error",
            message if len(message) < 3000 else f"{message[:1000]} ... {message[-2000:]}",
        )
        traceback.print_exc()
    write_json(result, json_path)
    with contextlib.suppress(Exception):
        torch.distributed.destroy_process_group()


def run_side(argv: list[str], result: Measurement, timeout_s: float | None, json_path: Path) -> Measurement:
    """Measure one side in a fresh process (DeepSpeed engines are not freed by engine.destroy(); one process each
    also gives every side the whole GPU and a real time limit). A child that hangs past timeout_s is killed with
    its process group and recorded as 'timeout'; one that dies without writing its JSON, as 'crashed'."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        *argv,
        "--side",
        result.name,
        "--json-dir",
        str(json_path.parent),
    ]
    child = subprocess.Popen(cmd, start_new_session=True)
    try:
        rc = child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_session(child)
        result.status, result.error = "timeout", f"no result within --variant-timeout-s {timeout_s:g}; killed"
        write_json(result, json_path)
        return result
    finally:  # this process was stopped (SIGTERM from gpu_run.sh's stage limit): the measurement goes with it
        if child.poll() is None:
            _kill_session(child)
    done = read_json(json_path)
    if done is None:
        result.status, result.error = "crashed", f"the measuring process exited with status {rc} and wrote no result"
        write_json(result, json_path)
        return result
    return done


def _kill_session(child: subprocess.Popen) -> None:
    """SIGKILL the measuring process and everything in its session (it started one of its own)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def write_json(result: Measurement, path: Path | None) -> None:
    if path is None:
        return
    from infra.files import write_text

    write_text(path, json.dumps(asdict(result), indent=1, default=str) + "\n")


def read_json(path: Path | None) -> Measurement | None:
    if path is None or not path.is_file():
        return None
    return Measurement(**json.loads(path.read_text()))


# --------------------------------------------------------------------------- report


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def environment(cfg, args, device: torch.device, flops: float, peak) -> dict:
    import deepspeed

    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor()})",
        "torch": torch.__version__,
        "deepspeed": deepspeed.__version__,
        "preset": args.preset,
        "micro_batch": cfg.train.micro_batch_size,
        "seq_len": cfg.model.seq_len,
        "steps": args.steps,
        "warmup": args.warmup,
        "model_flops_per_token": flops,
        "peak_tflops": peak,
        "peak_source": peak_source(args, device, peak),
    }


def peak_source(args, device: torch.device, peak: float | None) -> str:
    """Where the MFU's peak came from: --peak-tflops, or the device's name (an H100 PCIe is not an SXM)."""
    if args.peak_tflops:
        return "--peak-tflops"
    if device.type != "cuda":
        return "none: no peak for a CPU (pass --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    return f"the device name {name!r}" if peak else f"unknown device {name!r}: pass --peak-tflops"


def report(cfg, args, sides: list[Measurement]) -> None:
    """`name_field: value` lines (grep-able), one block per side, then each variant's ratio to the reference."""
    env = next((s.context["environment"] for s in sides if "environment" in s.context), {})
    print(f"device: {env.get('device', 'n/a')}  torch: {env.get('torch')}  deepspeed: {env.get('deepspeed')}")
    print(f"preset: {args.preset}  micro_batch: {cfg.train.micro_batch_size}  seq_len: {cfg.model.seq_len}")
    print(f"steps: {args.steps} timed after {args.warmup} warm-up")
    print(f"model_flops_per_token: {env.get('model_flops_per_token', float('nan')):.4g}")
    print(f"peak_tflops: {fmt(env.get('peak_tflops'), '.1f')} (from {env.get('peak_source', 'n/a')})")
    for side in sides:
        print(f"{side.name}_status: {side.status}")
        if side.status != "ok":
            print(f"{side.name}_error: {(side.error or '').replace(chr(10), ' ')[:300]}")
            continue
        print(f"{side.name}_tokens_per_s: {side.tokens_per_s:.1f}")
        print(f"{side.name}_tflops: {side.tflops:.4g}")
        print(f"{side.name}_mfu: {fmt(side.mfu, '.4f')}")
        print(f"{side.name}_peak_mem_gib: {side.peak_mem_gib:.3f}")
        print(f"{side.name}_first_loss: {side.first_loss:.4f}")
        print(f"{side.name}_final_loss: {side.final_loss:.4f}")
    for side in sides:
        if "ratio_over_reference" in side.context:
            print(f"ratio_{side.name}_over_reference: {side.context['ratio_over_reference']:.3f}")


# --------------------------------------------------------------------------- largest preset that fits


def largest_fitting(ds_json: str, device_gib: float, host_gib: float, candidates: list[str]) -> list[tuple]:
    """(preset, estimated device GiB, estimated host GiB) that fit at micro batch 1, largest model first.

    DeepSpeed's ZeRO-3 model-states estimator for one GPU, plus an allowance for activations with checkpointing
    (block inputs, one block's working set, the fp32 logits and their gradient at micro batch 1). A guide only:
    gpu_run.sh tries the presets in this order and the first that trains is the answer.
    """
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    from pretrain.config import load_config
    from pretrain.engine import load_ds_json
    from pretrain.flops import count_params
    from pretrain.plan import largest_layer_params

    zero = load_ds_json(ds_json)["zero_optimization"]
    offload_opt = zero.get("offload_optimizer", {}).get("device", "none") == "cpu"
    offload_param = zero.get("offload_param", {}).get("device", "none") == "cpu"
    fits = []
    for name in candidates:
        m = load_config(name).model
        params = count_params(m)
        host, device, _ = estimate_zero3_model_states_mem_needs(
            params, largest_layer_params(m), 1, 1, cpu_offload=offload_opt, cpu_offload_params=offload_param
        )
        tokens = m.seq_len
        activations = tokens * m.d_model * 2 * (m.n_layer + 34) + tokens * m.padded_vocab_size * 12
        need_device, need_host = (device + activations) / 2**30, host / 2**30
        if need_device <= 0.9 * device_gib and need_host <= 0.8 * host_gib:
            fits.append((name, params, need_device, need_host))
    fits.sort(key=lambda row: -row[1])
    return [(name, dev, host) for name, _, dev, host in fits]


def print_largest(args) -> int:
    import psutil

    from pretrain.presets import PRESETS

    device_gib = args.memory_gib
    if device_gib is None:
        device_gib = torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else 0.0
    host_gib = args.host_gib if args.host_gib is not None else psutil.virtual_memory().total / 2**30
    candidates = args.candidates.split(",") if args.candidates else list(PRESETS)
    for name, dev, host in largest_fitting(args.largest, device_gib, host_gib, candidates):
        print(f"{name} {dev:.1f} {host:.1f}")
    return 0


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    from pretrain.errors import ConfigError

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: run_side's finally kills the measurement
    try:
        if args.largest:
            return print_largest(args)
        cfg = run_config(args)
        for name in args.variants:
            lever = LEVERS[name]
            with tempfile.TemporaryDirectory() as run_dir:
                trainer_ds_config(run_config(args, lever.run_sets), lever, Path(run_dir))
    except ConfigError as err:
        print(f"train_throughput: error: {err}", file=sys.stderr)
        return 2
    group = group_name(args, cfg)
    if args.side:  # the child: one side, in this process
        what = REFERENCES.get(args.side) or LEVERS[args.side].what
        measure_side(
            args, args.side, Measurement(group, args.side, what), Path(args.json_dir) / f"{group}__{args.side}.json"
        )
        return 0
    if args.check_only:
        print(f"check-only: {args.preset} {[*args.references, *args.variants]} configurations resolve")
        return 0
    with contextlib.ExitStack() as stack:
        json_dir = Path(args.json_dir or stack.enter_context(tempfile.TemporaryDirectory()))
        json_dir.mkdir(parents=True, exist_ok=True)
        sides = []
        for name in [*args.references, *args.variants]:
            path = json_dir / f"{group}__{name}.json"
            done = read_json(path)
            if done is not None:  # measured by an earlier run of this group (gpu_run.sh's rerun): not again
                sides.append(done)
                continue
            what = REFERENCES.get(name) or LEVERS[name].what
            print(f"== {group} {name}: {what}", flush=True)
            sides.append(run_side(argv, Measurement(group, name, what), args.variant_timeout_s, path))
        add_ratios(sides, json_dir)
    report(cfg, args, sides)
    return 0


def add_ratios(sides: list[Measurement], json_dir: Path) -> None:
    """Each variant's tokens/s over the reference's (same group, same machine), into its JSON."""
    reference = next((s for s in sides if s.name == "reference" and s.status == "ok"), None)
    for side in sides:
        if reference and side.name in LEVERS and side.status == "ok":
            side.context["reference_tokens_per_s"] = reference.tokens_per_s
            side.context["ratio_over_reference"] = side.tokens_per_s / reference.tokens_per_s
            write_json(side, json_dir / f"{side.group}__{side.name}.json")


if __name__ == "__main__":
    sys.exit(main())
