"""lm-eval-harness reads our export: its `hf` model on the shipped `pretrain_text` task (rolling log-likelihood
over local text) gives the perplexity `pretrain evaluate` gives for the same tokens.

What each side scores: `pretrain evaluate` takes windows of seq_len+1 tokens from the token stream and predicts the
last seq_len of them from what precedes them in the window; lm-eval predicts every token of a document from the
prefix token (here EOS: `prefix_token_id=2`) and the document before it. So the test builds a validation split in
which every window `pretrain evaluate --samples K` picks is exactly [EOS, document of seq_len tokens]: the stream is
EOS, then each document followed by a filler document that pushes the next EOS to the next even window (the EOS
the shard format appends to every document lands where the windows need it). Both sides then score the same
K x seq_len tokens with the same context, in fp32 on CPU; lm-eval's total log-likelihood comes from its per-document
log-likelihoods (log_samples), cross-checked with byte_perplexity x bytes.

lm-eval's `hf` model imports accelerate (lm_eval[hf]); both are in the dev extra. It runs in a fresh process with
HF_DATASETS_OFFLINE/HF_HUB_OFFLINE set and its caches under the test's folder: nothing is downloaded.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.corpus import synthetic_docs
from support.launch import ROOT

pytestmark = pytest.mark.slow

TASKS = ROOT / "pretrain" / "interop" / "lm_eval_tasks"
SEQ_LEN = 32  # the exported model's context (test_export.py's trained_run)
DOCS = 6


def documents_of_seq_len(spm_path: Path, count: int) -> tuple[list[str], list[list[int]]]:
    """Texts that encode to exactly SEQ_LEN tokens: the first SEQ_LEN tokens of longer documents, kept when their
    decoded text encodes back to the same tokens."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    texts, tokens = [], []
    for doc in synthetic_docs(200, seed=7):
        ids = sp.encode(doc)[:SEQ_LEN]
        text = sp.decode(ids)
        if len(ids) == SEQ_LEN and sp.encode(text) == ids:
            texts.append(text)
            tokens.append(ids)
        if len(texts) == count:
            return texts, tokens
    raise AssertionError(f"only {len(texts)} of 200 documents round-trip at {SEQ_LEN} tokens")


def aligned_dataset(tiny_dataset: Path, out: Path, tokens: list[list[int]]) -> Path:
    """A validation split whose windows 0, 2, ..., 2K-2 are [EOS, document k] (see the module docstring)."""
    from data_pipeline.shards import read_manifest, split_entry, write_shard
    from data_pipeline.stages.tokenize import dataset_manifest

    manifest = read_manifest(tiny_dataset)
    eos = int(manifest["eos_id"])
    filler = [tokens[0][: SEQ_LEN - 2]]  # any SEQ_LEN-2 tokens: with its EOS it spans the odd window
    docs = [[]] + [d for doc in tokens for d in ([doc] + filler)][:-1]
    token_lists = [np.array(doc + [eos], dtype=np.int64) for doc in docs]
    (out / "shards").mkdir(parents=True)
    info = manifest["tokenizer"]
    row = write_shard(
        out / "shards" / "validation-00000.arrow",
        [f"v{i}" for i in range(len(docs))],
        token_lists,
        vocab_size=int(manifest["vocab_size"]),
        eos_id=eos,
        tokenizer_sha256=info["sha256"],
    )
    from data_pipeline.shards import write_manifest

    write_manifest(out, dataset_manifest(info, {"validation": split_entry([row])}))
    return out


LM_EVAL = """
import json, sys
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager
model, tasks, data, out = sys.argv[1:]
manager = TaskManager(include_path=tasks, metadata={"data_files": data})
args = {"pretrained": model, "prefix_token_id": 2, "dtype": "float32", "device": "cpu"}
results = simple_evaluate(model="hf", model_args=args, tasks=["pretrain_text"], task_manager=manager,
                          batch_size=4, log_samples=True, bootstrap_iters=0)
samples = results["samples"]["pretrain_text"]
json.dump({"metrics": results["results"]["pretrain_text"],
           "docs": [{"text": s["doc"]["text"], "loglikelihood": s["filtered_resps"][0]} for s in samples]}, open(out, "w"))
"""


def run_lm_eval(model: Path, data: Path, out: Path) -> dict:
    """lm-eval's Python API in a fresh process, offline, with caches under the test's folder."""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.update({"HF_HOME": str(out.parent / "hf-home"), "OMP_NUM_THREADS": "1"})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-c", LM_EVAL, str(model), str(TASKS), str(data), str(out)]
    proc = subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def labelled(stdout: str, name: str) -> float:
    match = re.search(rf"^{name}: (\S+)$", stdout, re.MULTILINE)
    assert match, f"no '{name}: ...' line in {stdout[-2000:]!r}"
    return float(match.group(1))


def test_lm_eval_perplexity_of_the_export_equals_pretrain_evaluate(
    tmp_path_factory, tiny_dataset, tmp_path, capsys
) -> None:
    from support.runs import export_of
    from transformers import AutoTokenizer

    from pretrain.cli import main as cli_main

    run_dir, export = export_of(tmp_path_factory, tiny_dataset, "debug")
    texts, tokens = documents_of_seq_len(tiny_dataset / "tokenizer" / "spm.model", DOCS)
    hf_tokenizer = AutoTokenizer.from_pretrained(export)
    assert [hf_tokenizer.encode(t) for t in texts] == tokens  # lm-eval scores the same tokens
    data = aligned_dataset(tiny_dataset, tmp_path / "aligned", tokens)
    text_file = tmp_path / "text.jsonl"
    text_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))

    args = ["evaluate", str(run_dir), "--data", str(data), "--samples", str(DOCS), "--device", "cpu"]
    assert cli_main(args) == 0  # `pretrain evaluate`, in this process
    stdout = capsys.readouterr().out
    assert labelled(stdout, "tokens") == DOCS * SEQ_LEN
    evaluated = labelled(stdout, "loss")

    result = run_lm_eval(export, text_file, tmp_path / "lm_eval.json")
    assert sorted(d["text"] for d in result["docs"]) == sorted(texts)
    total = sum(d["loglikelihood"] for d in result["docs"])
    n_bytes = sum(len(t.encode()) for t in texts)
    byte_perplexity = result["metrics"]["byte_perplexity,none"]
    assert -math.log(byte_perplexity) * n_bytes == pytest.approx(total, rel=1e-9)  # the metric is these sums
    lm_eval_loss = -total / (DOCS * SEQ_LEN)
    # evaluate prints 4 decimals (rounding: 5e-5); both forwards are fp32 on CPU (their difference: ~1e-6)
    assert lm_eval_loss == pytest.approx(evaluated, abs=6e-5)
    assert math.exp(lm_eval_loss) == pytest.approx(labelled(stdout, "perplexity"), rel=1e-4)
