"""One rank fails, the whole job ends loudly; Ctrl-C and SIGTERM leave no worker behind; a killed run resumes.

The faults come from outside the product: tests/support/pipeline_faults/sitecustomize.py (on PYTHONPATH) replaces one
function on rank 1 only, or limits rank 1's file sizes (RLIMIT_FSIZE). Under `mpiexec -n 2` the job must end
non-zero well within 60 s, print rank 1's error with its rank number, and leave no stage completion marker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from support.corpus import synthetic_docs
from support.fault_support import pipeline_fault_env
from support.launch import ROOT

pytestmark = pytest.mark.slow

PIPELINE = str(ROOT / ".venv" / "bin" / "pipeline")
MPIEXEC = str(ROOT / ".venv" / "bin" / "mpiexec")
SMALL = ["--set", "workers=1", "--set", "dedup.num_perm=16", "--set", "filters.enabled=false"]


def write_corpus(folder: Path, files: int, docs_per_file: int, seed: int = 3) -> Path:
    """`files` jsonl files of pseudo-prose with an exact copy in each, so every phase has work."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = synthetic_docs(files * docs_per_file, seed=seed)
    for k in range(files):
        part = docs[k * docs_per_file : (k + 1) * docs_per_file]
        part[-1] = docs[0]
        lines = (json.dumps({"id": f"{k}-{i}", "text": " ".join([t] * 4)}) + "\n" for i, t in enumerate(part))
        (folder / f"part{k:02d}.jsonl").write_text("".join(lines))
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("rank_faults") / "corpus", files=2, docs_per_file=40)


PHASES = {
    "scan (read, filters, MinHash)": {"PIPELINE_FAULT": "data_pipeline.steps:scan_batch"},
    "exact dedup": {"PIPELINE_FAULT": "data_pipeline.dedup.exact:find_exact_duplicates"},
    "near dedup": {"PIPELINE_FAULT": "data_pipeline.dedup.lsh:find_near_duplicates"},
    "clusters": {"PIPELINE_FAULT": "data_pipeline.dedup.clusters:fetch_ids"},
    "ledger and stats": {"PIPELINE_FAULT": "data_pipeline.stages.finish:task_ledger"},
}


@pytest.mark.mpi
@pytest.mark.parametrize("phase", list(PHASES))
def test_a_fault_on_one_rank_ends_the_job_with_that_ranks_error(phase: str, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [MPIEXEC, "-n", "2", PIPELINE, "dedup", "--input", str(corpus), "--output", str(out), "--quiet", *SMALL]
    started = time.monotonic()
    proc = subprocess.run(cmd, env=pipeline_fault_env(**PHASES[phase]), capture_output=True, text=True, timeout=120)
    assert time.monotonic() - started < 60, f"{phase}: the job took more than 60 s to end"
    assert proc.returncode != 0
    target = PHASES[phase]["PIPELINE_FAULT"]
    assert f"pipeline dedup: rank 1 of 2: error: MemoryError: injected fault in {target}" in proc.stderr, proc.stderr
    assert not (out / ".stages" / "dedup.json").exists()


@pytest.mark.mpi
def test_a_file_size_limit_on_one_rank_ends_the_job_naming_the_file(corpus: Path, tmp_path: Path) -> None:
    """Rank 1 (task 0: the larger task 1 went to rank 0) may write 20 KB files: its scan files fit, its kept part not."""
    out = tmp_path / "out"
    cmd = [MPIEXEC, "-n", "2", PIPELINE, "dedup", "--input", str(corpus), "--output", str(out), "--quiet", *SMALL]
    started = time.monotonic()
    proc = subprocess.run(
        cmd, env=pipeline_fault_env(PIPELINE_FSIZE_LIMIT="20000"), capture_output=True, text=True, timeout=120
    )
    assert time.monotonic() - started < 60
    assert proc.returncode != 0
    assert f"pipeline dedup: rank 1 of 2: error: {out}/kept/part-00000.jsonl: cannot write (File too large)" in (
        proc.stderr
    ), proc.stderr
    assert not (out / ".stages" / "dedup.json").exists() and not (out / "kept" / ".part-00000.jsonl.tmp").exists()


@pytest.mark.mpi
def test_a_fault_in_the_tokenize_stage_ends_the_job(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [MPIEXEC, "-n", "2", PIPELINE, "run", "--input", str(corpus), "--output", str(out), "--quiet", *SMALL,
           "--set", "tokenizer.vocab_size=500"]  # fmt: skip
    env = pipeline_fault_env(PIPELINE_FAULT="data_pipeline.stages.tokenize:encode_batch")
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert time.monotonic() - started < 60
    assert proc.returncode != 0 and not (out / "manifest.json").exists()
    target = "data_pipeline.stages.tokenize:encode_batch"
    assert f"pipeline run: rank 1 of 2: error: MemoryError: injected fault in {target}" in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough text that scanning takes several seconds with two workers."""
    return write_corpus(tmp_path_factory.mktemp("signals") / "corpus", files=2, docs_per_file=3000)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_a_signal_during_the_scan_leaves_no_worker_behind(sig: int, big_corpus: Path, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the process group) and SIGTERM exit 130/143 at once; after SIGKILL the workers die too."""
    cmd = [PIPELINE, "dedup", "--input", str(big_corpus), "--output", str(tmp_path / "out"), "--set", "workers=2"]
    slow = pipeline_fault_env(
        PIPELINE_SCAN_DELAY_S="1"
    )  # 6 batches of >= 1 s on 2 workers: still scanning when signalled
    proc = subprocess.Popen(
        cmd, env=slow, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    main = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    while len(main.children()) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "the pool never started"
        time.sleep(0.05)
    workers = main.children()
    time.sleep(0.5)  # the workers are busy with batches
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # what a terminal's Ctrl-C does
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}[sig], err
    if sig != signal.SIGKILL:
        word = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}[sig]
        assert f"pipeline dedup: interrupted ({word})" in err and "Traceback" not in err, err
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == [], f"orphaned pool workers: {alive}"


def scan_markers(out: Path) -> dict[str, int]:
    folder = out / ".stages" / "dedup-scan"
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("t-*.json")} if folder.is_dir() else {}


def test_a_run_killed_during_the_scan_redoes_only_unfinished_tasks(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "corpus", files=8, docs_per_file=250)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    command = [PIPELINE, "dedup", "--input", str(data), *SMALL]
    assert subprocess.run([*command, "--output", str(clean)], capture_output=True, timeout=300).returncode == 0
    slow = pipeline_fault_env(
        PIPELINE_SCAN_DELAY_S="0.3"
    )  # each task (one batch) takes >= 0.3 s: the kill lands mid-scan
    proc = subprocess.Popen(
        [*command, "--output", str(killed)], env=slow, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while len(scan_markers(killed)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before two tasks were scanned"
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    done = scan_markers(killed)
    assert 2 <= len(done) < 8, f"the kill must land in the scan, {len(done)} of 8 tasks were done"
    rerun = subprocess.run([*command, "--output", str(killed)], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"scan: {8 - len(done)} of 8 tasks scanned, {len(done)} reused from an earlier run" in rerun.stderr
    after = scan_markers(killed)
    assert {name: after[name] for name in done} == done, "a finished task was redone"
    for sub in ("kept", "rejects"):
        assert {p.name: p.read_bytes() for p in (killed / sub).iterdir()} == {
            p.name: p.read_bytes() for p in (clean / sub).iterdir()
        }
    assert (killed / "dedup/clusters.jsonl").read_bytes() == (clean / "dedup/clusters.jsonl").read_bytes()
    stats = [json.loads((d / "stats.json").read_text()) for d in (clean, killed)]
    assert [{k: v for k, v in s.items() if k != "resources"} for s in stats][0] == {
        k: v for k, v in stats[1].items() if k != "resources"
    }
    assert stats[0]["dropped"]["exact_dup"] >= 7 and stats[0]["tasks"] == 8  # each file repeats doc 0


@pytest.mark.mpi
def test_ctrl_c_under_mpiexec_ends_every_rank_and_worker(big_corpus: Path, tmp_path: Path) -> None:
    """mpiexec forwards SIGINT to the ranks; each stops its pool and the job ends non-zero, leaving no process."""
    cmd = [MPIEXEC, "-n", "2", PIPELINE, "dedup", "--input", str(big_corpus), "--output", str(tmp_path / "out"),
           "--quiet", "--set", "workers=2"]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        env=pipeline_fault_env(PIPELINE_SCAN_DELAY_S="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    launcher = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    while len(launcher.children(recursive=True)) < 7:  # hydra proxy, 2 ranks, 2 workers each
        assert proc.poll() is None and time.monotonic() < deadline, "the ranks' pools never started"
        time.sleep(0.05)
    everything = launcher.children(recursive=True)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert any(f"pipeline dedup: rank {r} of 2: interrupted (SIGINT)" in err for r in (0, 1)), err
    _, alive = psutil.wait_procs(everything, timeout=10)
    assert alive == [], f"left behind: {alive}"
