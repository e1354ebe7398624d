"""Training metrics: throughput, TFLOP/s and MFU per GPU, memory; written to RUN/metrics.csv, tensorboard and
(log.wandb) Weights & Biases.

MFU = achieved model FLOP/s per GPU / the GPU's peak dense bf16 FLOP/s. The model FLOPs per token come from
pretrain/flops.py (6N + attention, PaLM convention), so activation-checkpoint recomputation is *not* counted:
MFU measures useful work.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from infra import launcher_env
from pretrain.config import LogConfig

if TYPE_CHECKING:  # types only: `pretrain plot` reads metrics.csv through this module without DeepSpeed or wandb
    from deepspeed.monitor.monitor import MonitorMaster
    from wandb.sdk.wandb_run import Run as WandbRun

# A metrics row: column -> value; None leaves the cell blank (no MFU without a peak, say).
Row = dict[str, float | None]

# Peak dense bf16 tensor-core TFLOP/s per device (vendor datasheets, no sparsity).
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "H800": 989.0,
    "GH200": 989.0,
    "A100": 312.0,
    "A800": 312.0,
    "A10G": 70.0,
    "L40S": 362.0,
    "L4": 121.0,
    "V100": 125.0,
    "MI300X": 1307.0,
    "MI250X": 383.0,
    "B200": 2250.0,
}

CSV_COLUMNS = [
    "step",
    "consumed_tokens",
    "loss",
    "perplexity",
    "lr",
    "grad_norm",
    "tokens_per_s",
    "tflops_per_gpu",
    "mfu",
    "mem_gib",
    "skipped_steps",
    "loss_spikes",
    "val_loss",
    "val_perplexity",
]


def peak_tflops(override: float | None = None) -> float | None:
    """The local device's peak bf16 TFLOP/s: `log.peak_tflops` if set, else looked up by name; None on CPU."""
    import torch  # here, not at the top: `pretrain plot` reads metrics.csv through this module without torch

    if override:
        return float(override)
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name().upper()
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_TFLOPS[key]
    return None


def perplexity(mean_loss: float) -> float:
    """exp(mean next-token cross-entropy in nats): inf for a diverged run (loss too large or inf), nan for nan.

    The one perplexity of the project (trainer, metrics.csv, `pretrain evaluate`): a loss past exp's range is a
    model that diverged, and its perplexity really is unbounded, so it is inf, never a capped finite number.
    """
    try:
        return math.exp(mean_loss)
    except OverflowError:
        return float("inf")


def memory_gib() -> float:
    """Peak accelerator memory this process allocated (GiB); resident set size on CPU."""
    import torch  # here, not at the top: see peak_tflops

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return psutil.Process(os.getpid()).memory_info().rss / 2**30


def throughput(tokens: int, seconds: float, flops_per_token: float, world_size: int, peak: float | None) -> Row:
    """tokens/s (all ranks), model TFLOP/s per GPU and MFU (None without a peak)."""
    tokens_per_s = tokens / max(seconds, 1e-9)
    tflops = tokens_per_s * flops_per_token / world_size / 1e12
    return {"tokens_per_s": tokens_per_s, "tflops_per_gpu": tflops, "mfu": tflops / peak if peak else None}


class TrainClock:
    """Seconds spent inside training steps, and how many: tokens/s and MFU count these only, so evaluation and
    checkpoint time never lowers the throughput of the steps around them."""

    def __init__(self) -> None:
        self.seconds, self.steps = 0.0, 0

    @contextlib.contextmanager
    def timing(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start
            self.steps += 1


def log0(message: str) -> None:
    """Print on rank 0 only (also before init: the launcher's variables name the rank)."""
    if launcher_env.global_rank() == 0:
        print(message, flush=True)


def console_line(step: int, max_steps: int, values: Row) -> str:
    """One plain line per log interval (no carriage returns: log files stay line-oriented)."""
    mfu = f"{values['mfu']:.1%}" if values.get("mfu") is not None else "n/a"
    return (
        f"step {step}/{max_steps} | loss {values['loss']:.4f} | lr {values['lr']:.3e} | grad norm "
        f"{values['grad_norm']:.3f} | {values['tokens_per_s']:,.0f} tokens/s | {values['tflops_per_gpu']:.3g} TFLOP/s "
        f"per GPU | MFU {mfu} | mem {values['mem_gib']:.2f} GiB"
    )


def summary_lines(
    wall_s: float,
    steps: tuple[int, int],
    tokens: int,
    rates: Row,
    val_loss: float | None,
    last_checkpoint: Path | None,
) -> list[str]:
    """The end of a launch: wall time, tokens, mean tokens/s and MFU, validation loss and perplexity, checkpoint.

    With a validation loss the last two lines are `loss: X` and `perplexity: Y`, the labelled numbers scripts read.
    """
    mfu = f"{rates['mfu']:.1%}" if rates.get("mfu") is not None else "n/a (no peak TFLOP/s: set log.peak_tflops)"
    lines = [
        f"summary: wall time {wall_s:,.1f} s, steps {steps[0]} -> {steps[1]}, {tokens:,} tokens",
        f"summary: {rates['tokens_per_s']:,.0f} tokens/s, {rates['tflops_per_gpu']:.3g} TFLOP/s per GPU, MFU {mfu} "
        "(mean over training steps; evaluation and checkpoints excluded)",
        f"summary: last checkpoint {last_checkpoint if last_checkpoint else 'none'}",
    ]
    if val_loss is not None:
        lines += [
            f"summary: validation loss {val_loss:.4f}, perplexity {perplexity(val_loss):.2f}",
            f"loss: {val_loss:.4f}",
            f"perplexity: {perplexity(val_loss):.4f}",
        ]
    return lines


# Library messages that tell a user of this trainer nothing they can act on: Python warnings (regular expressions
# matched against the message start) and DeepSpeed log records (substrings). Everything else still prints.
QUIET_WARNINGS = (
    # DeepSpeed's ZeRO-3 calls the collectives torch renamed; once per rank per collective, every launch
    r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated",
    r"torch\.distributed\.reduce_op is deprecated",
)
QUIET_DEEPSPEED_LOGS = (
    # the engine reads the LR once at start, before pretrain.train starts the schedule (_start_schedule)
    "Attempting to get learning rate from scheduler before it has started",
    # every skipped update; the trainer's own line says which step and why (non-finite, or a loss spike skipped)
    "OVERFLOW! Skipping step",
)


class _DropMessages:
    """logging filter: drop records whose message contains one of `parts`."""

    def __init__(self, parts: tuple[str, ...]) -> None:
        self.parts = parts

    def filter(self, record) -> bool:
        message = record.getMessage()
        return not any(part in message for part in self.parts)


def quiet_libraries() -> None:
    """Silence the torch/DeepSpeed warnings every launch prints that say nothing to act on (QUIET_*)."""
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    logging.getLogger("DeepSpeed").addFilter(_DropMessages(QUIET_DEEPSPEED_LOGS))  # deepspeed.utils.logger


class MetricsWriter:
    """Rank 0's sink: RUN/metrics.csv (appended across resumes), DeepSpeed's monitor (tensorboard/csv) and a
    Weights & Biases run (`start_wandb`), each row under the same names (`Train/loss`, ...) at the same step."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        monitor: MonitorMaster | None = None,
        enabled: bool = True,
        wandb_run: WandbRun | None = None,
    ) -> None:
        self.enabled = enabled
        self.monitor = monitor
        self.wandb_run = wandb_run
        self.path = Path(run_dir) / "metrics.csv"
        if enabled and not self.path.exists():
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(CSV_COLUMNS)

    def write(self, step: int, values: Row) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(values.get(c, step if c == "step" else None)) for c in CSV_COLUMNS])
        events = [(f"Train/{k}", float(v), step) for k, v in values.items() if _is_number(v) and k != "step"]
        if self.monitor is not None and getattr(self.monitor, "enabled", False):
            self.monitor.write_events(events)
        if self.wandb_run is not None:  # one row per step: a second write at the same step joins it
            self.wandb_run.log({name: value for name, value, _ in events}, step=step)

    def close(self) -> None:
        """End the W&B run (its files are complete, an offline run can be synced)."""
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


def start_wandb(log: LogConfig, run_dir: Path, config: dict) -> WandbRun:
    """Rank 0's Weights & Biases run for this launch (log.wandb): named after the run folder unless
    log.wandb_name says otherwise, with the run's whole config, its files under RUN/wandb/.

    Not DeepSpeed's wandb monitor: it logs its own `Train/Samples/lr` at step = samples seen, and W&B keeps one
    step counter per run, so the trainer's rows at step = optimizer step would come after a larger step and be
    dropped; it also records no run name or config. WANDB_MODE=offline runs without a network (`wandb sync`
    uploads RUN/wandb/offline-run-* later). Each launch (a resume too) is its own W&B run; log.wandb_group
    gathers them.
    """
    import wandb  # only when enabled: the config already checked it is installed

    return wandb.init(
        project=log.wandb_project,
        entity=log.wandb_entity,
        group=log.wandb_group,
        name=log.wandb_name or run_dir.resolve().name,
        config=config,
        dir=run_dir,
    )


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.9g}"
    return str(v)


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, float]]:
    """RUN/metrics.csv as one dict per logged row, column -> float, blank cells left out.

    Left out, not NaN: a row's keys say what was logged at that step (a validation row has `val_loss`, a training
    row `loss`), so `"val_loss" in row` picks rows without comparing floats. The one reader (plot, tests); torch-free.
    """
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [{column: float(cell) for column, cell in row.items() if cell} for row in csv.DictReader(f)]
