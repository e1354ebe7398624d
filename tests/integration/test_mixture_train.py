"""Mixture, schedule and model-option behaviour of real 2-rank CPU launches (ZeRO-3, activation checkpointing of
every block), all read from one run folder launched three times (`relaunched_mixture`):

1. a 3:1 mixture of two sources, 6 steps, with the model options doc_mask, doc_positions_reset, qk_norm, z_loss
   and the WSD schedule: per-source tokens and validation losses in metrics.csv, the data identity in the
   checkpoint, the EOS id from the dataset, WSD's rates logged, the loss falling;
2. a relaunch on a 1:1 mixture, refused (the data identity changed);
3. the same relaunch with --allow-data-change and train.max_steps raised to 12: the change recorded, and the
   learning rate of the first step after raising train.max_steps taken from the new schedule.

The mixture's accounting does not depend on the model options, nor the schedule on the data, so one folder proves
each property; three launches instead of six.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support.batches import one_micro_batch
from support.launch import run_train
from support.mixtures import derived_dataset

from pretrain import schedule
from pretrain.config import RunConfig, load_config
from pretrain.metrics import read_metrics

MODEL_SETS = ("model.doc_mask=true", "model.doc_positions_reset=true", "model.qk_norm=true", "model.z_loss=1e-4")
WSD_SETS = ("optim.schedule=wsd", "optim.decay_fraction=0.5", "optim.warmup_steps=2")
RUN_SETS = (*MODEL_SETS, *WSD_SETS, "train.eval_interval=3", "train.save_interval=3", one_micro_batch(2))
FIRST_STEPS, RAISED_STEPS = 6, 12


def _launch(data: list[str], out: Path, sets: tuple[str, ...], extra: tuple = ()) -> subprocess.CompletedProcess:
    """run_train with several --data flags (run_train names the first). The wide timeout only bounds a hang: a
    launch that finds the shared DeepSpeed op cache stale waits minutes for its rebuild on a loaded machine."""
    flags = [arg for path in data[1:] for arg in ("--data", path)]
    return run_train(2, Path(data[0]), out, sets, extra=(*flags, *extra), timeout=600)


@dataclass(frozen=True)
class RelaunchedMixture:
    """The three launches of one run folder (module docstring), and what the first left before the relaunches
    appended to metrics.csv and train.keep_last deleted its last checkpoint."""

    run: Path
    first: subprocess.CompletedProcess
    refused: subprocess.CompletedProcess
    allowed: subprocess.CompletedProcess
    first_rows: list[dict]  # metrics.csv after the first launch
    first_config: RunConfig
    first_client: dict  # client_state.json of its step-6 checkpoint


@pytest.fixture(scope="module")
def relaunched_mixture(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> RelaunchedMixture:
    folder = tmp_path_factory.mktemp("mix")
    small, run = derived_dataset(tiny_dataset, folder / "small", keep_docs=100), folder / "run"
    first = _launch([f"{tiny_dataset}=3", f"{small}=1"], run, (*RUN_SETS, f"train.max_steps={FIRST_STEPS}"))
    assert first.returncode == 0, first.stderr[-3000:]
    first_rows, first_config = read_metrics(run), load_config(None, run / "config.yaml")  # before relaunches
    first_client = json.loads(
        (run / "checkpoints" / f"step{FIRST_STEPS:08d}" / "client_state.json").read_text()
    )  # keep_last
    even, raised = [f"{tiny_dataset}=1", f"{small}=1"], (*RUN_SETS, f"train.max_steps={RAISED_STEPS}")
    refused = _launch(even, run, raised)
    allowed = _launch(even, run, raised, extra=("--allow-data-change",))
    return RelaunchedMixture(run, first, refused, allowed, first_rows, first_config, first_client)


def test_a_mixture_run_reports_each_source(relaunched_mixture: RelaunchedMixture, tiny_dataset: Path) -> None:
    proc, rows = relaunched_mixture.first, relaunched_mixture.first_rows
    assert "data: a mixture of 2 sources" in proc.stdout
    table = proc.stdout.split("data: a mixture of 2 sources", 1)[1].splitlines()
    assert table[2].split()[:2] == [tiny_dataset.name, "0.750"] and table[3].split()[:2] == ["small", "0.250"]
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
    client = relaunched_mixture.first_client
    assert [(s["name"], s["weight"]) for s in client["data"]] == [(tiny_dataset.name, 0.75), ("small", 0.25)]


def test_a_changed_mixture_is_refused_unless_allowed_and_then_recorded(
    relaunched_mixture: RelaunchedMixture, tiny_dataset: Path
) -> None:
    refused, allowed = relaunched_mixture.refused, relaunched_mixture.allowed
    assert refused.returncode != 0 and "pretrain.train: rank 0: error:" in refused.stderr, refused.stderr[-3000:]
    assert f"data source '{tiny_dataset.name}' weight: 0.75 -> 0.5" in refused.stderr
    assert "--allow-data-change if meant" in refused.stderr
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    record = yaml.safe_load(sorted((relaunched_mixture.run / "launches").glob("*.yaml"))[-1].read_text())
    assert f"data source '{tiny_dataset.name}' weight: 0.75 -> 0.5" in record["data_changes_allowed"]


def test_raising_max_steps_at_relaunch_uses_the_new_schedule_from_the_first_step(
    relaunched_mixture: RelaunchedMixture,
) -> None:
    assert relaunched_mixture.allowed.returncode == 0, relaunched_mixture.allowed.stderr[-3000:]
    optim = relaunched_mixture.first_config.optim
    lr = {int(r["step"]): r["lr"] for r in read_metrics(relaunched_mixture.run) if "lr" in r}
    assert sorted(lr) == list(range(1, RAISED_STEPS + 1))
    for step in range(FIRST_STEPS + 1, RAISED_STEPS + 1):
        assert lr[step] == pytest.approx(optim.lr * schedule.lr_ratio(step - 1, optim, RAISED_STEPS), rel=1e-9), step
    # WSD decaying over the last 6 of 12 steps, 1-sqrt shape: 1e-3 x (0.1 + 0.9 (1 - sqrt(1/6))); the old
    # 6-step schedule had decayed to its minimum, 1.0e-4, by then
    assert lr[FIRST_STEPS + 1] == pytest.approx(6.326e-4, rel=1e-3)


def test_documents_apart_qk_norm_z_loss_and_wsd_train_under_zero3(
    relaunched_mixture: RelaunchedMixture, tiny_dataset: Path
) -> None:
    """The model options under the real engine: the EOS id comes from the dataset, the loss falls, and the WSD
    schedule's rates are the ones logged."""
    cfg, rows = relaunched_mixture.first_config, relaunched_mixture.first_rows
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    assert cfg.model.eos_id == manifest["eos_id"]
    assert (cfg.model.doc_mask, cfg.model.qk_norm, cfg.model.z_loss) == (True, True, 1e-4)  # trained with them
    train_rows = [r for r in rows if "lr" in r]
    assert [r["lr"] for r in train_rows] == pytest.approx(
        [cfg.optim.lr * schedule.lr_ratio(step, cfg.optim, FIRST_STEPS) for step in range(FIRST_STEPS)], rel=1e-9
    )
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
