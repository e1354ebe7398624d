"""Weighted mixtures (pretrain/mixture.py): the interleaved order, its share per window, exact resume at any world
size, one tokenizer, the data identity a checkpoint records, and the table before a run. In-process, no launches."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from support.mixtures import derived_dataset

from data_pipeline.shards import TokenStream, read_manifest
from pretrain import mixture
from pretrain.config import load_config
from pretrain.data import BatchLayout, SampleOrder, TrainSampler
from pretrain.errors import ConfigError

SEQ = 16


@pytest.fixture(scope="module")
def two_sources(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_dataset, derived_dataset(tiny_dataset, tmp_path_factory.mktemp("mix") / "small", keep_docs=100)


def test_a_one_source_mixture_is_the_single_dataset_order() -> None:
    order = mixture.MixtureOrder([1000], [1.0], seed=7)
    sources, samples = order.take(range(3000))
    assert set(sources.tolist()) == {0}
    assert samples.tolist() == SampleOrder(1000, seed=7).take(range(3000)).tolist()


@pytest.mark.parametrize("weights", [(0.7, 0.3), (0.6, 0.25, 0.15), (0.5, 0.3, 0.15, 0.05)])
def test_every_window_of_200_samples_is_within_1_percent_of_the_weights(weights: tuple[float, ...]) -> None:
    order = mixture.MixtureOrder([50_000] * len(weights), weights, seed=3)
    n = 3 * mixture.BLOCK + 1234  # crosses block boundaries
    sources, _ = order.take(range(n))
    for s, weight in enumerate(weights):
        running = np.concatenate([[0], np.cumsum(sources == s)])
        for window in (200, 1000, 4096):
            counts = running[window:] - running[:-window]  # every window of this length
            worst = np.abs(counts - window * weight).max()
            assert worst <= 2 + window / (2 * mixture.BLOCK), (s, window, worst)
            assert np.abs(counts / window - weight).max() <= 0.01


def test_each_source_is_drawn_in_its_own_order_without_gaps() -> None:
    """Source s's own positions over [0, n) are exactly 0..count-1, so each source is a permutation per epoch."""
    order = mixture.MixtureOrder([300, 70], [0.8, 0.2], seed=5)
    n = 2 * mixture.BLOCK + 77
    sources, own = order.source_positions(range(n))
    counts = order.consumed_per_source(n)
    for s in (0, 1):
        assert sorted(own[sources == s].tolist()) == list(range(counts[s]))
    _, samples = order.take(range(n))
    first_epoch = samples[sources == 1][:70]
    assert sorted(first_epoch.tolist()) == list(range(70))  # one pass over the 70 samples of source 1
    assert order.epochs(n) == [counts[0] // 300, counts[1] // 70]


def _global_batch(streams: list[TokenStream], world: int, consumed: int, weights: list[float]) -> list[tuple]:
    """(source, sample) of every sample of one global batch of 16, in (micro-step, rank) order."""
    layout = BatchLayout(2, world, 16 // (2 * world))
    samplers = [TrainSampler(streams, SEQ, 11, layout, r, consumed, weights=weights) for r in range(world)]
    return [
        pair
        for m in range(layout.grad_accum_steps)
        for sampler in samplers
        for pair in zip(*(a.tolist() for a in sampler.sample_sources(m)), strict=True)
    ]


def test_the_mixture_order_is_the_same_at_any_world_size_and_resumes_exactly(two_sources) -> None:
    streams = [TokenStream(p, "train") for p in two_sources]
    weights = [0.75, 0.25]
    one_rank = [_global_batch(streams, 1, 16 * step, weights) for step in range(6)]
    for world in (2, 4):
        assert [_global_batch(streams, world, 16 * step, weights) for step in range(6)] == one_rank
    layout = BatchLayout(2, 1, 8)
    sampler = TrainSampler(streams, SEQ, 11, layout, 0, weights=weights)
    for _ in range(3):
        sampler.advance()
    resumed = TrainSampler(streams, SEQ, 11, layout, 0, weights=weights)
    resumed.load_state_dict(sampler.state_dict())
    x_straight, _ = sampler.micro_batch(0)
    x_resumed, _ = resumed.micro_batch(0)
    assert x_straight.equal(x_resumed)
    sources, indices = resumed.sample_sources(0)
    expected = [streams[s].sample(i, SEQ)[:-1] for s, i in zip(sources.tolist(), indices.tolist(), strict=True)]
    assert np.array_equal(x_resumed.numpy(), np.stack(expected))  # the rows are the named sources' samples


def test_data_flags_become_data_path_or_data_mix(two_sources) -> None:
    big, small = two_sources
    assert mixture.data_overrides([str(big)]) == [f"data.path={big}"]
    overrides = mixture.data_overrides([f"{big}=3", f"{small}=1"])
    cfg = load_config("debug", None, ["model.vocab_size=256", *overrides])
    assert [(s.name, s.weight) for s in mixture.sources(cfg.data)] == [(big.name, 0.75), ("small", 0.25)]
    assert cfg.data.tokenizer_dataset == str(big)
    with pytest.raises(ConfigError, match="weight 'x' is not a number"):
        mixture.data_overrides([f"{big}=x"])
    with pytest.raises(ConfigError, match=r"data.mix\[1\].weight: must be a positive number"):
        load_config("debug", None, ['data.mix=[{"path": "a"}, {"path": "b", "weight": 0}]'])
    with pytest.raises(ConfigError, match="used twice"):
        load_config("debug", None, ['data.mix=[{"path": "x/a"}, {"path": "y/a"}]'])


def test_sources_with_another_tokenizer_are_refused_naming_both(two_sources, tmp_path: Path) -> None:
    big, small = two_sources
    other = tmp_path / "other"
    shutil.copytree(small, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["tokenizer"]["sha256"] = "f" * 64
    (other / "manifest.json").write_text(json.dumps(manifest))
    sources = [mixture.Source("big", str(big), 0.5), mixture.Source("other", str(other), 0.5)]
    with pytest.raises(ConfigError, match=rf"{other} \(other\) and {big} \(big\) were tokenized differently"):
        mixture.read_manifests(sources)


def test_identity_names_what_changed(two_sources, tmp_path: Path) -> None:
    big, small = two_sources
    sources = [mixture.Source("big", str(big), 0.75), mixture.Source("small", str(small), 0.25)]
    before = mixture.identity(sources, mixture.read_manifests(sources), SEQ)
    assert before[1]["train_samples"] == TokenStream(small, "train").num_samples(SEQ)
    assert mixture.identity_changes(before, before) == []
    grown = derived_dataset(big, tmp_path / "small", keep_docs=150)
    moved = [sources[0], mixture.Source("small", str(grown), 0.25)]
    after = mixture.identity(moved, mixture.read_manifests(moved), SEQ)
    changes = mixture.identity_changes(before, after)
    assert any(c.startswith("data source 'small' manifest_sha256:") for c in changes)
    assert any(c.startswith("data source 'small' train_samples:") for c in changes)
    reweighted = [{**before[0], "weight": 0.5}, {**before[1], "name": "code"}]
    assert mixture.identity_changes(before, reweighted) == [
        "data source 'small' removed",
        "data source 'code' added",
        "data source 'big' weight: 0.75 -> 0.5",
    ]


def test_plan_table_counts_tokens_and_warns_about_repeats() -> None:
    sources = [mixture.Source("web", "d/web", 0.7), mixture.Source("code", "d/code", 0.3)]
    lines = mixture.plan_table(sources, [1_000_000, 10_000], seq_len=100, planned_samples=200_000)
    web, code = lines[1], lines[2]
    assert web.split()[:5] == ["web", "0.700", "100,000,000", "14,000,000", "0.14"]
    assert code.split()[:5] == ["code", "0.300", "1,000,000", "6,000,000", "6"]
    assert lines[3].startswith("warning: data source 'code' is repeated 6 times")
    assert len(lines) == 4


def test_the_order_of_a_large_mixture_needs_no_table_per_sample() -> None:
    import tracemalloc

    mixture.MixtureOrder([10, 10], [0.5, 0.5], seed=0).take(range(20))  # numpy's one-time set-up
    tracemalloc.start()
    order = mixture.MixtureOrder([146_000_000, 30_000_000], [0.8, 0.2], seed=1)
    sources, samples = order.take(range(10**9, 10**9 + 1024))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 * 1024 * 1024, peak  # the per-block tables (BLOCK slots), not anything per sample
    assert set(sources.tolist()) == {0, 1} and samples.max() < 146_000_000


def test_pretrain_plan_prints_the_per_source_table(two_sources, capsys) -> None:
    from pretrain import cli

    big, small = two_sources
    argv = ["plan", "--preset", "debug", "--data", f"{big}=0.7", "--data", f"{small}=0.3"]
    assert cli.main([*argv, "--set", "model.seq_len=16", "--set", "train.max_steps=100"]) == 0
    out = capsys.readouterr().out.splitlines()
    header = out.index("data")
    samples = [TokenStream(p, "train").num_samples(16) for p in two_sources]
    big_row, small_row = out[header + 2].split(), out[header + 3].split()
    drawn = [70 * 64 * 16, 30 * 64 * 16]  # 100 steps x 64 samples of 16 tokens, 70% and 30%
    assert big_row[:4] == [big.name, "0.700", f"{samples[0] * 16:,}", f"{drawn[0]:,}"]
    assert small_row[:4] == ["small", "0.300", f"{samples[1] * 16:,}", f"{drawn[1]:,}"]
    assert float(small_row[4]) == pytest.approx(30 * 64 / samples[1], rel=1e-2)


@pytest.mark.filterwarnings("ignore:.*MANIFEST")  # a hand-made checkpoint has no checksum file
def test_a_resume_on_a_grown_dataset_is_refused_unless_allowed(two_sources, tmp_path: Path) -> None:
    """The single-dataset case the issue measured: a grown dataset used to re-permute the order silently."""
    from pretrain import run_folder

    big, small = two_sources
    grown = derived_dataset(big, tmp_path / "small", keep_docs=150)  # the same name, more samples
    config = load_config("debug", None, ["model.vocab_size=256", f"data.path={small}"]).to_dict()
    saved = mixture.identity([mixture.Source("small", str(small), 1.0)], [read_manifest(small)], 128)
    tag = tmp_path / "run" / "checkpoints" / "step00000004"
    tag.mkdir(parents=True)
    (tag / "COMPLETE").write_text("{}")
    (tag / "client_state.json").write_text(json.dumps({"step": 4, "config": config, "data": saved}))
    now = mixture.identity([mixture.Source("small", str(grown), 1.0)], [read_manifest(grown)], 128)
    run_dir, manifest = tmp_path / "run", read_manifest(grown)
    with pytest.raises(run_folder.RunFolderError, match="data source 'small' train_samples: .*--allow-data-change"):
        run_folder.check_launch(run_dir, config, manifest, "auto", data=run_folder.DataLaunch(now))
    found = run_folder.check_launch(run_dir, config, manifest, "auto", data=run_folder.DataLaunch(now, True))
    record, _ = run_folder.record_launch(run_dir, config, found, data=run_folder.DataLaunch(now, True))
    changes = yaml.safe_load(record.read_text())["data_changes_allowed"]
    assert [c.split(":")[0] for c in changes] == [
        "data source 'small' manifest_sha256",
        "data source 'small' train_samples",
    ]
