"""Mixture and schedule behaviour of real 2-rank CPU launches: per-source tokens and validation losses in
metrics.csv, the data identity in the checkpoint, a relaunch on a changed mixture refused (or recorded with
--allow-data-change), and the learning rate of the first step after raising train.max_steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from support.launch import run_train
from support.mixtures import derived_dataset

from pretrain import schedule
from pretrain.config import load_config
from pretrain.metrics import read_metrics

MIX_SETS = ("train.max_steps=6", "train.eval_interval=3", "train.save_interval=3")


@pytest.fixture(scope="module")
def small(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return derived_dataset(tiny_dataset, tmp_path_factory.mktemp("mix") / "small", keep_docs=100)


def _launch(data: list[str], out: Path, sets: tuple[str, ...] = (), extra: tuple = ()):
    """run_train with several --data flags (run_train names the first)."""
    flags = [arg for path in data[1:] for arg in ("--data", path)]
    return run_train(2, Path(data[0]), out, sets, extra=(*flags, *extra))


def test_a_mixture_run_reports_each_source(tiny_dataset: Path, small: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _launch([f"{tiny_dataset}=3", f"{small}=1"], run, MIX_SETS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "data: a mixture of 2 sources" in proc.stdout
    table = proc.stdout.split("data: a mixture of 2 sources", 1)[1].splitlines()
    assert table[2].split()[:2] == [tiny_dataset.name, "0.750"] and table[3].split()[:2] == ["small", "0.250"]
    rows = read_metrics(run)
    train_rows = [r for r in rows if "loss" in r and "val_loss" not in r]
    for row in train_rows:
        big, little = row[f"tokens/{tiny_dataset.name}"], row["tokens/small"]
        assert big + little == row["consumed_tokens"]
    last = train_rows[-1]  # 6 steps x 32 samples = 192 samples: 144 and 48 by the interleaving
    assert (last[f"tokens/{tiny_dataset.name}"], last["tokens/small"]) == (144 * 32, 48 * 32)
    evals = [r for r in rows if "val_loss" in r]
    assert len(evals) == 3  # steps 0, 3, 6
    for row in evals:
        weighted = 0.75 * row[f"val_loss/{tiny_dataset.name}"] + 0.25 * row["val_loss/small"]
        assert row["val_loss"] == pytest.approx(weighted, rel=1e-6)
    client = json.loads((run / "checkpoints" / "step00000006" / "client_state.json").read_text())
    assert [(s["name"], s["weight"]) for s in client["data"]] == [(tiny_dataset.name, 0.75), ("small", 0.25)]

    refused = _launch([f"{tiny_dataset}=1", f"{small}=1"], run, (*MIX_SETS, "train.max_steps=9"))
    assert refused.returncode != 0 and "pretrain.train: rank 0: error:" in refused.stderr, refused.stderr[-3000:]
    assert f"data source '{tiny_dataset.name}' weight: 0.75 -> 0.5" in refused.stderr
    assert "--allow-data-change if meant" in refused.stderr
    allowed = _launch(
        [f"{tiny_dataset}=1", f"{small}=1"], run, (*MIX_SETS, "train.max_steps=9"), extra=("--allow-data-change",)
    )
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    record = yaml.safe_load(sorted((run / "launches").glob("*.yaml"))[-1].read_text())
    assert f"data source '{tiny_dataset.name}' weight: 0.75 -> 0.5" in record["data_changes_allowed"]


def test_raising_max_steps_at_relaunch_uses_the_new_schedule_from_the_first_step(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    sets = ("optim.warmup_steps=3",)
    first = run_train(2, tiny_dataset, run, (*sets, "train.max_steps=6"))
    assert first.returncode == 0, first.stderr[-3000:]
    extended = run_train(2, tiny_dataset, run, (*sets, "train.max_steps=12"))
    assert extended.returncode == 0, extended.stderr[-3000:]
    cfg = load_config("debug", None, ["model.vocab_size=256", *sets, "train.max_steps=12"])
    lr = {int(r["step"]): r["lr"] for r in read_metrics(run) if "lr" in r}
    for step in range(7, 13):
        assert lr[step] == pytest.approx(cfg.optim.lr * schedule.lr_ratio(step - 1, cfg.optim, 12), rel=1e-9), step
    assert lr[7] == pytest.approx(6.28e-4, rel=1e-3)  # the old 6-step schedule's would be 1.0e-4


def test_documents_apart_qk_norm_z_loss_and_wsd_train_under_zero3(tiny_dataset: Path, tmp_path: Path) -> None:
    """The new model options under the real engine (ZeRO-3, activation checkpointing of every block, 2 ranks):
    the EOS id comes from the dataset, the loss falls, and the WSD schedule's rates are the ones logged."""
    run = tmp_path / "run"
    sets = ("model.doc_mask=true", "model.doc_positions_reset=true", "model.qk_norm=true", "model.z_loss=1e-4")
    sets += ("optim.schedule=wsd", "optim.decay_fraction=0.5", "optim.warmup_steps=2", "train.max_steps=8")
    proc = run_train(2, tiny_dataset, run, sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["eos_id"] == json.loads((tiny_dataset / "manifest.json").read_text())["eos_id"]
    cfg = load_config(None, run / "config.yaml")
    rows = [r for r in read_metrics(run) if "lr" in r]
    assert [r["lr"] for r in rows] == pytest.approx(
        [cfg.optim.lr * schedule.lr_ratio(step, cfg.optim, 8) for step in range(8)], rel=1e-9
    )
    assert rows[-1]["loss"] < rows[0]["loss"]
