"""Show what a pipeline output folder holds: what was dropped and why, then the dataset (counts, dtype, a sample).

From stats.json (`pipeline dedup` and `pipeline run`): documents read and kept, the count per drop reason, the
per-input breakdown and the filter warnings, and for web archives what extraction dropped; from kept/: the
languages and the domains of the kept documents (the first `KEPT_SAMPLE` of them); from manifest.json (`pipeline run`): counts per split, dtype, a
decoded sample and document lengths. Each histogram is printed as text and saved under DIR/inspect/ as a PNG
(matplotlib with the Agg backend: no display needed, and matplotlib does not import torch).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from data_pipeline import drop_log
from data_pipeline.errors import PipelineError
from data_pipeline.shards import MANIFEST, ShardError, read_manifest
from data_pipeline.tokenizer import load_tokenizer

HISTOGRAM_BINS = 12
BAR_WIDTH = 40
KEPT_SAMPLE = 100_000  # kept documents read for the language and domain tables
TOP_ROWS = 15
WEB_ARCHIVE_REASONS = ("skipped:", "extract:")  # records of a web archive that held no page, or no main text


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


def _bar(n: int, widest: int) -> str:
    return "#" * round(BAR_WIDTH * n / max(1, widest))


def drop_reason_lines(stats: dict) -> list[str]:
    """Kept and dropped counts, one bar per reason (largest first), the per-input breakdown and the warnings."""
    read, kept = stats["input_docs"], stats["kept_docs"]
    lines = [f"documents: {read} read -> {kept} kept ({100 * kept / max(1, read):.1f}%)", "dropped by reason:"]
    reasons = sorted(stats["dropped"].items(), key=lambda kv: (-kv[1], kv[0]))
    widest = max((n for _, n in reasons), default=0)
    width = max((len(r) for r, _ in reasons), default=0)
    lines += [f"  {reason:<{width}} {n:>9} {_bar(n, widest)}" for reason, n in reasons] or ["  (none)"]
    if stats.get("per_input"):
        lines += ["per input (read -> kept; dropped by reason):", *drop_log.per_input_lines(stats)]
    lines += [f"warning: {w}" for w in stats.get("filter_warnings", [])]
    return lines


def extraction_lines(stats: dict) -> list[str]:
    """What web archive reading dropped before any filter: records without a page, pages without main text."""
    dropped = {r: n for r, n in stats["dropped"].items() if r.startswith(WEB_ARCHIVE_REASONS)}
    if not dropped:
        return []
    lines = ["web archive records dropped before the filters (no page, or no main text in it):"]
    return lines + [f"  {reason:<28} {n:>9}" for reason, n in sorted(dropped.items())]


def _domain(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1].split(":")[0].lower().removeprefix("www.")


def kept_metadata(data_dir: str | os.PathLike, limit: int = KEPT_SAMPLE) -> tuple[int, Counter, Counter, Counter]:
    """(documents read, count per language, summed language score per language, count per URL domain)."""
    languages, scores, domains, read = Counter(), Counter(), Counter(), 0
    for part in sorted((Path(data_dir) / "kept").glob("part-*.jsonl")):
        with open(part, encoding="utf-8") as f:
            for line in f:
                if read == limit:
                    return read, languages, scores, domains
                record, read = json.loads(line), read + 1
                languages[record.get("language", "?")] += 1
                scores[record.get("language", "?")] += record.get("language_score", 0.0)
                if isinstance(record.get("url"), str):
                    domains[_domain(record["url"])] += 1
    return read, languages, scores, domains


def _most_common(counts: Counter) -> list[tuple[str, int]]:
    """The TOP_ROWS largest counts, ties by name: the same table on every run."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_ROWS]


def kept_metadata_lines(data_dir: str | os.PathLike) -> list[str]:
    """The kept documents' languages (with their mean score) and URL domains, most common first."""
    read, languages, scores, domains = kept_metadata(data_dir)
    if not read:
        return []
    sample = f"first {read} kept documents" if read == KEPT_SAMPLE else f"{read} kept documents"
    lines = [f"languages ({sample}; language, documents, mean score):"]
    lines += [f"  {lang:<8} {n:>9} {scores[lang] / n:6.3f} {_bar(n, read)}" for lang, n in _most_common(languages)]
    if domains:
        lines.append(f"domains ({sample}, {len(domains)} distinct):")
        lines += [f"  {domain:<40} {n:>9}" for domain, n in _most_common(domains)]
    return lines


def _reason_color(reason: str) -> str:
    kind = reason.split(":")[0]
    colors = {"bad_input": "tab:red", "filter": "tab:orange", "skipped": "tab:gray", "extract": "tab:purple"}
    return colors.get(kind, "tab:blue")


def save_drop_reasons_png(stats: dict, path: Path) -> Path:
    """A horizontal bar per drop reason (bad input red, filters orange, duplicates blue) and one for kept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reasons = sorted(stats["dropped"].items(), key=lambda kv: kv[1])
    labels = [r for r, _ in reasons] + ["kept"]
    counts = [n for _, n in reasons] + [stats["kept_docs"]]
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.3 * len(labels)))
    ax.barh(labels, counts, color=[_reason_color(r) for r, _ in reasons] + ["tab:green"])
    for y, n in enumerate(counts):
        ax.annotate(f" {n}", (n, y), va="center")
    ax.set(xlabel="documents", title=f"Fate of {stats['input_docs']} input documents")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


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


def report(data_dir: str | os.PathLike, max_chars: int = 300) -> tuple[list[str], list[Path]]:
    """The printed report and the PNG paths: drop reasons (stats.json), then the dataset (manifest.json)."""
    stats_path, has_manifest = Path(data_dir) / "stats.json", (Path(data_dir) / MANIFEST).is_file()
    if not stats_path.is_file() and not has_manifest:
        raise PipelineError(
            f"{data_dir}: no manifest.json or stats.json; pass the output folder of `pipeline run` or `pipeline dedup`"
        )
    lines, pngs = [f"output: {data_dir}"], []
    if stats_path.is_file():
        stats = json.loads(stats_path.read_text())
        lines += drop_reason_lines(stats)
        lines += extraction_lines(stats)
        lines += kept_metadata_lines(data_dir)
        pngs.append(save_drop_reasons_png(stats, Path(data_dir) / "inspect" / "drop_reasons.png"))
        lines.append(f"drop reasons plot: {pngs[-1]}")
    if has_manifest:
        dataset_lines, png = dataset_report(data_dir, max_chars)
        lines += dataset_lines
        pngs.append(png)
    return lines, pngs


def dataset_report(data_dir: str | os.PathLike, max_chars: int) -> tuple[list[str], Path]:
    """Counts per split, dtype, tokenizer, length histograms and a decoded sample, from manifest.json."""
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
    parser.add_argument("data_dir", metavar="DIR", help="output folder of `pipeline run` or `pipeline dedup`")
    parser.add_argument("--sample-chars", type=int, default=300, help="characters of the decoded sample to show")


def run(args: Any) -> int:
    """Print the report for DIR."""
    try:
        lines, _ = report(args.data_dir, args.sample_chars)
    except ShardError as err:
        raise PipelineError(str(err)) from err
    print("\n".join(lines))
    return 0
