"""Shared fixtures: a tiny but real dataset (SentencePiece model + Arrow token shards + manifest).

`tiny_dataset` is built once per session with the folders `pipeline run` writes (tokenizer/, shards/,
manifest.json with the fields the trainer reads, but no recipe, ledger or marker files), from deterministic
synthetic text, so trainer, export and evaluate tests can share it without running the whole pipeline. Tokens are the real SentencePiece encoding of that text (vocab 256), so a model
trained on it has something to learn and export tests can decode what they generate.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TINY_VOCAB = 256
_WORDS = [
    "the",
    "a",
    "model",
    "data",
    "token",
    "train",
    "loss",
    "step",
    "batch",
    "rank",
    "shard",
    "learn",
    "rate",
    "warm",
    "cosine",
    "decay",
    "gradient",
    "norm",
    "layer",
    "head",
    "attention",
    "block",
    "embed",
    "vector",
    "matrix",
    "python",
    "function",
    "class",
    "module",
    "import",
    "return",
    "value",
    "list",
    "dict",
    "set",
    "file",
    "path",
    "read",
    "write",
    "open",
    "close",
    "error",
    "check",
    "test",
    "assert",
    "equal",
    "run",
    "fast",
    "slow",
    "small",
    "large",
    "first",
    "last",
    "next",
    "over",
    "under",
    "with",
    "from",
    "into",
    "about",
    "river",
    "stone",
    "cloud",
    "light",
    "dark",
    "green",
    "blue",
    "red",
    "moon",
    "sun",
    "star",
    "sea",
    "wind",
    "tree",
]


def synthetic_docs(n_docs: int, seed: int = 0) -> list[str]:
    """Deterministic pseudo-sentences with repeated structure (learnable, not uniform noise)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(rng.randint(2, 6)):
            words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 12))]
            sentences.append(" ".join(words).capitalize() + ".")
        docs.append(" ".join(sentences))
    return docs


def build_tiny_dataset(out: Path, n_train: int = 400, n_val: int = 40, seed: int = 0) -> Path:
    """tokenizer/spm.model (+ tokenizer.json), shards/{train,validation}-00000.arrow, manifest.json."""
    import numpy as np

    from data_pipeline.config import TokenizerConfig
    from data_pipeline.shards import split_entry, write_manifest, write_shard
    from data_pipeline.stages.tokenize import dataset_manifest
    from data_pipeline.tokenizer import load_tokenizer, train_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    docs = synthetic_docs(n_train + n_val, seed)
    corpus = out / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs)))
    settings = TokenizerConfig(vocab_size=TINY_VOCAB, byte_fallback=False, character_coverage=1.0, num_threads=1)
    train_tokenizer([corpus], out, settings)
    processor, info = load_tokenizer(out)
    (out / "shards").mkdir(exist_ok=True)
    splits = {}
    for split, part in (("train", docs[:n_train]), ("validation", docs[n_train:])):
        tokens = [np.array(processor.encode(t) + [info["eos_id"]], dtype=np.int64) for t in part]
        ids = [f"{split}-{i}" for i in range(len(part))]
        row = write_shard(
            out / "shards" / f"{split}-00000.arrow",
            ids,
            tokens,
            vocab_size=info["vocab_size"],
            eos_id=info["eos_id"],
            tokenizer_sha256=info["sha256"],
        )
        splits[split] = split_entry([row])
    write_manifest(out, dataset_manifest(info, splits))
    return out


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset folder the trainer accepts (see the module docstring) with ~40k train tokens, vocab 256."""
    return build_tiny_dataset(tmp_path_factory.mktemp("tiny_dataset"))


# --------------------------------------------------------------------------- launching the trainer on CPU

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable

# A model small enough that a 2-rank ZeRO-3 step takes milliseconds: 2 layers, d_model 64, seq_len 32.
TINY_TRAIN_SETTINGS = (
    "model.seq_len=32",
    "train.ds_config=ds_configs/zero3_cpu.json",
    "train.eval_interval=1000",
    "train.save_interval=1000",
    "log.interval=1",
    "log.tensorboard=false",
    "optim.warmup_steps=2",
    "data.val_samples=8",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_command(world_size: int, data: Path, out: Path, sets: tuple[str, ...] = (), extra: tuple = ()) -> list[str]:
    """The launch that works on CPU: torch's elastic launcher (what `torchrun` runs) with DS_ACCELERATOR=cpu."""
    args = [PYTHON, "-m", "torch.distributed.run", f"--nproc_per_node={world_size}", f"--master_port={free_port()}"]
    args += ["-m", "pretrain.train", "--data", str(data), "--preset", "debug", "--output", str(out)]
    for item in (*TINY_TRAIN_SETTINGS, *sets):
        args += ["--set", item]
    return args + list(extra)


def run_train(
    world_size: int,
    data: Path,
    out: Path,
    sets: tuple[str, ...] = (),
    env: dict | None = None,
    extra: tuple = (),
    timeout: int = 240,
) -> subprocess.CompletedProcess:
    """Run a training to completion; the output is kept in the result for assertion messages."""
    full_env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    full_env.update(env or {})
    return subprocess.run(
        train_command(world_size, data, out, sets, extra),
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def step_losses(run_dir: Path) -> dict[int, float]:
    """Training loss per step from RUN/metrics.csv (the last row wins for a step logged twice)."""
    from pretrain.metrics import read_metrics

    return {int(r["step"]): float(r["loss"]) for r in read_metrics(run_dir) if "loss" in r and "val_loss" not in r}


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny matmuls gain nothing from threads; on a loaded 2-core runner OpenMP spinning makes them ~20x slower.
    (make test also sets OMP_NUM_THREADS=1 for the multi-process tests' children.)"""
    import torch

    torch.set_num_threads(1)
    yield
