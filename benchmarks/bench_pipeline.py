"""End-to-end `pipeline run` throughput (docs/s, MB/s) and peak memory, on 1 process and on 2 MPI ranks.

Corpora: the built-in demo corpus (Python's documentation, with its own recipe) and a synthetic prose corpus of
`--mb` megabytes (with planted exact and near duplicates) spread over several files. The anchor is the
1-process run; the ratio is the 2-rank speedup. Peak RSS is the largest sum over the job's process tree,
sampled every 50 ms.

    .venv/bin/python benchmarks/bench_pipeline.py [--mb 50] [--ranks 1 2] [--skip-demo]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' corpus: tests/support/corpus.py
from support.corpus import Lexicon, paragraphs, pseudo_lexicon, with_copies, zipf_sentence  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MPIEXEC = REPO / ".venv" / "bin" / "mpiexec"


def article(rng: random.Random, lexicon: Lexicon) -> str:
    """~3 KB of paragraphs; half the words are English function words so the quality filters keep it."""
    return paragraphs([zipf_sentence(rng, lexicon, ends=".....?!") for _ in range(24)], 4)


def synthetic_corpus(folder: Path, megabytes: float, files: int = 8) -> int:
    """Articles plus 2% exact and 2% near copies, in `files` jsonl files of about equal size; returns doc count."""
    rng = random.Random(0)
    lexicon = pseudo_lexicon(rng)
    handles = [open(folder / f"part-{i:03d}.jsonl", "w", encoding="utf-8") for i in range(files)]  # noqa: SIM115
    texts = with_copies(rng, lambda: article(rng, lexicon), 0.02, 0.02, lambda text: text.replace(" ", "  ", 1))
    written, count = 0, 0
    while written < megabytes * 1e6:
        text = next(texts)
        line = json.dumps({"id": f"s{count}", "text": text}) + "\n"
        handles[min(files - 1, int(written * files / (megabytes * 1e6)))].write(line)
        written, count = written + len(line), count + 1
    for h in handles:
        h.close()
    return count


def run_measured(cmd: list[str]) -> tuple[float, int, subprocess.CompletedProcess]:
    """(seconds, peak RSS bytes of the whole process tree, result)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    out, err = proc.communicate()
    return seconds, peak, subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def pipeline_run(ranks: int, inputs: list[str], out: Path, extra: list[str]) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "data_pipeline.cli", "run", *(a for i in inputs for a in ("--input", i))]
    cmd += ["--output", str(out), "--quiet", *extra]
    if ranks > 1:
        cmd = [str(MPIEXEC), "-n", str(ranks), *cmd]
    seconds, peak, done = run_measured(cmd)
    if done.returncode != 0:
        raise SystemExit(f"pipeline run failed ({ranks} ranks): {done.stderr[-2000:]}")
    return seconds, peak


def bench(name: str, inputs: list[str], docs: int, megabytes: float, ranks: list[int], extra: list[str], tmp: Path):
    results = {}
    for n in ranks:
        seconds, peak = pipeline_run(n, inputs, tmp / f"{name}-{n}", extra)
        manifest = json.loads((tmp / f"{name}-{n}" / "manifest.json").read_text())
        tokens = sum(s["num_tokens"] for s in manifest["splits"].values())
        results[n] = seconds
        print(f"{name:9} ranks={n}  {docs / seconds:9.0f} docs/s  {megabytes / seconds:7.2f} MB/s  "
              f"{seconds:7.1f} s  peak RSS {peak / 2**20:7.0f} MiB  tokens {tokens}")  # fmt: skip
    if len(ranks) > 1:
        print(f"{name:9} anchor ranks={ranks[0]}; ratio {ranks[-1]} ranks / {ranks[0]}: "
              f"{results[ranks[0]] / results[ranks[-1]]:.2f}x speedup")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="synthetic corpus size (the issue asks ~1000)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tok = ["--set", f"tokenizer.vocab_size={args.vocab}"]
        if not args.skip_demo:
            demo = tmp / "demo.jsonl"
            subprocess.run([sys.executable, "-m", "data_pipeline.cli", "demo-corpus", str(demo)], check=True, cwd=tmp)
            docs = sum(1 for _ in demo.open(encoding="utf-8"))
            extra = ["--config", str(tmp / "demo.recipe.yaml"), *tok]
            bench("demo", [str(demo)], docs, demo.stat().st_size / 1e6, args.ranks, extra, tmp)
        synth = tmp / "synthetic"
        synth.mkdir()
        docs = synthetic_corpus(synth, args.mb)
        size = sum(p.stat().st_size for p in synth.glob("*.jsonl")) / 1e6
        bench(f"synth{args.mb:g}MB", [str(synth / "*.jsonl")], docs, size, args.ranks, tok, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
