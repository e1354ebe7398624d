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

REPO = Path(__file__).resolve().parents[1]
MPIEXEC = REPO / ".venv" / "bin" / "mpiexec"
WORD_TEXT = (
    "the of and to in is that it was for on are with as his they be at one have this from or had by word "
    "but what some we can out other were all there when up use your how said an each she which do their "
    "time if will way about many then them write would like so these her long make thing see him two has "
    "look more day could go come did number sound no most people my over know water than call first who "
    "may down side been now find any new work part take get place made live where after back little only "
    "round man year came show every good me give our under name very through just form sentence great "
    "think say help low line differ turn cause much"
)
WORDS = WORD_TEXT.split()


def pseudo_lexicon(rng: random.Random, size: int = 30000) -> tuple[list[str], list[float]]:
    """Pronounceable pseudo-words with Zipfian weights: a vocabulary as rich as real text, so a 32k BPE fits."""
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    words = sorted({"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(size)})
    rng.shuffle(words)
    cumulative, total = [], 0.0
    for rank in range(1, len(words) + 1):
        total += 1.0 / rank
        cumulative.append(total)
    return words, cumulative


def article(rng: random.Random, lexicon: tuple[list[str], list[float]]) -> str:
    """~3 KB of paragraphs; half the words are English function words so the quality filters keep it."""
    words, cumulative = lexicon
    sentences = []
    for _ in range(24):
        n = rng.randint(8, 18)
        content = rng.choices(words, cum_weights=cumulative, k=n)
        mixed = [w if i % 2 else rng.choice(WORDS) for i, w in enumerate(content)]
        sentences.append(" ".join(mixed).capitalize() + rng.choice(".....?!"))
    return "\n\n".join(" ".join(sentences[i : i + 4]) for i in range(0, 24, 4))


def synthetic_corpus(folder: Path, megabytes: float, files: int = 8) -> int:
    """Articles plus 2% exact and 2% near copies, in `files` jsonl files of about equal size; returns doc count."""
    rng = random.Random(0)
    lexicon = pseudo_lexicon(rng)
    handles = [open(folder / f"part-{i:03d}.jsonl", "w", encoding="utf-8") for i in range(files)]  # noqa: SIM115
    written, count, recent = 0, 0, []
    while written < megabytes * 1e6:
        roll = rng.random()
        if recent and roll < 0.02:
            text = rng.choice(recent)
        elif recent and roll < 0.04:
            text = rng.choice(recent).replace(" ", "  ", 1)
        else:
            text = article(rng, lexicon)
            recent = (recent + [text])[-500:]
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
