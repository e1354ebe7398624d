"""Pretraining entry point: `deepspeed --module pretrain.train --data DIR --preset NAME --output RUN [...]`.

Also runs under `python -m torch.distributed.run --nproc_per_node N -m pretrain.train ...`, `mpiexec -n N python
-m pretrain.train ...` and `srun python -m pretrain.train ...` (see pretrain/engine.py: init_distributed).

One step = one global batch: `grad_accum` micro-batches per rank, each `engine.backward` + `engine.step` (DeepSpeed
steps the optimizer at the accumulation boundary). A step whose gradient norm is not finite is skipped by ZeRO-3
(no parameter, optimizer or LR-schedule update) and logged; `train.max_bad_steps` in a row save and abort.

The run config is the preset, --config and --set, resolved against the dataset (pretrain/resolve.py). Before
anything is written into RUN, rank 0 locks the folder (pretrain/run_lock.py) and checks the launch against its
checkpoints (pretrain/run_folder.py). SIGTERM/SIGUSR1, the first Ctrl-C, and the death of the launcher process
that started the ranks all mean: checkpoint at the next step boundary and exit 0 (pretrain/signals.py); a second
Ctrl-C aborts.

`--init-from-hf DIR` starts a new run from a local Hugging Face GPT-2/Llama folder: the folder sets model.*, its
tokenizer must be the dataset's, and its weights fill the ZeRO-3 engine (pretrain/interop/hf_init.py). A relaunch
resumes its own checkpoints; an --init-from-hf other than the one they started from is refused.

The console gets one plain line per `log.interval` steps (step, loss, lr, grad norm, tokens/s, TFLOP/s per GPU,
MFU, memory), the validation loss at each evaluation, and a summary at the end; an error is printed once, by the
rank that has it, with its rank (pretrain/exit_policy.py: which exception gives which exit status and line).

Test hook: PRETRAIN_FAULT_NAN_STEPS="3,4" makes rank 0's loss NaN on those (1-based) steps, so the skip path
is exercised for real by tests/integration/test_train.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from deepspeed import DeepSpeedEngine
from deepspeed.accelerator import get_accelerator

from data_pipeline.shards import TokenStream, read_manifest
from infra import launcher_env
from pretrain import checkpoint, exit_policy, metrics, run_folder, signals, spikes, watchdog
from pretrain.checkpoint import CheckpointRef
from pretrain.config import RunConfig
from pretrain.data import BatchLayout, TrainSampler, epoch_plan, validation_batches, validation_indices
from pretrain.engine import build_engine, ds_config_for_run, init_distributed
from pretrain.errors import EXIT_BAD_STEPS
from pretrain.flops import flops_per_token
from pretrain.interop.hf_init import build_engine_from_hf
from pretrain.metrics import log0
from pretrain.resolve import build_run_config, hf_start_record
from pretrain.signals import LauncherWatch, PreemptionFlag, any_rank_requested
from pretrain.spikes import SpikeDetector


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pretrain.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="dataset folder written by `pipeline run` (has manifest.json)")
    p.add_argument("--preset", default=None, help="model/training preset, e.g. debug, gpt2-124m")
    p.add_argument("--output", required=True, help="run folder: config, checkpoints, metrics")
    p.add_argument("--config", default=None, help="YAML file with overrides of the preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--resume", default="auto", help="auto (newest complete checkpoint of --output), none, or a path")
    p.add_argument(
        "--init-from-hf",
        default=None,
        metavar="DIR",
        help="start from a local Hugging Face GPT-2/Llama folder (config.json + safetensors); it sets model.*",
    )
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # the deepspeed launcher's
    return p.parse_args(argv)


def fault_steps() -> set[int]:
    raw = os.environ.get("PRETRAIN_FAULT_NAN_STEPS", "")
    return {int(s) for s in raw.split(",") if s.strip()}


def all_reduce_sum(values: list[float] | torch.Tensor, device: torch.device) -> list[float]:
    """Sum over ranks in float64 (one host sync): a list of floats or a float64 tensor already on `device`."""
    t = torch.as_tensor(values, dtype=torch.float64, device=device).reshape(-1)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


class Trainer:
    """The loop: steps, logging, evaluation, checkpoints, preemption.

    Everything it holds is declared here, grouped: what configures it, the components it drives, and the state a
    launch changes (saved in every checkpoint, or about this launch only).
    """

    # configs
    cfg: RunConfig
    ds_config: dict  # the resolved DeepSpeed JSON (RUN/ds_config.json)
    run_dir: Path
    rank: int
    world_size: int

    # components
    engine: DeepSpeedEngine
    device: torch.device
    train_stream: TokenStream
    val_stream: TokenStream | None  # None: the dataset has no validation split
    layout: BatchLayout
    sampler: TrainSampler
    val_indices: list[int]  # the fixed validation windows every evaluation reads
    spikes: SpikeDetector  # loss-spike statistics (train.spike_*)
    writer: metrics.MetricsWriter
    flops_per_token: float
    peak: float | None  # the device's peak TFLOP/s (None: no MFU)
    nan_steps: set[int]  # test hook PRETRAIN_FAULT_NAN_STEPS (rank 0)

    # training state (in every checkpoint, with the sampler's and the spike detector's)
    step: int
    init_from_hf: dict | None  # where the run started (hf_init.start_record)

    # this launch's state
    bad_in_a_row: int  # consecutive non-finite steps (train.max_bad_steps)
    started: float  # the launch's wall time, for the summary
    clock: metrics.TrainClock  # training-step time only: evaluation and checkpoints are not counted
    last_checkpoint: Path | None

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: Path,
        data_dir: Path,
        rank: int,
        world_size: int,
        init_from_hf: dict | None = None,
    ) -> None:
        self.cfg, self.run_dir, self.rank, self.world_size = cfg, run_dir, rank, world_size
        verify = cfg.data.verify_checksums and rank == 0  # one rank hashes the shared files (and reports a mismatch)
        self.train_stream = TokenStream(data_dir, "train", verify=verify)
        self.val_stream = TokenStream(data_dir, "validation", verify=verify) if _has_val(self.train_stream) else None
        self.ds_config = ds_config_for_run(cfg, world_size, run_dir)
        if rank == 0:
            (run_dir / "ds_config.json").write_text(json.dumps(self.ds_config, indent=2) + "\n")
        torch.manual_seed(cfg.train.seed)
        self.engine = self._engine(init_from_hf)
        self.init_from_hf = init_from_hf
        _start_schedule(self.engine)
        self.device = self.engine.device
        seq = cfg.model.seq_len
        self.layout = BatchLayout(cfg.train.micro_batch_size, world_size, cfg.grad_accum_steps(world_size))
        self.sampler = TrainSampler(self.train_stream, seq, cfg.data.seed, self.layout, rank)
        for line in epoch_plan(cfg.train.max_steps, self.layout.global_batch_size, self.sampler.order.num_samples, seq):
            log0(line)
        self.val_indices = validation_indices(self.val_stream, seq, cfg.data.val_samples) if self.val_stream else []
        self.step = 0
        self.bad_in_a_row = 0
        self.spikes = spikes.from_config(cfg.train)
        self.nan_steps = fault_steps() if rank == 0 else set()
        self.flops_per_token = flops_per_token(cfg.model, cfg.model.seq_len)
        self.peak = metrics.peak_tflops(cfg.log.peak_tflops)
        self.writer = self._writer()
        self.started = time.perf_counter()
        self.clock = metrics.TrainClock()
        self.last_checkpoint = None

    def _engine(self, init_from_hf: dict | None) -> DeepSpeedEngine:
        """The DeepSpeed engine: freshly initialised, or holding a Hugging Face folder's weights."""
        if init_from_hf is None:
            return build_engine(self.cfg, self.ds_config)
        engine = build_engine_from_hf(self.cfg, self.ds_config, init_from_hf["path"], self.rank)
        log0(f"initialized from the Hugging Face folder {init_from_hf['path']}")
        return engine

    def _writer(self) -> metrics.MetricsWriter:
        """Rank 0's metrics sinks (RUN/metrics.csv, DeepSpeed's monitor, a W&B run with log.wandb); others write none."""
        cfg, rank = self.cfg, self.rank
        wandb_run = None
        if rank == 0 and cfg.log.wandb:
            wandb_run = metrics.start_wandb(cfg.log, self.run_dir, {**cfg.to_dict(), "world_size": self.world_size})
        monitor = self.engine.monitor if rank == 0 else None
        return metrics.MetricsWriter(self.run_dir, monitor, enabled=rank == 0, wandb_run=wandb_run)

    # ------------------------------------------------------------------ resume / save

    def resume(self, found: CheckpointRef | None) -> None:
        """Load the checkpoint rank 0 chose and checked (pretrain/run_folder.py; every rank got it from
        `chosen_checkpoint`)."""
        if found is None:
            return
        client = checkpoint.load(self.engine, found)
        self.init_from_hf = client.get("init_from_hf")
        self.step = int(client["step"])
        self.sampler.load_state_dict(client["sampler"])
        if "spikes" in client:  # the spike statistics go on where they were, no new warmup
            self.spikes.load_state_dict(client["spikes"])
        self.last_checkpoint = found.path
        log0(f"resumed from {found.path}: step {self.step}, {self.sampler.consumed_samples} samples consumed")

    def save(self) -> None:
        client_state = {
            "step": self.step,
            "sampler": self.sampler.state_dict(),
            "config": self.cfg.to_dict(),
            "tokenizer": checkpoint.tokenizer_reference(self.train_stream.manifest),
            "world_size": self.world_size,
            "spikes": self.spikes.state_dict(),
            "init_from_hf": self.init_from_hf,
        }
        path = checkpoint.save(self.engine, self.run_dir, self.step, client_state, self.cfg.train.keep_last)
        self.last_checkpoint = path
        log0(f"saved checkpoint {path}")

    # ------------------------------------------------------------------ one step

    def train_step(self) -> dict:
        """One global batch; returns mean loss over ranks, grad norm, lr and whether the update was skipped."""
        skipped_before = self.engine.skipped_steps
        lr = self.engine.get_lr()[0]  # the rate this step's update uses (DeepSpeed steps the schedule after)
        inject = (self.step + 1) in self.nan_steps
        spike_skipped = False
        boundary = self.layout.grad_accum_steps - 1  # the micro-batch whose engine.step updates the weights
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)  # on device: no sync per micro-batch
        for micro_step, (x, y) in enumerate(self.sampler.global_batch()):
            _, loss = self.engine(self.to_device(x), self.to_device(y))
            if inject:
                loss = loss * float("nan")
            loss_sum += loss.detach().double()
            if micro_step == boundary:  # the step's global mean loss, judged before the update it would make
                (total,) = all_reduce_sum(loss_sum, self.device)
                mean_loss = total / (self.layout.grad_accum_steps * self.world_size)
                loss, spike_skipped = self._guard_spike(loss, mean_loss)
            self.engine.backward(loss)
            self.engine.step()
        finished_epoch = self.sampler.advance()
        self.step += 1
        if finished_epoch:
            log0(self.sampler.epoch_boundary_line(self.step))
        skipped = self.engine.skipped_steps > skipped_before
        grad_norm = self.engine.get_global_grad_norm()
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        return {"loss": mean_loss, "grad_norm": grad_norm, "lr": lr, "skipped": skipped, "spike_skipped": spike_skipped}

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """A host batch on the accelerator without a host sync: pinned memory and a non-blocking copy (a copy
        from pageable memory waits for the stream, once per micro-step)."""
        if torch.device(self.device).type != "cuda":
            return batch.to(self.device)
        return batch.pin_memory().to(self.device, non_blocking=True)

    def _guard_spike(self, loss: torch.Tensor, mean_loss: float) -> tuple[torch.Tensor, bool]:
        """Feed the step's mean loss to the spike detector; with train.spike_skip a spike's loss becomes NaN, so
        ZeRO-3's overflow check skips the update (returned True: the skip is the guard's, not a non-finite step).
        Every rank judges the same all-reduced value."""
        threshold = self.spikes.observe(mean_loss)
        if threshold is None:
            return loss, False
        skip = self.cfg.train.spike_skip
        action = "update skipped (train.spike_skip)" if skip else "update applied"
        log0(
            f"step {self.step + 1}: loss spike: {mean_loss:.4f} > {threshold:.4f} (mean + train.spike_z std); {action}"
        )
        return (loss * float("nan"), True) if skip else (loss, False)

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean token loss over the fixed validation windows (all ranks share the work)."""
        if not self.val_indices:
            return float("nan")
        self.engine.eval()
        seq, mb = self.cfg.model.seq_len, self.cfg.train.micro_batch_size
        loss_sum, tokens = 0.0, 0.0
        for x, y, n_real in validation_batches(self.val_stream, seq, self.val_indices, mb, self.rank, self.world_size):
            _, loss = self.engine(x.to(self.device), y.to(self.device))
            loss_sum += loss.item() * n_real * seq
            tokens += n_real * seq
        self.engine.train()
        loss_sum, tokens = all_reduce_sum([loss_sum, tokens], self.device)
        return loss_sum / tokens

    # ------------------------------------------------------------------ the loop

    def run(self, preempt: PreemptionFlag, launcher: LauncherWatch) -> int:
        cfg = self.cfg.train
        if self.step == 0:  # the untrained model's validation loss: the baseline every later eval is read against
            self._log_eval(self.evaluate())
        first_step, window = self.step, metrics.TrainClock()
        while self.step < cfg.max_steps:
            with self.clock.timing(), window.timing():
                result = self.train_step()
            if self._check_bad(result):
                return EXIT_BAD_STEPS
            if self.step % self.cfg.log.interval == 0 or self.step == cfg.max_steps:
                self._log(result, window)
                window = metrics.TrainClock()
            if self.step % cfg.eval_interval == 0 and self.step < cfg.max_steps:
                self._log_eval(self.evaluate())
            if self.step % cfg.save_interval == 0 and self.step < cfg.max_steps:
                self.save()
            if launcher.gone():
                preempt.request(signals.LAUNCHER_GONE, f"the launcher process ({launcher.describe()}) exited")
            stop = any_rank_requested(preempt)
            if stop:
                log0(f"{stop}: saving at step {self.step} and exiting")
                self.save()
                self._summary(first_step, None)
                return 0
        self.save()
        val_loss = self.evaluate()
        self._log_eval(val_loss)
        self._summary(first_step, val_loss)
        return 0

    def _check_bad(self, result: dict) -> bool:
        """Count consecutive non-finite steps; at max_bad_steps save the last good weights and abort. A step the
        spike guard skipped on purpose is not one of them (it was logged as a spike)."""
        if result["spike_skipped"] or (not result["skipped"] and math.isfinite(result["loss"])):
            self.bad_in_a_row = 0
            return False
        self.bad_in_a_row += 1
        log0(f"step {self.step}: non-finite loss/grad norm (loss={result['loss']}); update skipped")
        self.writer.write(self.step, {"loss": result["loss"], "skipped_steps": self.engine.skipped_steps})
        if self.bad_in_a_row < self.cfg.train.max_bad_steps:
            return False
        log0(f"{self.bad_in_a_row} bad steps in a row (train.max_bad_steps): saving last good weights, aborting")
        self.save()
        return True

    def _log(self, result: dict, window: metrics.TrainClock) -> None:
        """One metrics row and one plain console line for the steps since the last log line."""
        rates = self._rates(window)
        values = {
            "consumed_tokens": self.sampler.consumed_samples * self.cfg.model.seq_len,
            "loss": result["loss"],
            "perplexity": metrics.perplexity(result["loss"]),
            "lr": result["lr"],
            "grad_norm": result["grad_norm"],
            "mem_gib": metrics.memory_gib(),
            "skipped_steps": self.engine.skipped_steps,
            "loss_spikes": self.spikes.count,
            **rates,
        }
        self.writer.write(self.step, values)
        log0(metrics.console_line(self.step, self.cfg.train.max_steps, values))

    def _rates(self, clock: metrics.TrainClock) -> dict:
        tokens = clock.steps * self.cfg.train.global_batch_tokens
        return metrics.throughput(tokens, clock.seconds, self.flops_per_token, self.world_size, self.peak)

    def _log_eval(self, val_loss: float) -> None:
        self.writer.write(self.step, {"val_loss": val_loss, "val_perplexity": metrics.perplexity(val_loss)})
        log0(f"step {self.step}: val_loss {val_loss:.4f}, val perplexity {metrics.perplexity(val_loss):.2f}")

    def _summary(self, first_step: int, val_loss: float | None) -> None:
        """The end of a launch: what it did, how fast, how good, and where its last checkpoint is."""
        rates = self._rates(self.clock)
        tokens = self.clock.steps * self.cfg.train.global_batch_tokens
        for line in metrics.summary_lines(
            wall_s=time.perf_counter() - self.started,
            steps=(first_step, self.step),
            tokens=tokens,
            rates=rates,
            val_loss=val_loss,
            last_checkpoint=self.last_checkpoint,
        ):
            log0(line)


def _start_schedule(engine: DeepSpeedEngine) -> None:
    """Move WarmupCosineLR from its 'not started' state (-1, lr 0) to iteration 0 before the first step.

    DeepSpeed steps the schedule after each update, so without this the first *two* updates run at lr 0; with
    it step k uses lr (k-1)/warmup_steps * peak during warmup. A resumed run then loads the saved iteration.
    """
    if engine.lr_scheduler is not None:
        engine.lr_scheduler.step()


def _has_val(stream: TokenStream) -> bool:
    return "validation" in stream.manifest["splits"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signals.default_actions_until_the_loop()
    metrics.quiet_libraries()
    manifest = read_manifest(args.data)
    cfg = build_run_config(args, manifest, get_accelerator().device_name())
    run_dir = Path(args.output)
    claim = None
    start = hf_start_record(args.init_from_hf)
    if launcher_env.global_rank() == 0:  # before the process group: a refused launch ends in seconds, writing nothing
        claim = run_folder.claim(run_dir, cfg.to_dict(), manifest, args.resume, cfg.train.lock_stale_s, start)
        _report_launch(claim, run_dir)
    try:
        rank, world_size = init_distributed(2 * cfg.train.collective_timeout_s)  # gloo/nccl: the watchdog's backstop
        if rank == 0 and claim is None:
            raise RuntimeError("rank 0 of the process group did not lock the run folder: set RANK for every process")
        if rank == 0:
            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), flush=True)
        found = chosen_checkpoint(claim)
        trainer = Trainer(cfg, run_dir, Path(args.data), rank, world_size, init_from_hf=None if found else start)
        trainer.resume(found)
        watchdog.install(cfg.train.collective_timeout_s, run_dir, rank, world_size)  # names a stuck collective
        code = trainer.run(PreemptionFlag(rank).install(), LauncherWatch.of_this_process())
        trainer.writer.close()
        torch.distributed.destroy_process_group()  # a live gloo group at interpreter exit can abort() a rank
        return code
    finally:
        if claim is not None:
            claim.lock.release()


def chosen_checkpoint(claim: run_folder.Claim | None) -> CheckpointRef | None:
    """The checkpoint rank 0 chose and checked, on every rank (None: the run starts at step 0)."""
    chosen: list[CheckpointRef | None] = [claim.resume_from if claim else None]
    if dist.is_initialized():
        dist.broadcast_object_list(chosen, src=0)
    return chosen[0]


def _report_launch(claim: run_folder.Claim, run_dir: Path) -> None:
    """Say which launch of the folder this is and what it changes relative to RUN/config.yaml."""
    changed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in claim.changed.items()) or "none"
    print(f"run folder {run_dir} locked; launch recorded in {claim.record}", flush=True)
    if claim.resume_from:
        print(f"changes from {run_dir / run_folder.CONFIG}: {changed}", flush=True)


def cli() -> None:
    """Console entry: exit status 0 on success, else a one-line reason on stderr, printed once
    (pretrain/exit_policy.py says which rank prints what)."""
    exit_policy.run(main, launcher_env.global_rank())


if __name__ == "__main__":
    cli()
