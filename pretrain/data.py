"""Deterministic, resumable data order over the shared token shards.

The global order is a property of the dataset and the seed alone: sample position g of the run is sample
`perm(seed, epoch)[g % N]` with `epoch = g // N`. Global batch k is positions [k·B, (k+1)·B); inside it, micro-step
m of rank r takes the `micro_batch_size` positions starting at `k·B + (m·W + r)·mb`. So ranks never overlap, the
order does not depend on the world size, and a run resumes (on any number of ranks) from one integer:
`consumed_samples`.

`perm` is evaluated per position, never materialised: a seeded Feistel network over [0, 4^h) ⊇ [0, N), restricted
to [0, N) by cycle-walking (see SampleOrder). A rank holds no per-sample state, where a materialised permutation
is an N-entry table per rank and epoch (146M samples: 1.2 GB of int64).

A weighted mixture of datasets (pretrain/mixture.py) maps each global position to (source, that source's own
position) first, and each source has its own SampleOrder; one dataset is the mixture of one source, in the order
above.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from data_pipeline.shards import TokenStream
from pretrain.errors import PretrainError

ORDER_VERSION = "feistel-6r-v1"  # recorded in checkpoints: the same seed gives the same order only within a version
_FEISTEL_ROUNDS = 6
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every output bit depends on every input bit (uint64 arithmetic wraps mod 2^64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class SampleOrder:
    """The seeded shuffle of sample indices, a different one each epoch, in O(1) memory.

    Why a Feistel network and not a blocked shuffle: it is a bijection for any round function, so every sample is
    drawn exactly once per epoch; any position is computed on its own (resume and every rank need no state beyond
    `consumed_samples`); and it mixes the whole split. A blocked shuffle (permute blocks, then within a block)
    keeps neighbouring windows, which are usually pieces of one document, close together in the order, and it
    still holds a block-sized table. Six rounds of splitmix64 keyed by (seed, epoch, round) are far more mixing
    than a data order needs (Luby-Rackoff: four rounds of a pseudo-random function already give a
    pseudo-random permutation). The network permutes [0, 4^h) with 4^h < 4N; positions that land at or past N
    are pushed through it again (cycle-walking), which stays a bijection on [0, N) and takes fewer than 4 passes on average.
    """

    def __init__(self, num_samples: int, seed: int) -> None:
        if num_samples <= 0:
            raise PretrainError("the split holds no complete sample; lower model.seq_len or add data")
        self.num_samples = num_samples
        self.seed = seed
        self._half_bits = np.uint64(max(1, -(-(num_samples - 1).bit_length() // 2)))
        self._half_mask = (np.uint64(1) << self._half_bits) - np.uint64(1)

    def __getitem__(self, position: int) -> int:
        """The sample index at global position `position` (any epoch)."""
        return int(self.take([position])[0])

    def take(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """The sample indices (int64) at global positions `positions`, which may span epochs."""
        epochs, offsets = np.divmod(np.asarray(positions, dtype=np.int64), self.num_samples)
        out = np.empty(len(offsets), dtype=np.int64)
        for epoch in np.unique(epochs):
            here = epochs == epoch
            out[here] = self._permute(offsets[here].astype(np.uint64), self._round_keys(int(epoch)))
        return out

    def _round_keys(self, epoch: int) -> np.ndarray:
        """One 64-bit key per round, derived from (seed, epoch): a new shuffle each epoch."""
        base = _mix64(np.array([self.seed & (2**64 - 1)], dtype=np.uint64))[0] ^ np.uint64(epoch)
        rounds = np.arange(1, _FEISTEL_ROUNDS + 1, dtype=np.uint64)
        return _mix64(_mix64(np.full(_FEISTEL_ROUNDS, base, dtype=np.uint64)) + rounds * _GOLDEN)

    def _permute(self, offsets: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """The Feistel network restricted to [0, N): re-apply it to every value that landed outside."""
        out = self._feistel(offsets, keys)
        outside = out >= np.uint64(self.num_samples)
        while outside.any():
            out[outside] = self._feistel(out[outside], keys)
            outside = out >= np.uint64(self.num_samples)
        return out.astype(np.int64)

    def _feistel(self, values: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """A balanced Feistel network on 2h-bit values: a bijection of [0, 4^h) whatever the round function."""
        left, right = values >> self._half_bits, values & self._half_mask
        for key in keys:
            left, right = right, left ^ (_mix64(right ^ key) & self._half_mask)
        return (left << self._half_bits) | right


def epoch_plan(max_steps: int, global_batch_size: int, num_samples: int, seq_len: int) -> list[str]:
    """Log lines saying how many passes over the training split the run makes; a warning line past one epoch."""
    planned = max_steps * global_batch_size
    epochs = planned / num_samples
    lines = [
        f"data: {num_samples:,} training samples of {seq_len} tokens ({num_samples * seq_len:,} tokens); "
        f"{max_steps:,} steps x {global_batch_size:,} samples = {planned:,} samples = {epochs:.3g} epochs"
    ]
    if epochs > 1:
        lines.append(
            f"warning: train.max_steps={max_steps} needs {epochs:.3g} epochs of the training split: every sample "
            f"is seen about {epochs:.1f} times (reshuffled each epoch); add data or lower train.max_steps if that "
            "is not intended"
        )
    return lines


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


def source_seed(seed: int, source: int) -> int:
    """The Feistel seed of mixture source `source`: source 0 keeps the run's seed, so a one-source mixture is the
    single-dataset order; the others get their own shuffle."""
    if source == 0:
        return seed
    return int(_mix64(np.array([(seed + source * int(_GOLDEN)) & (2**64 - 1)], dtype=np.uint64))[0])


class TrainSampler:
    """Yields this rank's micro-batches (inputs, targets) and counts consumed samples for checkpoints.

    `streams` is one dataset or the sources of a mixture (`weights`, normalised; pretrain/mixture.py interleaves
    them); positions are global either way, so everything below holds for a mixture too.
    """

    def __init__(
        self,
        streams: TokenStream | Sequence[TokenStream],
        seq_len: int,
        seed: int,
        layout: BatchLayout,
        rank: int,
        consumed_samples: int = 0,
        weights: Sequence[float] = (1.0,),
    ) -> None:
        from pretrain.mixture import MixtureOrder

        if consumed_samples % layout.global_batch_size:
            raise ValueError(
                f"consumed_samples={consumed_samples} is not a multiple of the global batch "
                f"{layout.global_batch_size}; resume with the same train.global_batch_tokens"
            )
        self.streams = [streams] if isinstance(streams, TokenStream) else list(streams)
        self.seq_len, self.layout, self.rank, self.seed = seq_len, layout, rank, seed
        counts = [stream.num_samples(seq_len) for stream in self.streams]
        self.order = MixtureOrder(counts, weights, seed)
        self.consumed_samples = consumed_samples

    def sample_sources(self, micro_step: int) -> tuple[np.ndarray, np.ndarray]:
        """(source, sample index in that source) of each sample of this rank's micro-batch `micro_step`."""
        return self.order.take(self.layout.positions(self.consumed_samples, micro_step, self.rank))

    def sample_indices(self, micro_step: int) -> list[int]:
        """The sample indices (each in its own source) of this rank's micro-batch `micro_step`."""
        return self.sample_sources(micro_step)[1].tolist()

    def micro_batch(self, micro_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Micro-batch `micro_step` of the current global batch as int64 (B, T) inputs and targets."""
        sources, indices = self.sample_sources(micro_step)
        pairs = zip(sources.tolist(), indices.tolist(), strict=True)
        rows = [self.streams[source].sample(index, self.seq_len) for source, index in pairs]
        return _stack_inputs_targets(rows)

    def global_batch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's micro-batches of the current global batch; call `advance()` after the optimizer step."""
        for micro_step in range(self.layout.grad_accum_steps):
            yield self.micro_batch(micro_step)

    @property
    def epoch(self) -> int:
        """The 0-based epoch of the next sample to draw (a mixture: of its most repeated source)."""
        return max(self.order.epochs(self.consumed_samples))

    def consumed_per_source(self) -> list[int]:
        """Samples drawn so far from each source."""
        return self.order.consumed_per_source(self.consumed_samples)

    def advance(self) -> list[int]:
        """Count the global batch just trained; return the sources whose epoch it finished (log
        `epoch_boundary_line` for each; empty, hence false, when none)."""
        before = self.order.epochs(self.consumed_samples)
        self.consumed_samples += self.layout.global_batch_size
        after = self.order.epochs(self.consumed_samples)
        return [s for s, (b, a) in enumerate(zip(before, after, strict=True)) if a != b]

    def epoch_boundary_line(self, step: int, source: int = 0) -> str:
        """The log line for an epoch boundary of `source` crossed by the batch of `step` (several, for a tiny split)."""
        epoch = self.order.epochs(self.consumed_samples)[source]
        consumed, per_epoch = self.consumed_per_source()[source], self.order.orders[source].num_samples
        what = (
            "the training data" if len(self.streams) == 1 else f"data source {source} ({self.streams[source].data_dir})"
        )
        return (
            f"step {step}: finished epoch {epoch} of {what} ({consumed:,} samples consumed, {per_epoch:,} per "
            f"epoch); epoch {epoch + 1} draws them again, reshuffled"
        )

    def state_dict(self) -> dict:
        return {
            "consumed_samples": self.consumed_samples,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "order": ORDER_VERSION,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint's sampler state; warn (rank 0) when it was written with another shuffle."""
        self.consumed_samples = int(state["consumed_samples"])
        if state.get("order") != ORDER_VERSION and self.rank == 0:
            warnings.warn(
                f"the checkpoint's data order is {state.get('order', 'a materialised permutation (before versions)')}"
                f", this trainer's is {ORDER_VERSION}: the rest of epoch {self.epoch} is drawn in a new order, so "
                "some of its samples repeat and others are skipped until the epoch ends",
                stacklevel=2,
            )


def validation_indices(stream: TokenStream, seq_len: int, val_samples: int) -> list[int]:
    """A fixed set of validation samples spread evenly over the split, the same for every run and world size."""
    available = stream.num_samples(seq_len)
    if available == 0:
        raise PretrainError(f"validation split of {stream.data_dir} is shorter than model.seq_len={seq_len}")
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
    return _stack_inputs_targets([stream.sample(i, seq_len) for i in indices])


def _stack_inputs_targets(rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples of seq_len + 1 tokens as int64 (B, T) inputs and the same shifted by one, targets."""
    tokens = torch.from_numpy(np.stack(rows).astype(np.int64))
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
