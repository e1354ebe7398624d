"""Incremental dedup cost: `pipeline dedup --against EARLIER` over new documents vs a fresh run over them alone.

The target (issue 20): deduplicating `--new` documents against an earlier dataset of `--earlier` documents costs
no more than 2x a fresh run over the new documents alone plus reading the earlier index.

The earlier dataset is an index only (DIR/dedup/index/, data_pipeline/dedup/index.py): `--new` / 10 real
documents, keyed and signed by the pipeline's own functions, plus synthetic rows (random exact keys and random
uint32 signatures, which is what the low 32 bits of unrelated documents' MinHash minima look like) up to
`--earlier` documents, in tasks of 100k. Building a 1M-document dataset by scanning it would take the shared
machine an hour; the cost measured here does not depend on how the index was made. The new corpus is
synthetic prose of about 2.4 KB a document: 5% exact and 5% near copies (1% of the words replaced) of the real
earlier documents, and 2% exact and 5% near copies among the new ones (support.corpus.with_copies).

Three child processes, each `--repeat` times alternating, best kept (wall seconds; the machine is shared):
  fresh        pipeline dedup --input new.jsonl --output fresh/          (filters off, like every dedup bench)
  incremental  pipeline dedup --input new.jsonl --against earlier/ --output inc/
  read index   np.fromfile of every keys and signatures file of earlier/ (the page cache as the run finds it)

and the peak RSS of each run's rank (stats.json resources, ru_maxrss) from its first attempt.

    PYTHONPATH=. python benchmarks/bench_dedup_incremental.py [--new 20000] [--earlier 200000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' corpus: tests/support/corpus.py
from support.corpus import pseudo_lexicon, with_copies, zipf_sentence  # noqa: E402

from data_pipeline.config import load_recipe  # noqa: E402
from data_pipeline.dedup.exact import exact_text_hashes  # noqa: E402
from data_pipeline.dedup.index import index_settings, manifest, manifest_path, task_folder  # noqa: E402
from data_pipeline.dedup.minhash import compute_signatures  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
INDEX_TASK_DOCS = 100_000


def prose(rng: random.Random, lexicon, chars: int = 2400) -> str:
    sentences, length = [], 0
    while length < chars:
        sentences.append(zipf_sentence(rng, lexicon))
        length += len(sentences[-1]) + 1
    return " ".join(sentences)


def edit(rng: random.Random, lexicon, text: str, percent: int = 3) -> str:
    """`percent` of the words replaced by lexicon words."""
    words = text.split(" ")
    for position in rng.sample(range(len(words)), len(words) * percent // 100):
        words[position] = rng.choice(lexicon[0])
    return " ".join(words)


def write_corpora(folder: Path, new: int, earlier: int) -> dict:
    """new.jsonl and the earlier index; returns the planted counts."""
    rng = random.Random(0)
    lexicon = pseudo_lexicon(rng)
    old = [prose(rng, lexicon) for _ in range(new // 10)]
    fresh = with_copies(rng, lambda: prose(rng, lexicon), 0.02, 0.05, lambda t: edit(rng, lexicon, t))
    planted = {"exact_of_earlier": new // 20, "near_of_earlier": new // 20}
    texts = [old[i] for i in range(planted["exact_of_earlier"])]
    texts += [edit(rng, lexicon, old[-1 - i], 1) for i in range(planted["near_of_earlier"])]
    texts += [next(fresh) for _ in range(new - len(texts))]
    rng.shuffle(texts)
    with (folder / "new.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps({"id": f"n{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    write_index(folder / "earlier", old, earlier)
    return planted


def write_index(dataset: Path, real: list[str], total: int) -> None:
    """An earlier dataset's index: the real documents first, then synthetic rows, in tasks of INDEX_TASK_DOCS."""
    dedup = load_recipe().section("dedup")
    keys, signatures = exact_text_hashes(real), compute_signatures(real, workers=1)
    rng = np.random.default_rng(1)
    counts = []
    for task, start in enumerate(range(0, total, INDEX_TASK_DOCS)):
        n = min(INDEX_TASK_DOCS, total - start)
        real_rows = max(0, min(n, len(real) - start))
        task_keys = np.concatenate(
            [keys[start : start + real_rows], rng.integers(0, 2**63, (n - real_rows, 2), dtype=np.uint64)]
        )
        task_sigs = np.concatenate([signatures[start : start + real_rows],
                                    rng.integers(0, 2**32, (n - real_rows, 128), dtype=np.uint32)])  # fmt: skip
        folder = task_folder(dataset, task)
        folder.mkdir(parents=True)
        task_keys.astype(np.uint64).tofile(folder / "keys.u64")
        task_sigs.astype(np.uint32).tofile(folder / "signatures.u32")
        (folder / "ids.jsonl").write_text("".join(f'"e{start + i}"\n' for i in range(n)))
        counts.append(n)
    manifest_path(dataset).write_text(json.dumps(manifest(index_settings(dedup), True, counts)))


def pipeline(*args: str) -> float:
    """Wall seconds of one `pipeline` child process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "data_pipeline.cli", *args], check=True, env=env, capture_output=True)
    return time.perf_counter() - started


def read_index(dataset: Path) -> float:
    """Wall seconds to read every keys and signatures file of the index, in a child process."""
    code = (
        "import sys, numpy as np, pathlib\n"
        "for p in sorted(pathlib.Path(sys.argv[1]).glob('dedup/index/t-*/*.u*')): np.fromfile(p, np.uint8).sum()\n"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(dataset)], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new", type=int, default=20_000)
    parser.add_argument("--earlier", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="pipeline workers (workers=N) for both runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        planted = write_corpora(root, args.new, args.earlier)
        print(f"corpus: {args.new} new documents, earlier index of {args.earlier} "
              f"({time.perf_counter() - started:.0f} s to build); planted {planted}")  # fmt: skip
        common = ["--input", str(root / "new.jsonl"), "--quiet", "--set", "filters.enabled=false",
                  "--set", f"workers={args.workers}"]  # fmt: skip
        best = {"fresh": [], "incremental": [], "read index": []}
        for attempt in range(args.repeat):
            best["fresh"].append(pipeline("dedup", *common, "--output", str(root / f"fresh-{attempt}")))
            best["incremental"].append(
                pipeline("dedup", *common, "--against", str(root / "earlier"), "--output", str(root / f"inc-{attempt}"))
            )
            best["read index"].append(read_index(root / "earlier"))
        times = {k: min(v) for k, v in best.items()}
        stats = json.loads((root / "inc-0" / "stats.json").read_text())
        timings = {run: json.loads((root / f"{run}-0" / "timings.json").read_text()) for run in ("fresh", "inc")}
        peaks = {run: json.loads((root / f"{run}-0" / "stats.json").read_text())["resources"]["max"]["peak_rss_rank_bytes"]
                 for run in ("fresh", "inc")}  # fmt: skip
        index_bytes = sum(p.stat().st_size for p in (root / "earlier" / "dedup" / "index").rglob("*") if p.is_file())
    anchor = times["fresh"] + times["read index"]
    print(f"dropped (incremental): {stats['dropped']}")
    print(f"phases, fresh (s): {timings['fresh']}")
    print(f"phases, incremental (s): {timings['inc']}")
    print(f"earlier index: {index_bytes / args.earlier:.0f} bytes per document")
    print(
        f"peak RSS of the rank: fresh {peaks['fresh'] / 2**20:.0f} MiB, incremental {peaks['inc'] / 2**20:.0f} MiB "
        f"(earlier signatures: {args.earlier * 512 / 2**20:.0f} MiB)"
    )
    for name, seconds in times.items():
        print(f"{name:>12}: {seconds:7.2f} s")
    print(f"ratio incremental / (fresh + read index) = {times['incremental'] / anchor:.2f}  (target <= 2)")


if __name__ == "__main__":
    main()
