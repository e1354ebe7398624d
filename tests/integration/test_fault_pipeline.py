"""Pipeline faults: SIGKILL at points spread over a `pipeline run` (every stage: read, filter, dedup, tokenizer,
shards, manifest), disk full while writing outputs, inputs changed between a run and its rerun.

The kill points are counted, not timed: tests/support/pipeline_faults/sitecustomize.py counts the command's atomic writes
and SIGKILLs it inside the first, the last and three between (bytes in the temporary file, not yet renamed), so
every machine, loaded or not, kills the same runs at the same points.

What must hold: a rerun of the same command after any kill completes and its outputs are byte-identical to an
uninterrupted run (stats.json up to its timings); a disk-full failure names the file and leaves nothing a rerun
would take as complete; a rerun over changed inputs is refused instead of mixing old and new outputs.

The kill sweep runs the real `pipeline run` command; the other tests drive `pipeline dedup` and the tokenize
stage's entry point (`run_tokenize_stage`) in processes of their own to aim at one stage.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from support.corpus import synthetic_docs
from support.fault_support import pipeline_fault_env
from support.launch import ROOT

pytestmark = pytest.mark.slow

PIPELINE = str(ROOT / ".venv" / "bin" / "pipeline")
KILL_POINTS = 5


def write_corpus(folder: Path, n_docs: int = 1400, seed: int = 5) -> Path:
    """Two jsonl files of ~60-word docs with exact and near duplicates (every dedup step has work to do)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = synthetic_docs(n_docs * 5, seed=seed)
    docs = [" ".join(base[i * 5 : (i + 1) * 5]) for i in range(n_docs - 200)]
    rng = random.Random(seed)
    docs += [docs[rng.randrange(len(docs))] for _ in range(100)]
    docs += [docs[rng.randrange(len(docs))] + " Extra words here." for _ in range(100)]
    for k in range(2):
        lines = (json.dumps({"id": f"{k}-{i}", "text": t}) + "\n" for i, t in enumerate(docs[k::2]))
        (folder / f"part{k}.jsonl").write_text("".join(lines))
    return folder


def dedup_command(corpus: Path, out: Path) -> list[str]:
    return [PIPELINE, "dedup", "--input", str(corpus), "--output", str(out), "--quiet"]


def run_command(corpus: Path, out: Path) -> list[str]:
    """The whole pipeline: dedup flow, then tokenizer training, shards and manifest."""
    return [
        PIPELINE,
        "run",
        "--input",
        str(corpus),
        "--output",
        str(out),
        "--quiet",
        "--set",
        "tokenizer.vocab_size=800",
    ]


def run_dedup(corpus: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(dedup_command(corpus, out), capture_output=True, text=True, timeout=300)


VOLATILE = {"timings_s", "created_unix", "resources"}  # wall-clock and memory facts that differ between runs


def scrubbed(value: object) -> object:
    if isinstance(value, dict):
        return {k: scrubbed(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [scrubbed(v) for v in value]
    return value


def outputs(out: Path) -> dict[str, bytes]:
    """Every output file's bytes; JSON files without their timings and with the folder's own path neutralised."""
    files = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.parent.name != ".stages"):
        if path.name == "timings.json":  # wall-clock seconds per step, nothing else
            continue
        data = path.read_bytes()
        if path.suffix == ".json":
            text = json.dumps(scrubbed(json.loads(data)), sort_keys=True).replace(str(out), "<out>")
            data = text.encode()
        files[str(path.relative_to(out))] = data
    return files


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("fault_corpus"))


@pytest.fixture(scope="module")
def reference(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, bytes], Path]:
    """Outputs of an uninterrupted `pipeline dedup` and its folder."""
    out = tmp_path_factory.mktemp("fault_dedup_reference") / "out"
    proc = run_dedup(corpus, out)
    assert proc.returncode == 0, proc.stderr
    return outputs(out), out


def counted_run(command: list[str], out: Path, **run_kwargs) -> tuple[dict[str, bytes], int]:
    """An uninterrupted run: its outputs and how many atomic writes its process made."""
    count_file = out.parent / f"{out.name}.writes"
    env = pipeline_fault_env(PIPELINE_COUNT_WRITES=str(count_file))
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, **run_kwargs)
    assert done.returncode == 0, done.stderr
    return outputs(out), int(count_file.read_text())


def kill_points(writes: int) -> list[int]:
    """KILL_POINTS write numbers spread from the first atomic write to the last (the manifest or stats)."""
    return sorted({max(1, round(writes * k / (KILL_POINTS - 1))) for k in range(KILL_POINTS)})


def assert_rerun_after_kills_matches(
    command: list[str], want: dict[str, bytes], writes: int, prepare, **run_kwargs
) -> None:
    """For each kill point: a run SIGKILLed in that atomic write, then a plain rerun, gives `want` exactly."""
    for point in kill_points(writes):
        out = prepare(point)
        env = pipeline_fault_env(PIPELINE_KILL_AT_WRITE=str(point))
        killed = subprocess.run(command(out), capture_output=True, text=True, timeout=300, env=env, **run_kwargs)
        assert killed.returncode == -signal.SIGKILL, f"write {point} of {writes}: not killed: {killed.stderr[-2000:]}"
        rerun = subprocess.run(command(out), capture_output=True, text=True, timeout=300, **run_kwargs)
        assert rerun.returncode == 0, f"killed in write {point} of {writes}: {rerun.stderr}"
        got = outputs(out)
        differ = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        assert not differ, f"killed in write {point} of {writes}: the rerun's outputs differ in {differ}"
        assert not list(out.rglob("*.tmp")), f"killed in write {point} of {writes}: a temporary file survived"


def test_rerun_after_sigkill_at_any_point_matches_an_uninterrupted_run(corpus: Path, tmp_path: Path) -> None:
    want, writes = counted_run(run_command(corpus, tmp_path / "clean"), tmp_path / "clean")
    assert {"dedup/clusters.jsonl", "manifest.json", "tokenizer/spm.model"} <= set(want)
    assert writes >= 2 * KILL_POINTS, f"only {writes} atomic writes: the kill points would not spread over the run"
    assert_rerun_after_kills_matches(
        lambda out: run_command(corpus, out), want, writes, prepare=lambda point: tmp_path / f"kill_{point}"
    )


def test_second_run_skips_a_complete_stage(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_dedup(corpus, out).returncode == 0
    kept = out / "kept" / "part-00000.jsonl"
    mtime = kept.stat().st_mtime_ns
    again = subprocess.run([*dedup_command(corpus, out)[:-1]], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already complete" in again.stdout + again.stderr
    assert kept.stat().st_mtime_ns == mtime


def test_changed_input_is_detected_not_mixed(corpus: Path, tmp_path: Path) -> None:
    copy = tmp_path / "corpus"
    copy.mkdir()
    for f in corpus.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "out"
    assert run_dedup(copy, out).returncode == 0
    before = outputs(out)
    with open(copy / "part1.jsonl", "a") as f:
        f.write(json.dumps({"id": "new", "text": "a new document " * 20}) + "\n")
    rerun = run_dedup(copy, out)
    assert rerun.returncode != 0
    assert "other inputs" in rerun.stderr and "dedup" in rerun.stderr, rerun.stderr
    assert outputs(out) == before, "a refused rerun must not touch the earlier outputs"


def mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


def test_disk_full_names_the_file_and_leaves_nothing_taken_as_complete(
    corpus: Path, reference: tuple[dict[str, bytes], Path], tmp_path: Path
) -> None:
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not mount_tmpfs(disk, "300k"):
        pytest.skip("needs root to mount a size-limited tmpfs")
    try:
        out = disk / "out"
        proc = run_dedup(corpus, out)
        assert proc.returncode == 2
        assert "No space left on device" in proc.stderr and str(out) in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not (out / ".stages" / "dedup.json").exists() and not list(out.rglob("*.tmp"))
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        rerun = run_dedup(corpus, out)
        assert rerun.returncode == 0, rerun.stderr
        assert outputs(out) == reference[0]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


TOKENIZE = (
    "import sys; from pathlib import Path; from data_pipeline.comm import LocalComm; "
    "from data_pipeline.config import load_recipe; from data_pipeline.stages.tokenize import run_tokenize_stage; "
    "run_tokenize_stage(LocalComm(), Path(sys.argv[1]), load_recipe(None, ['tokenizer.vocab_size=500', "
    "'shards.target_bytes=20000', 'shards.validation_fraction=0.1']))"
)


def tokenize_command(out: Path) -> list[str]:
    return [str(ROOT / ".venv" / "bin" / "python"), "-c", TOKENIZE, str(out)]


@pytest.fixture(scope="module")
def tokenized(reference: tuple[dict[str, bytes], Path], tmp_path_factory: pytest.TempPathFactory):
    """The tokenize stage run once, uninterrupted, on a copy of the dedup reference: (outputs, atomic writes)."""
    straight = tmp_path_factory.mktemp("fault_tokenize_reference") / "out"
    shutil.copytree(reference[1], straight)
    return counted_run(tokenize_command(straight), straight, cwd=ROOT)


def test_tokenize_stage_rerun_after_sigkill_matches_an_uninterrupted_run(
    reference: tuple[dict[str, bytes], Path], tokenized: tuple[dict[str, bytes], int], tmp_path: Path
) -> None:
    """Tokenizer training, shard writing and the manifest: killed at five points, rerun, byte-identical."""
    want, writes = tokenized
    assert "manifest.json" in want and sum(name.startswith("shards/") for name in want) >= 2

    def fresh_copy(point: int) -> Path:
        out = tmp_path / f"kill_{point}"
        shutil.copytree(reference[1], out)
        return out

    assert_rerun_after_kills_matches(tokenize_command, want, writes, prepare=fresh_copy, cwd=ROOT)


def test_tokenize_disk_full_names_the_shard_and_a_rerun_with_space_matches(
    reference: tuple[dict[str, bytes], Path], tokenized: tuple[dict[str, bytes], int], tmp_path: Path
) -> None:
    """Room for the dedup outputs and the tokenizer, not for all the shards."""
    pages = sum(-(-f.stat().st_size // 4096) * 4 for f in reference[1].rglob("*") if f.is_file())
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not mount_tmpfs(disk, f"{pages + 300}k"):
        pytest.skip("needs root to mount a size-limited tmpfs")
    try:
        out = disk / "out"
        shutil.copytree(reference[1], out)
        proc = subprocess.run(tokenize_command(out), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0
        assert "No space left on device" in proc.stderr and f"{out}/shards/" in proc.stderr, proc.stderr[-2000:]
        assert not list(out.rglob("*.tmp")) and not (out / "manifest.json").exists()
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        rerun = subprocess.run(tokenize_command(out), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert outputs(out) == tokenized[0]
    finally:
        subprocess.run(["umount", str(disk)], check=False)
