"""The trainer with one rank failing in a chosen step (fault hook for tests only; run it instead of
`-m pretrain.train`, under any launcher).

FAULT_RANK_ERROR="RANK:STEP:KIND" makes RANK raise at the start of step STEP (1-based), while the other ranks go on
into the step's collectives: KIND `bug` raises a RuntimeError (a bug: its traceback must reach the console),
`user` a PretrainError that only this rank meets (its one line must reach the console). The hook patches
Trainer.train_step from outside; the product code has no switch for it.
"""

from __future__ import annotations

import os

import torch.distributed as dist

from pretrain import train
from pretrain.errors import PretrainError

RANK, STEP, KIND = os.environ.get("FAULT_RANK_ERROR", "-1:-1:bug").split(":")


def message(rank: int, step: int) -> str:
    if KIND == "user":
        return f"injected: shard /data/node{rank}/train-00000.arrow missing on rank {rank} in step {step}"
    return f"injected bug on rank {rank} in step {step}"


def failing_train_step(original):
    def train_step(self):
        rank, step = dist.get_rank(), self.step + 1
        if rank == int(RANK) and step == int(STEP):
            raise (PretrainError if KIND == "user" else RuntimeError)(message(rank, step))
        return original(self)

    return train_step


train.Trainer.train_step = failing_train_step(train.Trainer.train_step)

if __name__ == "__main__":
    train.cli()
