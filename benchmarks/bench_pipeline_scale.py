"""How `pipeline dedup` grows: a rank's peak RSS against corpus size, bytes received per rank against rank count.

    .venv/bin/python benchmarks/bench_pipeline_scale.py memory --docs 25000 100000 400000
    .venv/bin/python benchmarks/bench_pipeline_scale.py traffic --docs 50000 --ranks 2 4 8

Corpus: documents of ~2.4 KB (400 words drawn from 20,000 pseudo-words), 5% exact and 5% near copies (one word
changed) of earlier ones, in jsonl files of 64 MB, cached under --workdir. Runs use the recipe's defaults except
filters.enabled=false and dedup.scheme=affine32, which make the scan faster without changing what is held in
memory (the filters keep nothing; affine32 signatures are the same uint32 array as mersenne61's).

`memory` reads each run's stats.json: `resources.per_rank[0].peak_rss_rank_bytes` is the rank process's own
ru_maxrss (its local worker processes are counted apart), and fits the slope in bytes per document; the issue's
target is <= 600 B per document (a signature, 512 B at num_perm=128, may stay in memory; the text may not).
`traffic` reads `bytes_received` of every rank; it cuts the corpus into 4 MB tasks so every rank holds a share.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' corpus: tests/support/corpus.py
from support.corpus import near_copy, pseudo_lexicon, with_copies  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MPIEXEC = REPO / ".venv" / "bin" / "mpiexec"
FILE_BYTES = 64 << 20
RECIPE = ["filters.enabled=false", "dedup.scheme=affine32"]


def make_corpus(folder: Path, docs: int, seed: int = 0) -> Path:
    """`docs` documents of ~2.4 KB in 64 MB jsonl files (cached: reused when folder/DONE exists)."""
    if (folder / "DONE").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    words = pseudo_lexicon(rng)[0]
    texts = with_copies(rng, lambda: " ".join(rng.choices(words, k=400)), 0.05, 0.05, near_copy)
    part, written, out = 0, 0, open(folder / "part-00000.jsonl", "w", encoding="utf-8")  # noqa: SIM115
    for i in range(docs):
        text = next(texts)
        line = json.dumps({"id": f"d{i}", "text": text}) + "\n"
        out.write(line)
        written += len(line)
        if written >= FILE_BYTES:
            out.close()
            part, written = part + 1, 0
            out = open(folder / f"part-{part:05d}.jsonl", "w", encoding="utf-8")  # noqa: SIM115
    out.close()
    (folder / "DONE").write_text(str(docs))
    return folder


def run_dedup(corpus: Path, out: Path, ranks: int, workers: int, extra: tuple[str, ...] = ()) -> tuple[dict, float]:
    shutil.rmtree(out, ignore_errors=True)  # a fresh run each time (an earlier recipe's folder is refused)
    cmd = [PYTHON, "-m", "data_pipeline.cli", "dedup", "--input", str(corpus), "--output", str(out), "--quiet"]
    cmd += [a for s in [*RECIPE, f"workers={workers}", *extra] for a in ("--set", s)]
    if ranks > 1:
        cmd = [str(MPIEXEC), "-n", str(ranks), *cmd]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"pipeline dedup failed ({ranks} ranks): {done.stderr[-3000:]}")
    return json.loads((out / "stats.json").read_text()), seconds


def memory(args: argparse.Namespace) -> None:
    rows = []
    for docs in args.docs:
        corpus = make_corpus(args.workdir / f"corpus-{docs}", docs)
        stats, seconds = run_dedup(corpus, args.workdir / f"out-mem-{docs}", 1, args.workers)
        rss = stats["resources"]["per_rank"][0]["peak_rss_rank_bytes"]
        rows.append((docs, rss))
        print(f"docs={docs:>9,}  input={stats['input_docs']:>9,}  kept={stats['kept_docs']:>9,}  "
              f"rank peak RSS {rss / 2**20:8.1f} MiB  ({seconds:6.1f} s)", flush=True)  # fmt: skip
    if len(rows) > 1:
        x, y = np.array([r[0] for r in rows], float), np.array([r[1] for r in rows], float)
        slope = np.polyfit(x, y, 1)[0]
        print(f"slope (least squares over {len(rows)} sizes): {slope:.0f} B per document; target <= 600: "
              f"{'met' if slope <= 600 else 'NOT met'}")  # fmt: skip


def traffic(args: argparse.Namespace) -> None:
    corpus = make_corpus(args.workdir / f"corpus-{args.docs[0]}", args.docs[0])
    for ranks in args.ranks:
        # 4 MB tasks: every rank gets a share even of a one-file corpus
        stats, seconds = run_dedup(
            corpus, args.workdir / f"out-traffic-{ranks}", ranks, 1, ("read.task_bytes=4194304",)
        )
        received = [r["bytes_received"] for r in stats["resources"]["per_rank"]]
        sent = [r["bytes_sent"] for r in stats["resources"]["per_rank"]]
        docs = stats["input_docs"]
        print(f"ranks={ranks}  docs={docs:,}  received per rank: max {max(received) / 2**20:7.2f} MiB, "
              f"mean {np.mean(received) / 2**20:7.2f} MiB ({max(received) / (docs / ranks):6.0f} B per document of "
              f"a rank's share); sent max {max(sent) / 2**20:7.2f} MiB  ({seconds:6.1f} s)", flush=True)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="*", help="memory and/or traffic (default: both, as `make bench` runs it)")
    parser.add_argument("--docs", type=int, nargs="+", default=[25000, 100000, 400000])
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--workers", type=int, default=2, help="local worker processes per rank (memory runs)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_pipeline_scale"))
    args = parser.parse_args()
    if unknown := set(args.what) - {"memory", "traffic"}:
        parser.error(f"unknown measurement {sorted(unknown)}; use memory and/or traffic")
    for what in args.what or ["memory", "traffic"]:
        {"memory": memory, "traffic": traffic}[what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
