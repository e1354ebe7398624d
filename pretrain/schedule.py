"""The learning-rate schedule: linear warmup, then cosine decay (default) or warmup-stable-decay (WSD).

One function, `lr_ratio(iteration, ...)`, gives the multiplier of `optim.lr` for the update made at 0-based
`iteration` (the update of step k is iteration k - 1); `LRSchedule` applies it to the optimizer's groups and is
what DeepSpeed steps after each update and saves in every checkpoint (`{"last_batch_iteration": k}`, the format of
DeepSpeed's WarmupCosineLR, so checkpoints written with it resume here unchanged).

- cosine: ratio iteration/W during the W = optim.warmup_steps warmup updates, then
  min + (1 - min)(1 + cos(pi p))/2 with p = (iteration - W + 1)/(max_steps - W), min = optim.min_lr_ratio:
  DeepSpeed's WarmupCosineLR with linear warmup from 0 (which needed at least 2 warmup updates), which this
  replaces: DeepSpeed has no WSD, and one schedule object serves both.
- wsd: the same warmup, the peak lr until the last D = round(optim.decay_fraction x max_steps) updates, then a
  decay to min over those D updates (p = (iteration - (max_steps - D) + 1)/D) of shape optim.decay_shape:
  `linear`, `cosine`, or `1-sqrt` (1 - sqrt(p), Hägele et al. 2024).

Extending a run (a relaunch with a larger train.max_steps) recomputes every later update from the new max_steps:
a cosine run jumps from the old curve to the new, higher one at the resumed step; a WSD run resumed before its
decay began simply stays at the peak longer (WSD's purpose); one resumed inside its decay goes back up to the
new schedule's value. The resumed optimizer's groups are set from the schedule at once (`LRSchedule.resume`):
the saved groups hold the old schedule's next rate.
"""

from __future__ import annotations

import math
from typing import Any

SCHEDULES = ("cosine", "wsd")
DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


def lr_ratio(iteration: int, optim: Any, max_steps: int) -> float:
    """The multiplier of optim.lr for the update at 0-based `iteration`."""
    warmup = optim.warmup_steps
    if iteration < warmup:
        return iteration / warmup
    if optim.schedule == "cosine":
        progress = (iteration - warmup + 1) / max(1, max_steps - warmup)
        return _decayed(min(1.0, progress), "cosine", optim.min_lr_ratio)
    decay = decay_steps(optim, max_steps)
    progress = (iteration - (max_steps - decay) + 1) / max(1, decay)
    return _decayed(min(1.0, max(0.0, progress)), optim.decay_shape, optim.min_lr_ratio)


def decay_steps(optim: Any, max_steps: int) -> int:
    """WSD's decay length in updates: optim.decay_fraction of max_steps, at least one, at most the post-warmup part."""
    return min(max(1, round(optim.decay_fraction * max_steps)), max(1, max_steps - optim.warmup_steps))


def _decayed(progress: float, shape: str, min_ratio: float) -> float:
    """From 1 at progress 0 to min_ratio at progress 1 (cosine: WarmupCosineLR's own expression)."""
    if shape == "cosine":
        remaining = (1 + math.cos(math.pi * progress)) / 2
    elif shape == "1-sqrt":
        remaining = 1 - math.sqrt(progress)
    else:
        remaining = 1 - progress
    return min_ratio + (1.0 - min_ratio) * remaining


class LRSchedule:
    """Sets each parameter group's lr to `optim.lr × lr_ratio(iteration)`; DeepSpeed calls `step()` after every
    update and saves/loads `state_dict()` with the checkpoint."""

    def __init__(self, optimizer: Any, optim: Any, max_steps: int) -> None:
        self.optimizer, self.optim, self.max_steps = optimizer, optim, max_steps
        self.last_batch_iteration = 0  # the next update's iteration
        self._apply()

    def step(self, increment: int = 1) -> None:
        self.last_batch_iteration += increment
        self._apply()

    def get_lr(self) -> list[float]:
        return [self.optim.lr * lr_ratio(self.last_batch_iteration, self.optim, self.max_steps)] * len(
            self.optimizer.param_groups
        )

    get_last_lr = get_lr

    def state_dict(self) -> dict:
        return {"last_batch_iteration": self.last_batch_iteration}

    def load_state_dict(self, state: dict) -> None:
        self.last_batch_iteration = int(state["last_batch_iteration"])
        self._apply()

    def resume(self) -> None:
        """After a checkpoint's optimizer state is loaded (its groups hold the rate of the schedule that saved it):
        this schedule's rate for the next update."""
        self._apply()

    def _apply(self) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr


def for_run(cfg: Any):
    """The callable deepspeed.initialize(lr_scheduler=...) turns into the run's schedule over its optimizer."""
    return lambda optimizer: LRSchedule(optimizer, cfg.optim, cfg.train.max_steps)
