"""`mpiexec -n 2` for real: the trainer through launch/mpi.sh (DeepSpeed's MPI discovery) and the pipeline.

mpiexec is the mpich wheel's, next to the venv's python. The trainer run must write one checkpoint holding both
ranks' ZeRO partitions; the pipeline run on 2 ranks must produce the same documents, token counts and shards
as the same run on 1 rank.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.launch import free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MPIEXEC = shutil.which("mpiexec", path=str(BIN)) or shutil.which("mpiexec")

pytestmark = [pytest.mark.slow, pytest.mark.mpi]


def mpi_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHON=sys.executable)
    env["MASTER_PORT"] = str(free_port())
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def require_mpiexec() -> None:
    if MPIEXEC is None:
        pytest.skip(f"SKIPPED LOUDLY: no mpiexec next to {sys.executable} or on PATH (pip install mpich)")


def test_trainer_on_two_mpi_ranks(tmp_path: Path, tiny_dataset: Path) -> None:
    require_mpiexec()
    run_dir = tmp_path / "run"
    args = ["--data", str(tiny_dataset), "--preset", "debug", "--output", str(run_dir), "--set", "train.max_steps=3"]
    done = subprocess.run(
        [str(REPO / "launch" / "mpi.sh"), "-n", "2", "--", *args],
        env=mpi_env(),
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    out = done.stdout + done.stderr
    assert "[0] " in out and "[1] " in out, "mpiexec -prepend-rank should tag both ranks' output"

    checkpoints = run_dir / "checkpoints"
    tag = (checkpoints / "latest").read_text().strip()
    files = {p.name for p in (checkpoints / tag).iterdir()}
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= files
    ds_config = json.loads((run_dir / "ds_config.json").read_text())
    assert ds_config["train_batch_size"] == (
        ds_config["train_micro_batch_size_per_gpu"] * ds_config["gradient_accumulation_steps"] * 2
    )


def small_pipeline_input(folder: Path, n_docs: int = 300) -> tuple[Path, Path]:
    """The first `n_docs` documents of the built-in demo corpus and its recipe with a small vocabulary."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    full = folder / "demo_full.jsonl"
    made = subprocess.run(
        [str(BIN / "pipeline"), "demo-corpus", str(full)], env=mpi_env(), capture_output=True, text=True, timeout=120
    )
    assert made.returncode == 0, made.stderr
    corpus = folder / "demo.jsonl"
    with full.open() as src:
        corpus.write_text("".join(line for _, line in zip(range(n_docs), src, strict=False)))
    recipe = yaml.safe_load(full.with_suffix(".recipe.yaml").read_text()) or {}
    recipe.setdefault("tokenizer", {}).update(vocab_size=512, num_threads=1)
    recipe["workers"] = 1
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return corpus, folder / "recipe.yaml"


def run_pipeline(corpus: Path, recipe: Path, out: Path, ranks: int) -> subprocess.CompletedProcess:
    argv = [str(BIN / "pipeline"), "run", "--input", str(corpus), "--output", str(out), "--config", str(recipe)]
    if ranks > 1:
        argv = [str(MPIEXEC), "-n", str(ranks), *argv]
    return subprocess.run(argv, env=mpi_env(), capture_output=True, text=True, timeout=300)


def test_pipeline_on_two_mpi_ranks_matches_one_rank(tmp_path: Path) -> None:
    require_mpiexec()
    corpus, recipe = small_pipeline_input(tmp_path)
    runs = {}
    for ranks in (1, 2):
        done = run_pipeline(corpus, recipe, tmp_path / f"out{ranks}", ranks)
        assert done.returncode == 0, f"{ranks} rank(s):\n{(done.stdout + done.stderr)[-4000:]}"
        runs[ranks] = tmp_path / f"out{ranks}"

    stats = {r: json.loads((d / "stats.json").read_text()) for r, d in runs.items()}
    manifests = {r: json.loads((d / "manifest.json").read_text()) for r, d in runs.items()}
    assert stats[1]["ranks"] == 1 and stats[2]["ranks"] == 2, "mpiexec -n 2 must give the pipeline 2 MPI ranks"
    assert stats[2]["input_docs"] == sum(1 for _ in corpus.open())
    assert stats[2]["kept_docs"] > 0 and manifests[2]["splits"]["train"]["num_tokens"] > 0
    assert stats[2]["input_docs"] == stats[2]["kept_docs"] + sum(stats[2]["dropped"].values())
    assert stats[2]["kept_docs"] == stats[1]["kept_docs"] and stats[2]["dropped"] == stats[1]["dropped"]
    for split, entry in manifests[1]["splits"].items():
        assert manifests[2]["splits"][split]["num_docs"] == entry["num_docs"]
        assert manifests[2]["splits"][split]["num_tokens"] == entry["num_tokens"]
