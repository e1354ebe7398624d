"""Time from launch to the first training step on a large dataset, with dataset checksums on and off.

First, in this process, what rank 0 does with the shards before its first step: the old synchronous check (hash
every shard; the anchor) against the new one (open the shards and start the background hashing), cold and warm
cache. Then whole launches (2 ranks) until the console shows the first step: anchor `data.verify_checksums=false`
(no hashing at all); measured the default, checksums on, on a first launch into a fresh run folder and on a
relaunch that resumes it. On a loaded shared machine the whole-launch times swing by minutes; the in-process
timing is the one to read there. The dataset is a small real one
plus `--gb` GB of valid token shards written as sparse files (all-zero tokens; the zero runs are holes, so they
take no disk and hash at the speed of reading holes, faster than any real disk: the hashing measured here is a
lower bound of a real dataset's).

Run it against another checkout's trainer with PYTHONPATH (the script itself uses only the shard contract and
the trainer's command line):

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_launch_verify.py [--gb 20] [--ranks 2] [--data DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from data_pipeline.shards import FORMAT, ShardInfo, ShardWriter, read_manifest, split_entry, write_manifest
from infra.files import file_sha256

VOCAB = 256
SHARD_TOKENS = 2**29  # 1 GiB of uint16 tokens per sparse shard
SETS = ("model.seq_len=32", "train.ds_config=ds_configs/zero3_cpu.json", "train.eval_interval=1000",
        "train.save_interval=1", "log.interval=1", "log.tensorboard=false", "data.val_samples=8")  # fmt: skip


class SparseSink(io.FileIO):
    """A file whose all-zero writes become holes (a seek), so GBs of zero tokens take no disk."""

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if not np.frombuffer(view, dtype=np.uint8).any():
            self.seek(len(view), io.SEEK_CUR)
            return len(view)
        return super().write(view)

    def close(self) -> None:
        if not self.closed:
            self.truncate(self.tell())
        super().close()


def sparse_shard(path: Path) -> ShardInfo:
    """A valid token shard of SHARD_TOKENS zero tokens in 256 documents, written sparse."""
    values = pa.array(np.zeros(SHARD_TOKENS, dtype=np.uint16))
    offsets = pa.array(np.arange(0, SHARD_TOKENS + 1, SHARD_TOKENS // 256, dtype=np.int32))
    tokens = pa.ListArray.from_arrays(offsets, values)
    ids = pa.array([f"{path.stem}-{i}" for i in range(256)], pa.string())
    batch = pa.record_batch([ids, tokens], names=["doc_id", "tokens"])
    with SparseSink(path, "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return ShardInfo(path.name, SHARD_TOKENS, 256, file_sha256(path))


def build(root: Path, gb: int) -> None:
    rng = np.random.default_rng(0)
    shards = []
    for split, n_tokens in (("train", 200_000), ("validation", 20_000)):
        writer = ShardWriter(root / "shards", split, vocab_size=VOCAB, eos_id=1, tokenizer_sha256="0" * 64)
        for i, doc in enumerate(np.split(rng.integers(2, VOCAB, n_tokens, dtype=np.uint16), n_tokens // 500)):
            writer.add(f"{split}-{i}", doc)
        shards.append(writer.close())
    sparse = [sparse_shard(root / "shards" / f"sparse-{i:05d}.arrow") for i in range(gb)]
    splits = {"train": split_entry(shards[0] + sparse), "validation": split_entry(shards[1])}
    write_manifest(root, {"format": FORMAT, "vocab_size": VOCAB, "eos_id": 1, "splits": splits})


def launch_path_seconds(data: Path, run: Path) -> dict[str, float]:
    """What rank 0 does with the shards before its first step, timed in this process: the old synchronous check
    (`TokenStream(verify=True)`: hash every shard) against the new one (open the shards, start the background
    hashing; the hashing itself runs while training starts) with a cold and a warm cache."""
    from data_pipeline.shards import TokenStream
    from pretrain.data_verify import ShardVerifier

    def timed(fn) -> float:
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    def new_path() -> ShardVerifier:
        streams = [TokenStream(data, split, verify=False) for split in ("train", "validation")]
        return ShardVerifier(run, [(data, streams[0].manifest)], rank=0, world_size=1)

    old = timed(lambda: [TokenStream(data, split, verify=True) for split in ("train", "validation")])
    cold = timed(new_path)
    new_path().finish()  # the background hashing, joined: what the first checkpoint waits for; fills the cache
    warm = timed(new_path)
    return {"old": old, "cold": cold, "warm": warm}


def seconds_to_step(data: Path, run: Path, step: int, ranks: int, *sets: str) -> float:
    """Launch the trainer and return the seconds until its console shows `step {step}/`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}", f"--master_port={_port()}"]
    cmd += ["-m", "pretrain.train", "--data", str(data), "--preset", "debug", "--output", str(run)]
    for item in (*SETS, f"train.max_steps={step}", *sets):
        cmd += ["--set", item]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = None
    for line in proc.stdout:
        if seen is None and line.startswith(f"step {step}/"):
            seen = time.perf_counter() - started
    if proc.wait() != 0 or seen is None:
        raise SystemExit(f"launch failed (exit {proc.returncode}): {' '.join(cmd)}")
    return seen


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=int, default=20, help="GiB of sparse token shards (default 20)")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--data", help="dataset folder: built there if it has no manifest.json, else reused")
    parser.add_argument("--launch-path-only", action="store_true", help="only the in-process launch-path timing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "data"
        if not (data / "manifest.json").is_file():
            started = time.perf_counter()
            build(data, args.gb)
            print(f"dataset built and hashed once in {time.perf_counter() - started:.0f} s")
        rows = read_manifest(data)["splits"]["train"]["shards"]
        print(f"dataset: {sum((data / r['path']).stat().st_size for r in rows) / 2**30:.1f} GiB of train shards")
        runs = Path(tmp)
        (runs / "inprocess").mkdir()
        path = launch_path_seconds(data, runs / "inprocess")
        print(f"before the first step, rank 0 (in process): old synchronous sha256 of every shard {path['old']:.1f} s")
        print(
            f"  new, cold cache (open shards, start background hashing): {path['cold']:.3f} s ({path['old'] / path['cold']:,.0f}x less)"
        )
        print(f"  new, warm cache (size+mtime unchanged): {path['warm']:.3f} s")
        if args.launch_path_only:
            return 0
        anchor = seconds_to_step(data, runs / "anchor", 1, args.ranks, "data.verify_checksums=false")
        first = seconds_to_step(data, runs / "run", 1, args.ranks)
        again = seconds_to_step(data, runs / "run", 2, args.ranks)  # resumes step 1; checksums cached (if any)
    print(f"anchor, checksums off:        {anchor:6.1f} s launch -> step 1")
    print(f"checksums on, first launch:   {first:6.1f} s launch -> step 1  ({first / anchor:.2f}x the anchor)")
    print(f"checksums on, relaunch:       {again:6.1f} s launch -> step 2  ({again / anchor:.2f}x the anchor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
