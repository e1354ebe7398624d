"""Deterministic, resumable data order over the shared token shards.

The global order is a property of the dataset and the seed alone: sample position g of the run is sample
`perm(seed + epoch)[g % N]` with `epoch = g // N`. Global batch k is positions [k·B, (k+1)·B); inside it, micro-step
m of rank r takes the `micro_batch_size` positions starting at `k·B + (m·W + r)·mb`. So ranks never overlap, the
order does not depend on the world size, and a run resumes (on any number of ranks) from one integer:
`consumed_samples`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from data_pipeline.shards import TokenStream


class SampleOrder:
    """The seeded shuffle of sample indices, reshuffled each epoch with seed+epoch."""

    def __init__(self, num_samples: int, seed: int) -> None:
        if num_samples <= 0:
            raise ValueError("the split holds no complete sample; lower model.seq_len or add data")
        self.num_samples = num_samples
        self.seed = seed
        self._epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    def __getitem__(self, position: int) -> int:
        """The sample index at global position `position` (any epoch)."""
        epoch, offset = divmod(position, self.num_samples)
        if epoch != self._epoch:
            self._perm = np.random.default_rng(self.seed + epoch).permutation(self.num_samples)
            self._epoch = epoch
        return int(self._perm[offset])


@dataclass(frozen=True)
class BatchLayout:
    """How one global batch splits into ranks and micro-steps."""

    micro_batch_size: int
    world_size: int
    grad_accum_steps: int

    @property
    def global_batch_size(self) -> int:
        return self.micro_batch_size * self.world_size * self.grad_accum_steps

    def positions(self, consumed_samples: int, micro_step: int, rank: int) -> range:
        """Global positions of this rank's micro-batch `micro_step` in the batch starting at `consumed_samples`."""
        start = consumed_samples + (micro_step * self.world_size + rank) * self.micro_batch_size
        return range(start, start + self.micro_batch_size)


class TrainSampler:
    """Yields this rank's micro-batches (inputs, targets) and counts consumed samples for checkpoints."""

    def __init__(
        self, stream: TokenStream, seq_len: int, seed: int, layout: BatchLayout, rank: int, consumed_samples: int = 0
    ) -> None:
        if consumed_samples % layout.global_batch_size:
            raise ValueError(
                f"consumed_samples={consumed_samples} is not a multiple of the global batch "
                f"{layout.global_batch_size}; resume with the same train.global_batch_tokens"
            )
        self.stream, self.seq_len, self.layout, self.rank = stream, seq_len, layout, rank
        self.order = SampleOrder(stream.num_samples(seq_len), seed)
        self.consumed_samples = consumed_samples

    def sample_indices(self, micro_step: int) -> list[int]:
        return [self.order[p] for p in self.layout.positions(self.consumed_samples, micro_step, self.rank)]

    def micro_batch(self, micro_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Micro-batch `micro_step` of the current global batch as int64 (B, T) inputs and targets."""
        return _inputs_targets(self.stream, self.seq_len, self.sample_indices(micro_step))

    def global_batch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's micro-batches of the current global batch; call `advance()` after the optimizer step."""
        for micro_step in range(self.layout.grad_accum_steps):
            yield self.micro_batch(micro_step)

    def advance(self) -> None:
        self.consumed_samples += self.layout.global_batch_size

    def state_dict(self) -> dict:
        return {"consumed_samples": self.consumed_samples, "seed": self.order.seed, "seq_len": self.seq_len}


def validation_indices(stream: TokenStream, seq_len: int, val_samples: int) -> list[int]:
    """A fixed set of validation samples spread evenly over the split, the same for every run and world size."""
    available = stream.num_samples(seq_len)
    if available == 0:
        raise ValueError(f"validation split of {stream.data_dir} is shorter than model.seq_len={seq_len}")
    count = min(val_samples, available)
    return np.linspace(0, available - 1, count).round().astype(np.int64).tolist()


def validation_batches(
    stream: TokenStream, seq_len: int, indices: list[int], micro_batch_size: int, rank: int, world_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """This rank's share of the validation set as (inputs, targets, n_real) micro-batches.

    Every rank yields the same number of batches (ZeRO-3 forwards are collective); a rank whose share ran out
    repeats a real sample with n_real=0 so it contributes nothing to the sums.
    """
    mine = indices[rank::world_size]
    per_rank = -(-len(indices) // world_size)
    for start in range(0, per_rank, micro_batch_size):
        chunk = mine[start : start + micro_batch_size]
        n_real = len(chunk)
        yield *_inputs_targets(stream, seq_len, chunk or indices[:1]), n_real


def _inputs_targets(stream: TokenStream, seq_len: int, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples `indices` (seq_len + 1 tokens each) stacked as int64 (B, T) inputs and targets."""
    tokens = torch.from_numpy(np.stack([stream.sample(i, seq_len) for i in indices]).astype(np.int64))
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
