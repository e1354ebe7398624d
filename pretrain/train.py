"""Pretraining entry point: `deepspeed --module pretrain.train --data DIR --preset NAME --output RUN [...]`.

Also runs under `python -m torch.distributed.run --nproc_per_node N -m pretrain.train ...`, `mpiexec -n N python
-m pretrain.train ...` and `srun python -m pretrain.train ...` (see pretrain/engine.py: init_distributed).

One step = one global batch: `grad_accum` micro-batches per rank, each `engine.backward` + `engine.step` (DeepSpeed
steps the optimizer at the accumulation boundary). A step whose gradient norm is not finite is skipped by ZeRO-3
(no parameter, optimizer or LR-schedule update) and logged; `train.max_bad_steps` in a row save and abort.

Before anything is written into RUN, rank 0 locks the folder and checks the launch against its checkpoints
(pretrain/run_folder.py). SIGTERM/SIGUSR1, the first Ctrl-C, and the death of the launcher process that started
the ranks all mean: checkpoint at the next step boundary and exit 0 (pretrain/signals.py); a second Ctrl-C aborts.

`--init-from-hf DIR` starts a new run from a local Hugging Face GPT-2/Llama folder: the folder sets model.*, its
tokenizer must be the dataset's, and its weights fill the ZeRO-3 engine (pretrain/interop/hf_init.py). A relaunch
resumes its own checkpoints; an --init-from-hf other than the one they started from is refused.

The console gets one plain line per `log.interval` steps (step, loss, lr, grad norm, tokens/s, TFLOP/s per GPU,
MFU, memory), the validation loss at each evaluation, and a summary at the end; an error is printed once, by the
rank that has it, with its rank.

Test hook: PRETRAIN_FAULT_NAN_STEPS="3,4" makes rank 0's loss NaN on those (1-based) steps, so the skip path
is exercised for real by tests/test_train.py.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from infra import launcher_env
from pretrain import checkpoint, metrics, rank_errors, run_folder, signals, spikes, watchdog
from pretrain.errors import EXIT_BAD_STEPS, EXIT_LOCKED
from pretrain.signals import LauncherWatch, PreemptionFlag, any_rank_requested

GPU_DS_CONFIGS = ("zero3_bf16.json", "zero3_offload.json")
CPU_DS_CONFIG = "ds_configs/zero3_cpu.json"


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


def build_run_config(args: argparse.Namespace, manifest: dict, accelerator: str) -> Any:
    """Preset + YAML + overrides, with the data path and the vocabulary taken from the dataset."""
    from pretrain.config import load_config

    overrides = [f"data.path={args.data}", f"model.vocab_size={int(manifest['vocab_size'])}", *args.overrides]
    cfg = load_config(args.preset, args.config, overrides)
    if args.init_from_hf:
        cfg.model = model_from_hf_folder(args, cfg.model, manifest)
    if accelerator == "cpu" and Path(cfg.train.ds_config).name in GPU_DS_CONFIGS:
        log0(f"note: CPU accelerator; using {CPU_DS_CONFIG} instead of {cfg.train.ds_config} (FusedAdam needs CUDA)")
        cfg.train.ds_config = CPU_DS_CONFIG
    return cfg


def model_from_hf_folder(args: argparse.Namespace, configured: Any, manifest: dict) -> Any:
    """--init-from-hf: the folder's model config, checked against this launch's model.* and the dataset's tokenizer."""
    from pretrain.interop import hf_init

    explicit = hf_init.explicit_model_keys(args.config, args.overrides)
    model = hf_init.model_from_folder(args.init_from_hf, configured, explicit)
    compared = hf_init.check_tokenizer(args.init_from_hf, model.vocab_size, manifest, args.data)
    log0(f"--init-from-hf {args.init_from_hf}: model.* from its config.json; tokenizer: {compared}")
    return model


def log0(message: str) -> None:
    """Print on rank 0 only (also before init: the launcher's variables name the rank)."""
    if launcher_env.global_rank() == 0:
        print(message, flush=True)


def fault_steps() -> set[int]:
    raw = os.environ.get("PRETRAIN_FAULT_NAN_STEPS", "")
    return {int(s) for s in raw.split(",") if s.strip()}


def all_reduce_sum(values: list[float] | torch.Tensor, device: torch.device) -> list[float]:
    """Sum over ranks in float64 (one host sync): a list of floats or a float64 tensor already on `device`."""
    import torch.distributed as dist

    t = torch.as_tensor(values, dtype=torch.float64, device=device).reshape(-1)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


class Trainer:
    """The loop: steps, logging, evaluation, checkpoints, preemption."""

    def __init__(
        self, cfg: Any, run_dir: Path, data_dir: Path, rank: int, world_size: int, init_from_hf: dict | None = None
    ) -> None:
        from data_pipeline.shards import TokenStream
        from pretrain import engine as eng
        from pretrain.data import BatchLayout, TrainSampler, epoch_plan, validation_indices

        self.cfg, self.run_dir, self.rank, self.world_size = cfg, run_dir, rank, world_size
        verify = cfg.data.verify_checksums and rank == 0  # one rank hashes the shared files (and reports a mismatch)
        self.train_stream = TokenStream(data_dir, "train", verify=verify)
        self.val_stream = TokenStream(data_dir, "validation", verify=verify) if _has_val(self.train_stream) else None
        self.ds_config = eng.ds_config_for_run(cfg, world_size, run_dir)
        if rank == 0:
            (run_dir / "ds_config.json").write_text(_json(self.ds_config))
        torch.manual_seed(cfg.train.seed)
        self.engine = self._engine(init_from_hf)
        self.init_from_hf = init_from_hf  # where the run started (hf_init.start_record), kept in every checkpoint
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
        self.spikes = spikes.from_config(cfg.train)  # loss-spike statistics (train.spike_*)
        self.nan_steps = fault_steps() if rank == 0 else set()  # test hook PRETRAIN_FAULT_NAN_STEPS
        self.flops_per_token = _flops_per_token(cfg)
        self.peak = metrics.peak_tflops(cfg.log.peak_tflops)
        wandb_run = None
        if rank == 0 and cfg.log.wandb:
            wandb_run = metrics.start_wandb(cfg.log, run_dir, {**cfg.to_dict(), "world_size": world_size})
        monitor = self.engine.monitor if rank == 0 else None
        self.writer = metrics.MetricsWriter(run_dir, monitor, enabled=rank == 0, wandb_run=wandb_run)
        self.started = time.perf_counter()  # the launch's wall time, for the summary
        self.clock = metrics.TrainClock()  # training-step time only: evaluation and checkpoints are not counted
        self.last_checkpoint: Path | None = None

    def _engine(self, init_from_hf: dict | None) -> Any:
        """The DeepSpeed engine: freshly initialised, or holding a Hugging Face folder's weights."""
        from pretrain import engine as eng
        from pretrain.interop.hf_init import build_engine_from_hf

        if init_from_hf is None:
            return eng.build_engine(self.cfg, self.ds_config)
        engine = build_engine_from_hf(self.cfg, self.ds_config, init_from_hf["path"], self.rank)
        log0(f"initialized from the Hugging Face folder {init_from_hf['path']}")
        return engine

    # ------------------------------------------------------------------ resume / save

    def resume(self, found: tuple[Path, str] | None) -> None:
        """Load the checkpoint rank 0 chose and checked (pretrain/run_folder.py; every rank got it from
        `chosen_checkpoint`)."""
        if found is None:
            return
        root, tag = found
        client = checkpoint.load(self.engine, root, tag)
        self.init_from_hf = client.get("init_from_hf")
        self.step = int(client["step"])
        self.sampler.load_state_dict(client["sampler"])
        if "spikes" in client:  # the spike statistics go on where they were, no new warmup
            self.spikes.load_state_dict(client["spikes"])
        self.last_checkpoint = root / tag
        log0(f"resumed from {root / tag}: step {self.step}, {self.sampler.consumed_samples} samples consumed")

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
        from pretrain.data import validation_batches

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


def _start_schedule(engine: Any) -> None:
    """Move WarmupCosineLR from its 'not started' state (-1, lr 0) to iteration 0 before the first step.

    DeepSpeed steps the schedule after each update, so without this the first *two* updates run at lr 0; with
    it step k uses lr (k-1)/warmup_steps * peak during warmup. A resumed run then loads the saved iteration.
    """
    if engine.lr_scheduler is not None:
        engine.lr_scheduler.step()


def _has_val(stream: Any) -> bool:
    return "validation" in stream.manifest["splits"]


def _json(obj: dict) -> str:
    import json

    return json.dumps(obj, indent=2) + "\n"


def _flops_per_token(cfg: Any) -> float:
    from pretrain.flops import flops_per_token

    return flops_per_token(cfg.model, cfg.model.seq_len)


def main(argv: list[str] | None = None) -> int:
    from deepspeed.accelerator import get_accelerator

    from data_pipeline.shards import read_manifest
    from pretrain.engine import init_distributed

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


def hf_start_record(folder: str | None) -> dict | None:
    """--init-from-hf's record (folder, config sha256, weight sizes): cheap, so every rank makes its own."""
    from pretrain.interop.hf_init import start_record

    return start_record(folder) if folder else None


def chosen_checkpoint(claim: run_folder.Claim | None) -> tuple[Path, str] | None:
    """The checkpoint rank 0 chose and checked, on every rank (None: the run starts at step 0)."""
    import torch.distributed as dist

    chosen: list[Any] = [claim.resume_from if claim else None]
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
    """Console entry: exit status 0 on success, else a one-line reason on stderr, printed once."""
    rank = launcher_env.global_rank()
    try:
        code = main()
    except run_folder.RunLocked as err:
        print(f"pretrain.train: rank {rank}: error: {err}", file=sys.stderr)
        code = EXIT_LOCKED
    except Exception as err:  # on the console and in RUN/errors/, whichever rank and launcher (rank_errors)
        code = rank_errors.report(err, rank, sys.argv[1:])
        if code is None:  # a bug: the interpreter prints the traceback; atexit gives the last heartbeat
            raise
    if code == EXIT_BAD_STEPS and rank == 0:
        print("pretrain.train: train.max_bad_steps non-finite steps in a row; last good weights saved", file=sys.stderr)
    _exit(code)


def _exit(code: int) -> None:
    """Exit without running C++ static destructors: a gloo/DeepSpeed thread still joinable at interpreter teardown
    makes std::terminate abort a rank that finished cleanly ("terminate called without an active exception",
    about 1 launch in 20 on CPU). Everything the run wrote is closed or flushed by now."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    cli()
