"""Preemption: SIGTERM / SIGUSR1 ask for a checkpoint at the next step boundary, then a clean exit 0.

SLURM sends SIGUSR1 (with `--signal=USR1@120`) or SIGTERM before killing a job. Saving inside the handler would
interrupt a collective halfway, so the handler only records the request; the loop checks it between steps and
all ranks agree (max all-reduce) so they save together even if only one rank got the signal.
"""

from __future__ import annotations

import signal
from types import FrameType

PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class PreemptionFlag:
    """Set by SIGTERM/SIGUSR1; read at step boundaries."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def install(self) -> PreemptionFlag:
        for sig in PREEMPT_SIGNALS:
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None


def any_rank_requested(flag: PreemptionFlag) -> bool:
    """True on every rank if any rank received a preemption signal."""
    import torch
    import torch.distributed as dist

    from pretrain.engine import device

    value = torch.tensor([1 if flag.requested else 0], dtype=torch.int32, device=device())
    if dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
