"""The trainer with every rank holding at the start of one step until the test releases it (test hook; run it
instead of `-m pretrain.train`, under any launcher).

HOLD_AT_STEP="STEP:DIR": at the start of step STEP (1-based) each rank writes DIR/held-rank{r} and waits, outside
any collective, until DIR/release exists. A test can then do something next to a job that is certainly up and
training (start a second job on its port, say) however slowly the machine runs, instead of training many steps
and hoping the job is still running. A rank gives up after HOLD_LIMIT_S, so a test that never releases fails
instead of hanging. The hook patches Trainer.train_step from outside; the product code has no switch for it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch.distributed as dist

from pretrain import train

STEP, DIR = os.environ["HOLD_AT_STEP"].split(":", 1)
HOLD_LIMIT_S = 600


def hold(rank: int) -> None:
    """Mark this rank as held, then wait for DIR/release."""
    folder = Path(DIR)
    (folder / f"held-rank{rank}").write_text(f"pid {os.getpid()}\n")
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not (folder / "release").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"hold_train: {folder / 'release'} did not appear within {HOLD_LIMIT_S} s")
        time.sleep(0.1)


def holding_train_step(original):
    def train_step(self):
        if self.step + 1 == int(STEP):
            hold(dist.get_rank())
        return original(self)

    return train_step


train.Trainer.train_step = holding_train_step(train.Trainer.train_step)

if __name__ == "__main__":
    train.cli()
