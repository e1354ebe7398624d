"""The trainer with one rank SIGKILLed at a chosen point (fault hook for tests only; run it instead of
`-m pretrain.train`). Only the first launch is affected (PRETRAIN_RESTART_COUNT unset or 0), so a restart
loop's relaunch runs clean.

FAULT_KILL_IN_STEP="RANK:STEP" kills RANK in the middle of step STEP: at the accumulation boundary, after the
last micro-batch's forward and before the loss all-reduce that precedes its backward (the other ranks are left
waiting in it).

FAULT_SPIKE_STEPS="6,7" multiplies the training loss of those (1-based) steps by 30 on every rank: a finite
loss spike for the spike detector (train.spike_*).

FAULT_KILL_IN_SAVE="POINT:RANK:STEP" kills RANK during the save at STEP, at POINT:
  deepspeed_file  right after DeepSpeed wrote its first file of the save (the other files not yet written)
  rank_files      after DeepSpeed's files, before this rank's trainer_state file
  checksum_file   after rank 0 wrote the checksum file (MANIFEST.sha256.json), before the COMPLETE marker
The hooks patch functions from outside; the product code has no switch for them.
"""

from __future__ import annotations

import os
import signal

from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

from pretrain import checkpoint, ckpt_integrity, train

FIRST_LAUNCH = os.environ.get("PRETRAIN_RESTART_COUNT", "0") == "0"
POINT, RANK, STEP = os.environ.get("FAULT_KILL_IN_SAVE", "none:-1:-1").split(":")
saving_step = {"step": -1}


def this_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def armed() -> bool:
    return FIRST_LAUNCH and this_rank() == int(RANK) and saving_step["step"] == int(STEP)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def wrap(owner: object, name: str, before: bool, point: str) -> None:
    original = getattr(owner, name)

    def patched(*args, **kwargs):
        if before and point == POINT and armed():
            die()
        result = original(*args, **kwargs)
        if not before and point == POINT and armed():
            die()
        return result

    setattr(owner, name, patched)


def record_step(original):
    def save(engine, run_dir, step, *args, **kwargs):
        saving_step["step"] = step
        return original(engine, run_dir, step, *args, **kwargs)

    return save


current = {"step": 0, "training": False}  # the step Trainer.train_step is inside, if any


def record_train_step() -> None:
    """Wrap Trainer.train_step so the hooks below know which step (1-based) is running."""
    train_step = train.Trainer.train_step

    def recording_train_step(self):
        current["step"], current["training"] = self.step + 1, True
        try:
            return train_step(self)
        finally:
            current["training"] = False

    train.Trainer.train_step = recording_train_step


def kill_in_step(original):
    """Wrap Trainer.train_step's loss all-reduce (at the accumulation boundary): die just before it on the chosen
    rank and step."""
    rank, step = (int(v) for v in os.environ["FAULT_KILL_IN_STEP"].split(":"))

    def all_reduce_sum(values, device):
        if FIRST_LAUNCH and this_rank() == rank and current["training"] and current["step"] == step:
            die()
        return original(values, device)

    return all_reduce_sum


def spike_losses(steps: set[int]) -> None:
    """Scale the training loss of the given steps (GPT.forward in training mode, inside those steps)."""
    from pretrain.model import GPT

    forward = GPT.forward

    def scaled_forward(self, idx, targets=None, **kwargs):
        logits, loss = forward(self, idx, targets, **kwargs)
        if loss is not None and self.training and current["training"] and current["step"] in steps:
            loss = loss * 30.0
        return logits, loss

    GPT.forward = scaled_forward


record_train_step()
if "FAULT_SPIKE_STEPS" in os.environ:
    spike_losses({int(s) for s in os.environ["FAULT_SPIKE_STEPS"].split(",")})
if "FAULT_KILL_IN_STEP" in os.environ:
    train.all_reduce_sum = kill_in_step(train.all_reduce_sum)
checkpoint.save = record_step(checkpoint.save)
wrap(TorchCheckpointEngine, "save", before=False, point="deepspeed_file")
wrap(checkpoint, "rng_state", before=True, point="rank_files")
wrap(ckpt_integrity, "write_checksum_file", before=False, point="checksum_file")

if __name__ == "__main__":
    train.cli()
