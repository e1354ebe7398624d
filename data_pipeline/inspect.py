"""Show what a `pipeline run` output folder holds: counts per split, dtype, a decoded sample, document lengths.

The length histogram is printed as text and saved as DIR/inspect/doc_lengths.png (matplotlib with the Agg
backend: no display needed, and matplotlib does not import torch).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from data_pipeline.errors import PipelineError
from data_pipeline.shards import ShardError, read_manifest
from data_pipeline.tokenizer import load_tokenizer

HISTOGRAM_BINS = 12
BAR_WIDTH = 40


def doc_lengths(data_dir: str | os.PathLike, split: str, manifest: dict | None = None) -> np.ndarray:
    """Tokens per document (EOS included) from the shards' list offsets: no token is read."""
    manifest = manifest or read_manifest(data_dir)
    lengths = []
    for row in manifest["splits"][split]["shards"]:
        with pa.memory_map(str(Path(data_dir) / row["path"]), "r") as source:
            column = pa.ipc.open_file(source).get_batch(0).column("tokens")
            lengths.append(np.diff(column.offsets.to_numpy()))
    return np.concatenate(lengths) if lengths else np.zeros(0, np.int64)


def text_histogram(lengths: np.ndarray, bins: int = HISTOGRAM_BINS) -> list[str]:
    """Log-spaced length bins as rows of `lo-hi count bar`: lengths span orders of magnitude."""
    if len(lengths) == 0:
        return ["(no documents)"]
    edges = np.unique(np.geomspace(max(1, lengths.min()), lengths.max() + 1, bins + 1).astype(np.int64))
    counts, edges = np.histogram(lengths, bins=edges)
    widest = max(1, counts.max())
    return [
        f"{lo:>9}-{hi - 1:<9} {n:>8} {'#' * round(BAR_WIDTH * n / widest)}"
        for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True)
    ]


def save_histogram_png(lengths_by_split: dict[str, np.ndarray], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for split, lengths in lengths_by_split.items():
        if len(lengths):
            ax.hist(lengths, bins=np.geomspace(1, lengths.max() + 1, 40), alpha=0.6, label=f"{split} ({len(lengths)})")
    ax.set(xscale="log", xlabel="tokens per document (EOS included)", ylabel="documents", title="Document lengths")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def decoded_sample(data_dir: str | os.PathLike, manifest: dict, split: str, max_chars: int) -> str:
    """The first document of the split, decoded with the dataset's own tokenizer."""
    rows = manifest["splits"][split]["shards"]
    if not rows:
        return "(empty split)"
    processor, _ = load_tokenizer(data_dir)
    with pa.memory_map(str(Path(data_dir) / rows[0]["path"]), "r") as source:
        batch = pa.ipc.open_file(source).get_batch(0)
        doc_id = batch.column("doc_id")[0].as_py()
        tokens = batch.column("tokens")[0].values.to_numpy().tolist()
    text = processor.decode(tokens[:-1])
    return f"[{doc_id}, {len(tokens)} tokens] {text[:max_chars]!r}"


def report(data_dir: str | os.PathLike, max_chars: int = 300) -> tuple[list[str], Path]:
    """The printed report and the PNG path."""
    manifest = read_manifest(data_dir)
    lines = [f"dataset: {data_dir}", f"dtype: {manifest['dtype']}  vocab_size: {manifest['vocab_size']}"]
    lines.append(f"tokenizer: {manifest['tokenizer']['path']} sha256 {manifest['tokenizer']['sha256'][:16]}…")
    lengths = {}
    for split, entry in manifest["splits"].items():
        lengths[split] = doc_lengths(data_dir, split, manifest)
        lines.append(f"{split}: {entry['num_docs']} docs, {entry['num_tokens']} tokens, {len(entry['shards'])} shards")
    for split, split_lengths in lengths.items():
        lines += [f"document lengths ({split}, tokens):", *text_histogram(split_lengths)]
    lines.append(f"sample (train): {decoded_sample(data_dir, manifest, 'train', max_chars)}")
    png = save_histogram_png(lengths, Path(data_dir) / "inspect" / "doc_lengths.png")
    lines.append(f"histogram: {png}")
    return lines, png


def add_arguments(parser: Any) -> None:
    parser.add_argument("data_dir", metavar="DIR", help="output folder of `pipeline run`")
    parser.add_argument("--sample-chars", type=int, default=300, help="characters of the decoded sample to show")


def run(args: Any) -> int:
    """Print the report for DIR."""
    try:
        lines, _ = report(args.data_dir, args.sample_chars)
    except ShardError as err:
        raise PipelineError(str(err)) from err
    print("\n".join(lines))
    return 0
