"""The sampler: disjoint across ranks, order independent of world size, exact resume, epoch reshuffle."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from data_pipeline.shards import TokenStream
from pretrain.data import (
    BatchLayout,
    SampleOrder,
    TrainSampler,
    epoch_plan,
    validation_batches,
    validation_indices,
)

SEQ = 16
GLOBAL = 16  # samples per global batch


def _samplers(stream: TokenStream, world: int, consumed: int = 0, micro: int = 2) -> list[TrainSampler]:
    layout = BatchLayout(micro, world, GLOBAL // (micro * world))
    return [TrainSampler(stream, SEQ, 7, layout, r, consumed) for r in range(world)]


def _global_batch(samplers: list[TrainSampler]) -> list[int]:
    """Indices of one global batch in (micro-step, rank) order, then advance every rank."""
    accum = samplers[0].layout.grad_accum_steps
    out = [i for m in range(accum) for s in samplers for i in s.sample_indices(m)]
    for s in samplers:
        s.advance()
    return out


@pytest.fixture(scope="module")
def stream(tiny_dataset) -> TokenStream:
    return TokenStream(tiny_dataset, "train")


def test_order_is_a_permutation_per_epoch_and_reshuffles(stream: TokenStream) -> None:
    order = SampleOrder(stream.num_samples(SEQ), seed=7)
    n = order.num_samples
    epoch0 = [order[p] for p in range(n)]
    epoch1 = [order[p] for p in range(n, 2 * n)]
    assert sorted(epoch0) == list(range(n)) == sorted(epoch1)
    assert epoch0 != epoch1
    assert epoch0 == [SampleOrder(n, seed=7)[p] for p in range(n)]


@pytest.mark.parametrize("world", [1, 2, 4])
def test_ranks_are_disjoint_and_cover_the_global_batch(stream: TokenStream, world: int) -> None:
    samplers = _samplers(stream, world)
    accum = samplers[0].layout.grad_accum_steps
    per_rank = [[i for m in range(accum) for i in s.sample_indices(m)] for s in samplers]
    flat = [i for r in per_rank for i in r]
    assert len(flat) == GLOBAL == len(set(flat))
    order = SampleOrder(stream.num_samples(SEQ), 7)
    assert sorted(flat) == sorted(order[p] for p in range(GLOBAL))


def test_global_order_does_not_depend_on_world_size(stream: TokenStream) -> None:
    runs = {}
    for world in (1, 2, 4):
        samplers = _samplers(stream, world)
        runs[world] = [_global_batch(samplers) for _ in range(5)]
    assert runs[1] == runs[2] == runs[4]


def test_resume_from_consumed_samples_on_another_world_size(stream: TokenStream) -> None:
    straight = _samplers(stream, 2)
    batches = [_global_batch(straight) for _ in range(6)]
    consumed = straight[0].consumed_samples - 3 * GLOBAL
    resumed = _samplers(stream, 4, consumed=consumed)
    assert [_global_batch(resumed) for _ in range(3)] == batches[3:]
    assert straight[0].state_dict()["consumed_samples"] == 6 * GLOBAL


def test_micro_batch_tensors_are_shifted_windows(stream: TokenStream) -> None:
    sampler = _samplers(stream, 2)[1]
    x, y = sampler.micro_batch(0)
    assert x.shape == y.shape == (2, SEQ)
    for row, index in enumerate(sampler.sample_indices(0)):
        window = stream.sample(index, SEQ).astype(np.int64)
        assert x[row].tolist() == window[:-1].tolist() and y[row].tolist() == window[1:].tolist()


def test_consumed_samples_must_be_whole_batches(stream: TokenStream) -> None:
    with pytest.raises(ValueError, match="global_batch_tokens"):
        _samplers(stream, 2, consumed=GLOBAL + 2)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_validation_split_counts_each_window_once(tiny_dataset, world: int) -> None:
    val = TokenStream(tiny_dataset, "validation")
    indices = validation_indices(val, SEQ, 11)
    assert len(indices) == 11 == len(set(indices))
    seen, counts = [], []
    for rank in range(world):
        batches = list(validation_batches(val, SEQ, indices, 2, rank, world))
        counts.append(len(batches))
        seen += [tuple(x[i].tolist()) for x, _, n in batches for i in range(n)]
        assert sum(n for *_, n in batches) == len(indices[rank::world])
    assert len(set(counts)) == 1  # collective forwards: every rank runs the same number
    assert sorted(seen) == sorted(tuple(val.sample(j, SEQ)[:-1].tolist()) for j in indices)


# --------------------------------------------------------------------------- the O(1)-memory shuffle


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 255, 256, 257, 1000, 4099])
def test_order_is_a_permutation_for_any_split_size(n: int) -> None:
    order = SampleOrder(n, seed=3)
    for epoch in range(3):
        assert sorted(order.take(range(epoch * n, (epoch + 1) * n)).tolist()) == list(range(n)), epoch


def test_order_is_deterministic_and_depends_on_seed_and_epoch() -> None:
    n = 5000
    first = SampleOrder(n, seed=11).take(range(2 * n))
    assert first.tolist() == SampleOrder(n, seed=11).take(range(2 * n)).tolist()
    assert [SampleOrder(n, seed=11)[p] for p in (0, 1, n - 1, n, 2 * n - 1)] == first[[0, 1, n - 1, n, -1]].tolist()
    assert (first[:n] != SampleOrder(n, seed=12).take(range(n))).mean() > 0.99
    assert (first[:n] != first[n:]).mean() > 0.99


def test_order_mixes_the_whole_split() -> None:
    """Statistics of a uniformly random permutation: mean displacement n/3, neighbours land far apart."""
    n = 10007
    perm = SampleOrder(n, seed=7).take(range(n))
    displacement = np.abs(perm - np.arange(n)).mean() / n
    assert 0.32 < displacement < 0.35
    assert (np.abs(np.diff(perm)) < 16).mean() < 0.01  # a random order: ~32/n; a blocked shuffle: most of them
    assert abs(np.corrcoef(perm, np.arange(n))[0, 1]) < 0.05


def test_order_memory_does_not_grow_with_the_split() -> None:
    """146M samples (a 300B-token corpus at seq 2048): a materialised int64 permutation is 1.17 GB per rank."""
    import tracemalloc

    SampleOrder(10, seed=0).take(range(20))  # numpy's one-time set-up (~1 MB) is not the order's
    tracemalloc.start()
    order = SampleOrder(146_000_000, seed=1234)
    end_of_epoch = range(146_000_000 - 512, 146_000_000 + 512)  # a global batch across the epoch boundary
    indices = order.take(end_of_epoch)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 256 * 1024, peak  # a few arrays of 1024 positions
    assert len(set(indices.tolist())) == 1024 and indices.min() >= 0 and indices.max() < 146_000_000


# --------------------------------------------------------------------------- epochs


def test_epoch_plan_warns_past_one_epoch() -> None:
    (within,) = epoch_plan(max_steps=10, global_batch_size=8, num_samples=100, seq_len=32)
    assert "100 training samples of 32 tokens (3,200 tokens)" in within and "= 80 samples = 0.8 epochs" in within
    info, warning = epoch_plan(max_steps=30, global_batch_size=8, num_samples=100, seq_len=32)
    assert "2.4 epochs" in info
    assert warning.startswith("warning: train.max_steps=30 needs 2.4 epochs")


def test_advance_reports_each_epoch_boundary(stream: TokenStream) -> None:
    (sampler,) = _samplers(stream, 1)
    n = sampler.order.num_samples
    finished = [step for step in range(1, 2 * n // GLOBAL + 2) if sampler.advance()]
    assert finished == [-(-n // GLOBAL), -(-2 * n // GLOBAL)]  # the steps whose batch ends epoch 1, then epoch 2
    assert sampler.epoch == 2
    assert sampler.epoch_boundary_line(finished[-1]).startswith(f"step {finished[-1]}: finished epoch 2")


def test_sampler_state_round_trips_and_flags_another_order(stream: TokenStream) -> None:
    straight = _samplers(stream, 2)
    for _ in range(3):
        _global_batch(straight)
    resumed = _samplers(stream, 1)
    resumed[0].load_state_dict(straight[0].state_dict())
    assert _global_batch(resumed) == _global_batch(straight)
    with pytest.warns(UserWarning, match="data order is a materialised permutation"):
        resumed[0].load_state_dict({"consumed_samples": 0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        straight[1].load_state_dict({"consumed_samples": 0})  # said once, by rank 0
