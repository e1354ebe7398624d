"""`pipeline inspect DIR`: counts that match the manifest, a decoded sample, text and PNG length histograms."""

from __future__ import annotations

import subprocess
import sys

from support.corpus import write_jsonl
from support.documents import GOOD, python_file, stdlib_docs, write_kept

from data_pipeline.comm import LocalComm
from data_pipeline.config import load_recipe
from data_pipeline.inspect_dataset import doc_lengths
from data_pipeline.stages.dedup import run_dedup
from data_pipeline.stages.tokenize import run_tokenize_stage
from data_pipeline.tokenizer import load_tokenizer


def test_inspect_reports_counts_sample_and_histograms(tmp_path):
    texts = stdlib_docs(40)
    out = write_kept(tmp_path, texts)
    recipe = load_recipe(None, ["tokenizer.vocab_size=400", "shards.validation_fraction=0.1"])
    stats = run_tokenize_stage(LocalComm(), out, recipe, quiet=True)
    done = subprocess.run(
        [sys.executable, "-m", "data_pipeline.cli", "inspect", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert f"train: {stats['train_num_docs']} docs, {stats['train_num_tokens']} tokens" in done.stdout
    assert f"validation: {stats['validation_num_docs']} docs" in done.stdout
    assert "dtype: uint16" in done.stdout
    first_train = next(t for i, t in enumerate(texts) if f"doc-{i:06d}" in done.stdout)
    assert repr(first_train[:40])[1:-1] in done.stdout  # the decoded sample is the first train document
    png = out / "inspect" / "doc_lengths.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    processor, _ = load_tokenizer(out)
    lengths = doc_lengths(out, "train")
    assert len(lengths) == stats["train_num_docs"] and lengths.sum() == stats["train_num_tokens"]
    assert lengths[0] == len(processor.encode(first_train)) + 1  # EOS counted


def test_inspect_of_a_folder_without_manifest_is_one_line_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "data_pipeline.cli", "inspect", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode != 0 and "no manifest" in done.stderr and "Traceback" not in done.stderr


def test_inspect_of_a_dedup_output_shows_drop_reasons_and_plots_them(tmp_path):
    web = write_jsonl(tmp_path / "web.jsonl", [f"Part {i}. {GOOD}" for i in range(5)] + ["too short"], "w")
    code = write_jsonl(tmp_path / "code.jsonl", [python_file(i) for i in range(3)], "c")
    recipe = load_recipe(overrides=["dedup.near=false", "dedup.exact=false", "workers=1"])
    run_dedup(LocalComm(), [str(web), str(code)], tmp_path / "out", recipe, quiet=True)
    done = subprocess.run(
        [sys.executable, "-m", "data_pipeline.cli", "inspect", str(tmp_path / "out")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "documents: 9 read -> 5 kept (55.6%)" in lines
    bars = [line.split() for line in lines if line.startswith("  filter:")]
    assert bars == [["filter:curly_braces", "3", "#" * 40], ["filter:word_count", "1", "#" * 13]]
    assert f"  {code}: 3 read -> 0 kept; dropped: filter:curly_braces=3" in lines
    assert any(line.startswith(f"warning: the filters dropped 3 of 3 documents (100%) of {code}") for line in lines)
    png = tmp_path / "out" / "inspect" / "drop_reasons.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "dataset:" not in done.stdout


def test_tokenizer_stage_and_inspect_never_import_torch():
    code = (
        "import sys, data_pipeline.tokenizer, data_pipeline.stages.tokenize, data_pipeline.inspect_dataset, matplotlib;"
        "matplotlib.use('Agg'); import matplotlib.pyplot;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
