"""End-to-end near dedup speed: `pipeline dedup` (filters off) vs the plain datasketch way, on the same corpus.

The corpus: `--docs` synthetic prose documents of about 2.4 KB (pronounceable Zipf-weighted words mixed with
English function words), 2% exact copies and 5% near copies (3% of the words replaced), in one jsonl file.
The anchor is what a user writes with datasketch alone: read the jsonl, word 5-gram shingles of the lowercased
words, `MinHash.bulk` (128 permutations), `MinHashLSH(threshold=0.8)` insert + query, drop every document that
has an earlier candidate, write the kept jsonl. Ours is the `pipeline dedup` command in a child process
(exact + near dedup, default recipe with `filters.enabled=false`), once with the default workers (all cores) and
once with `workers=1`.

Both wall time and CPU time are printed: on a shared machine the CPU-time ratio (ours: the child process tree's
user+sys time) is the per-core comparison that other load does not distort; the wall-time ratio is what a user
waits for and needs an idle machine. Each side runs `--repeat` times, alternating; the best is kept.

    .venv/bin/python benchmarks/bench_dedup_speed.py [--docs 50000] [--repeat 2] [--baseline-pipeline PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from datasketch import MinHash, MinHashLSH

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' corpus: tests/support/corpus.py
from support.corpus import Lexicon, pseudo_lexicon, with_copies, zipf_sentence  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / ".venv" / "bin" / "pipeline"
_WORD = re.compile(r"\w+")


def prose(rng: random.Random, lexicon: Lexicon, chars: int = 2400) -> str:
    """About `chars` characters of sentences; every other word an English function word."""
    sentences, length = [], 0
    while length < chars:
        sentences.append(zipf_sentence(rng, lexicon))
        length += len(sentences[-1]) + 1
    return " ".join(sentences)


def write_corpus(path: Path, docs: int) -> float:
    """`docs` documents (2% exact, 5% near copies of recent ones) as jsonl; returns the mean text length."""
    rng = random.Random(0)
    lexicon = pseudo_lexicon(rng)

    def edit(text: str) -> str:
        """3% of the words replaced by lexicon words."""
        words = text.split(" ")
        for position in rng.sample(range(len(words)), len(words) * 3 // 100):
            words[position] = rng.choice(lexicon[0])
        return " ".join(words)

    texts = with_copies(rng, lambda: prose(rng, lexicon), 0.02, 0.05, edit)
    total = 0
    with path.open("w", encoding="utf-8") as out:
        for i in range(docs):
            text = next(texts)
            total += len(text)
            out.write(json.dumps({"id": f"d{i}", "text": text}) + "\n")
    return total / docs


def datasketch_dedup(corpus: Path, out: Path, threshold: float = 0.8, num_perm: int = 128) -> int:
    """The plain datasketch way, start to finish; returns the number of documents kept."""
    records = [json.loads(line) for line in corpus.open(encoding="utf-8")]
    shingle_sets = []
    for record in records:
        words = _WORD.findall(record["text"].lower())
        shingle_sets.append({" ".join(words[i : i + 5]).encode() for i in range(max(1, len(words) - 4))})
    sketches = MinHash.bulk(shingle_sets, num_perm=num_perm)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept = 0
    with out.open("w", encoding="utf-8") as sink:
        for i, (record, sketch) in enumerate(zip(records, sketches, strict=True)):
            if not lsh.query(sketch):  # no earlier document is a candidate: keep it
                sink.write(json.dumps(record) + "\n")
                kept += 1
            lsh.insert(i, sketch)
    return kept


def timed_datasketch(corpus: Path, out: Path) -> tuple[float, float, int]:
    wall, cpu = time.perf_counter(), time.process_time()
    kept = datasketch_dedup(corpus, out)
    return time.perf_counter() - wall, time.process_time() - cpu, kept


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_pipeline(corpus: Path, out: Path, workers: int | None, pipeline: Path = PIPELINE) -> tuple[float, float]:
    cmd = [str(pipeline), "dedup", "--input", str(corpus), "--output", str(out), "--quiet"]
    cmd += ["--set", "filters.enabled=false", *(["--set", f"workers={workers}"] if workers else [])]
    wall, cpu = time.perf_counter(), children_cpu()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pipeline dedup failed: {done.stderr[-2000:]}")
    return time.perf_counter() - wall, children_cpu() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--baseline-pipeline", type=Path, help="another `pipeline` executable (e.g. an older checkout's)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        corpus = tmp / "corpus.jsonl"
        mean_chars = write_corpus(corpus, args.docs)
        print(f"{args.docs} documents, mean {mean_chars:.0f} characters, {corpus.stat().st_size / 1e6:.1f} MB")
        best: dict[str, tuple[float, float]] = {}
        for attempt in range(args.repeat):
            runs = {"datasketch": lambda: timed_datasketch(corpus, tmp / "datasketch.jsonl")[:2]}
            for label, workers in (("pipeline dedup (all cores)", None), ("pipeline dedup (workers=1)", 1)):
                out = tmp / f"ours-{attempt}-{workers}"
                runs[label] = lambda o=out, w=workers: timed_pipeline(corpus, o, w)
            if args.baseline_pipeline:
                out = tmp / f"baseline-{attempt}"
                runs["baseline (workers=1)"] = lambda o=out: timed_pipeline(corpus, o, 1, args.baseline_pipeline)
            for label, run in runs.items():
                wall, cpu = run()
                best[label] = min(best.get(label, (wall, cpu)), (wall, cpu))
        kept = sum(1 for _ in (tmp / "datasketch.jsonl").open(encoding="utf-8"))
        ours = tmp / f"ours-{args.repeat - 1}-1"
        stats = json.loads((ours / "stats.json").read_text())
        print(f"kept: datasketch {kept}, pipeline dedup {stats['kept_docs']} (removed {stats['dropped']})")
        print(f"pipeline dedup stage seconds (workers=1): {json.loads((ours / 'timings.json').read_text())}")
        anchor_wall, anchor_cpu = best["datasketch"]
        for label, (wall, cpu) in best.items():
            print(f"{label:<28} wall {wall:7.1f} s  cpu {cpu:7.1f} s  "
                  f"ratio vs datasketch: wall {anchor_wall / wall:5.2f}x  cpu {anchor_cpu / cpu:5.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
