"""Loss-spike detection: a finite loss far above its running statistics is logged, counted and optionally skipped.

Why: a non-finite step is caught by ZeRO-3's overflow check, but a finite spike (a bad batch, an LR too high for
this phase) still applies its update and can start a divergence. The detector keeps an exponential moving mean
and variance of the global-batch loss; after `train.spike_warmup` steps a loss more than `train.spike_z`
standard deviations above the mean is a spike. Spikes do not enter the statistics (one spike must not raise
the bar for the next). All ranks judge the same all-reduced loss, so they agree without another collective.

With `train.spike_skip` the update of a spike step is skipped the way DeepSpeed skips a non-finite one: the
boundary micro-batch's loss is judged before its backward, and a spike makes that loss non-finite, so ZeRO-3's
overflow check discards the whole step (no parameter, optimizer-moment or LR-schedule change).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pretrain.config import TrainConfig


@dataclass
class SpikeDetector:
    """EMA mean/variance of the loss and the spike test; `count` goes into the metrics as `loss_spikes`."""

    z: float  # train.spike_z; 0 disables
    ema: float = 0.98
    warmup: int = 20
    mean: float = 0.0
    var: float = 0.0
    seen: int = 0
    count: int = 0

    @property
    def enabled(self) -> bool:
        return self.z > 0

    def threshold(self) -> float:
        """The loss above which a step is a spike (inf during warmup)."""
        if not self.enabled or self.seen < self.warmup:
            return math.inf
        return self.mean + self.z * math.sqrt(max(self.var, 1e-12))

    def observe(self, loss: float) -> float | None:
        """Judge `loss`: a spike is counted and its threshold returned; anything else is folded into the
        statistics (a finite loss) and None returned."""
        if not self.enabled or not math.isfinite(loss):
            return None
        threshold = self.threshold()
        if loss > threshold:
            self.count += 1
            return threshold
        if self.seen == 0:
            self.mean = loss
        else:
            delta = loss - self.mean
            self.mean += (1 - self.ema) * delta
            self.var = self.ema * (self.var + (1 - self.ema) * delta * delta)
        self.seen += 1
        return None

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "seen": self.seen, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var = float(state["mean"]), float(state["var"])
        self.seen, self.count = int(state["seen"]), int(state["count"])


def from_config(train_cfg: TrainConfig) -> SpikeDetector:
    return SpikeDetector(z=float(train_cfg.spike_z), ema=float(train_cfg.spike_ema), warmup=int(train_cfg.spike_warmup))
