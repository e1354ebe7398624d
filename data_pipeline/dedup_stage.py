"""Filter and deduplicate a corpus: read → quality filters → exact dedup → MinHash-LSH near dedup → kept/.

The same code runs as one process (LocalComm) or as N MPI ranks. Each rank reads a contiguous block of input
files (balanced by size), so kept/part-00000.jsonl, part-00001.jsonl, ... concatenated in rank order is the
global input order, and a document's global index (its position among all readable input documents) does not
depend on N. The dedup collectives see only global indices, so which documents survive does not depend on N
either. Each dedup decision reaches only the rank holding the document; each cluster record is built, with its
ids, by the rank holding the kept document. Rank 0 sums the ledgers, checks they add up and writes stats.json,
dedup/clusters.jsonl (from the ranks' records) and the report.

Outputs are written under temporary names and renamed; the completion marker is written last. A rerun with the
same inputs and recipe skips the stage when every output is intact; a changed input is refused (new folder).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterable
from multiprocessing import Pool
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from data_pipeline import drop_log, markers, minhash
from data_pipeline.comm import LocalComm, collective, get_comm, on_root
from data_pipeline.config import FiltersConfig, PipelineConfig, load_recipe, save_recipe
from data_pipeline.dedup_clusters import owner_of_blocks
from data_pipeline.documents import Document, Reject
from data_pipeline.errors import PipelineError
from data_pipeline.filters import drop_reason
from data_pipeline.ledger import Ledger
from data_pipeline.progress import stage_progress, summary
from data_pipeline.readers import ReadPosition, read_file, resolve_inputs, text_field_error

STAGE = "dedup"
STATS = "stats.json"
TIMINGS = "timings.json"
RECIPE = "recipe.yaml"
KEPT_DIR, REJECTS_DIR, CLUSTERS = "kept", "rejects", "dedup/clusters.jsonl"
DROPPED_DIR = drop_log.DROPPED_DIR
T = TypeVar("T")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The corpus arguments shared by `pipeline dedup` and `pipeline run`."""
    parser.add_argument("--input", action="append", required=True, metavar="PATH_OR_GLOB",
                        help="jsonl[.gz|.zst], parquet or txt file, directory or glob; repeatable")  # fmt: skip
    parser.add_argument("--output", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--config", metavar="RECIPE.yaml", help="recipe file (see data_pipeline/config.py)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override, e.g. dedup.threshold=0.8; repeatable")  # fmt: skip
    parser.add_argument("--strict", action="store_true", help="stop at the first bad input record (read.strict)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summary lines")


def recipe_from_args(args: argparse.Namespace) -> PipelineConfig:
    return load_recipe(args.config, [*args.set, *(["read.strict=true"] if args.strict else [])])


def run(args: argparse.Namespace) -> int:
    run_dedup(get_comm(), args.input, args.output, recipe_from_args(args), args.quiet)
    return 0


# ---------------------------------------------------------------------------------------------------- files


def assign_files(sizes: list[int], world_size: int) -> list[int]:
    """Owner rank of each file: contiguous blocks, cut where the cumulative size crosses k/N of the total."""
    total, done, owners = sum(sizes), 0, []
    for size in sizes:
        middle = done + size / 2
        owners.append(min(world_size - 1, int(middle * world_size / total)) if total else 0)
        done += size
    return owners


def write_jsonl_atomic(path: Path, records: Iterable[dict], ensure_ascii: bool = False) -> Path:
    """Write to a temporary name and rename, so a killed run never leaves a half file under the real name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=ensure_ascii) + "\n")
    except OSError as err:  # disk full, quota, I/O error: name the file, leave no partial one behind
        raise _write_error(path, tmp, err) from err
    os.replace(tmp, path)
    return path


def _write_error(path: Path, tmp: Path, err: OSError) -> PipelineError:
    tmp.unlink(missing_ok=True)
    return PipelineError(f"{path}: cannot write ({err.strerror}); free space there or choose another --output")


def write_json_atomic(path: Path, obj: Any) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")
    except OSError as err:
        raise _write_error(path, tmp, err) from err
    os.replace(tmp, path)
    return path


def part_name(rank: int) -> str:
    return f"part-{rank:05d}.jsonl"


# ---------------------------------------------------------------------------------------------------- steps


def read_share(
    files: list[str], recipe: PipelineConfig, ledger: Ledger, quiet: bool
) -> tuple[list[Document], list[Reject], set[str]]:
    """Read this rank's files; every record is counted in the ledger (per input), bad ones dropped with their reason.

    Also returns the field names of records that lack read.text_field (for the error when no record has it).
    """
    docs: list[Document] = []
    rejects: list[Reject] = []
    fields_seen: set[str] = set()
    with stage_progress("read", sum(os.path.getsize(f) for f in files), quiet) as bar:
        for path in files:
            position, shown_bytes, pending = ReadPosition(), 0, 0
            for item in read_file(path, recipe.read, position):
                (docs if isinstance(item, Document) else rejects).append(item)
                pending += 1
                if pending == 4096:
                    bar.update(pending, position.bytes_read - shown_bytes)
                    shown_bytes, pending = position.bytes_read, 0
            bar.update(pending, os.path.getsize(path) - shown_bytes)
            fields_seen |= position.fields_without_text
    for doc in docs:
        ledger.read(source=doc.source)
    for reject in rejects:
        ledger.read(source=reject.source)
        ledger.drop(reject.ledger_reason, source=reject.source)
    return docs, rejects, fields_seen


_WORKER_FILTERS: FiltersConfig | None = None


def _init_filter_worker(cfg: FiltersConfig) -> None:
    global _WORKER_FILTERS
    _WORKER_FILTERS = cfg


def _filter_in_worker(text: str) -> tuple[str, float] | None:
    return drop_reason(text, _WORKER_FILTERS)


_LOCAL_RANKS_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")


def local_ranks() -> int:
    """How many ranks of this job share this machine (1 without a launcher)."""
    for name in _LOCAL_RANKS_VARS:
        value = os.environ.get(name, "").split("(")[0]
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def resolve_workers(workers: int) -> int:
    """`workers=0` is this rank's fair share of the cores it may use, so N ranks on a node do not oversubscribe it."""
    if workers:
        return workers
    return max(1, minhash.resolve_workers(0) // local_ranks())


def filter_reasons(texts: list[str], cfg: FiltersConfig, workers: int, quiet: bool) -> list[tuple[str, float] | None]:
    """(drop reason, measured value) of each text (None = keep), over local worker processes when worth it."""
    reasons: list[tuple[str, float] | None] = []
    with stage_progress("filter", sum(len(t) for t in texts), quiet) as bar:
        if workers <= 1 or len(texts) < 512:
            chunks: Iterable[tuple[str, float] | None] = (drop_reason(t, cfg) for t in texts)
            pool = None
        else:
            pool = Pool(workers, initializer=_init_filter_worker, initargs=(cfg,))
            chunks = pool.imap(_filter_in_worker, texts, chunksize=64)
        try:
            for text, reason in zip(texts, chunks, strict=True):
                reasons.append(reason)
                bar.update(1, len(text))
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    return reasons


def apply_drops(
    kept: np.ndarray, doc_index: np.ndarray, removed: np.ndarray, reason: str, ledger: Ledger, docs: list[Document]
) -> None:
    """Clear `kept` for the removed global indices and count them under `reason`, per input."""
    hit = np.isin(doc_index, np.asarray(removed, dtype=np.int64))
    newly = hit & kept
    for i in np.flatnonzero(newly):
        ledger.drop(reason, source=docs[i].source)
    kept &= ~hit


def keep_priorities(docs: list[Document], alive: np.ndarray, recipe: PipelineConfig) -> np.ndarray:
    """`dedup.keep` priority of each live document (the cluster keeps its lowest (priority, global index))."""
    from data_pipeline.exact_dedup import keep_priority

    return keep_priority(np.array([len(docs[i].text) for i in alive], np.int64), recipe.dedup.keep)


def exact_dedup(comm: LocalComm, docs: list[Document], doc_index: np.ndarray, kept: np.ndarray, ledger: Ledger,
                recipe: PipelineConfig, owner_of: Any) -> list[dict]:  # fmt: skip
    """Drop byte-identical copies of a higher-priority document (any rank); returns the clusters this rank owns."""
    from data_pipeline.exact_dedup import exact_text_hashes, find_exact_duplicates

    alive = np.flatnonzero(kept)
    hashes = exact_text_hashes([docs[i].text for i in alive])
    priority = keep_priorities(docs, alive, recipe)
    result = find_exact_duplicates(comm, doc_index[alive], hashes, priority, owner_of)
    apply_drops(kept, doc_index, result.removed, "exact_dup", ledger, docs)
    return [{"kind": "exact", **c} for c in result.clusters]


SIGNATURE_BATCH_DOCS = 16384


def minhash_signatures(texts: list[str], recipe: PipelineConfig, quiet: bool) -> np.ndarray:
    """(n, num_perm) signatures in batches, so the bar moves; a signature depends only on its own text."""
    cfg, workers = recipe.dedup, resolve_workers(recipe.workers)
    batches = []
    with stage_progress("minhash", sum(len(t) for t in texts), quiet) as bar:
        for start in range(0, len(texts), SIGNATURE_BATCH_DOCS):
            batch = texts[start : start + SIGNATURE_BATCH_DOCS]
            batches.append(
                minhash.compute_signatures(
                    batch,
                    ngram=cfg.ngram,
                    num_perm=cfg.num_perm,
                    seed=cfg.seed,
                    workers=workers,
                    scheme=cfg.scheme,
                    shingle=cfg.shingle,
                )
            )
            bar.update(len(batch), sum(len(t) for t in batch))
    return np.concatenate(batches) if batches else np.zeros((0, cfg.num_perm), np.uint32)


def near_dedup(comm: LocalComm, docs: list[Document], doc_index: np.ndarray, kept: np.ndarray, ledger: Ledger,
               recipe: PipelineConfig, params: Any, pairs: dict, quiet: bool, owner_of: Any) -> list[dict]:  # fmt: skip
    """Drop verified near duplicates of the document kept for them (any rank); returns the clusters this rank owns."""
    from data_pipeline.lsh import find_near_duplicates

    alive = np.flatnonzero(kept)
    signatures = minhash_signatures([docs[i].text for i in alive], recipe, quiet)
    priority = keep_priorities(docs, alive, recipe)
    verify = recipe.dedup.verify_threshold
    result = find_near_duplicates(comm, doc_index[alive], signatures, params, verify, priority, owner_of)
    apply_drops(kept, doc_index, result.removed, "near_dup", ledger, docs)
    pairs["candidate_pairs"], pairs["verified_pairs"] = int(result.candidate_pairs), int(result.verified_pairs)
    return [{"kind": "near", **c} for c in result.clusters]


def lsh_params(recipe: PipelineConfig) -> Any:
    from data_pipeline.lsh import LSHParams

    cfg = recipe.dedup
    return LSHParams.from_threshold(cfg.threshold, cfg.num_perm, bands=cfg.bands, rows=cfg.rows)


def own_cluster_records(comm: LocalComm, run: DedupRun) -> list[dict]:
    """This rank's clusters.jsonl lines (ids in place of indices; exact first, each kind by kept index).

    Ranks hold contiguous global indices, so the ranks' lists concatenated in rank order and stably sorted by kind
    are in (kind, kept index) order for any rank count."""
    from data_pipeline.exact_dedup import cluster_records_with_ids

    ordered = sorted(run.clusters, key=lambda c: (c["kind"] != "exact", int(c["kept"])))
    doc_ids = [d.id for d in run.docs]
    return cluster_records_with_ids(comm, ordered, run.doc_index, doc_ids, run.owner_of)


# ---------------------------------------------------------------------------------------------------- the stage


def stage_config(recipe: PipelineConfig) -> dict:
    """What the outputs depend on (worker counts and the tokenizer sections do not change them)."""
    return {"read": recipe.section("read"), "filters": recipe.section("filters"), "dedup": recipe.section("dedup")}


def prepare_output(output_dir: Path) -> None:
    """Forget any earlier completion and remove part files another rank count may have left."""
    markers.invalidate(output_dir, STAGE)
    for sub in (KEPT_DIR, REJECTS_DIR, "dedup", DROPPED_DIR):
        (output_dir / sub).mkdir(parents=True, exist_ok=True)
    for sub in (KEPT_DIR, REJECTS_DIR, DROPPED_DIR):
        for stale in (output_dir / sub).glob("part-*.jsonl*"):
            stale.unlink()


def stage_outputs(output_dir: Path) -> list[Path]:
    """Every file the stage wrote, in a fixed order: the marker records their sha256."""
    parts = [
        *sorted((output_dir / KEPT_DIR).glob("part-*.jsonl")),
        *sorted((output_dir / REJECTS_DIR).glob("part-*.jsonl")),
        *sorted((output_dir / DROPPED_DIR).glob("part-*.jsonl.gz")),
    ]
    return [*parts, output_dir / CLUSTERS, output_dir / STATS, output_dir / RECIPE]


def run_dedup(comm: LocalComm, inputs: list[str], output_dir: Path, recipe: PipelineConfig, quiet: bool) -> dict:
    """The whole stage on every rank; returns the merged stats (on every rank)."""
    output_dir = Path(output_dir)
    quiet = quiet or comm.rank != 0
    files = on_root(comm, "resolving inputs", lambda: resolve_inputs(inputs))
    stage_fp = markers.fingerprint(STAGE, stage_config(recipe), files)
    if on_root(comm, "checking earlier outputs", lambda: markers.is_complete(output_dir, STAGE, stage_fp)):
        stats = json.loads((output_dir / STATS).read_text())
        summary(f"dedup: {output_dir} is already complete for these inputs and recipe; skipped", quiet)
        return stats
    on_root(comm, "preparing the output folder", lambda: prepare_output(output_dir))
    stats = DedupRun(comm, files, output_dir, recipe, quiet).execute()
    if comm.rank == 0:
        outputs = stage_outputs(output_dir)
        markers.mark_complete(output_dir, STAGE, stage_fp, outputs)
    comm.barrier()
    return stats


class DedupRun:
    """One execution of the stage on one rank: holds the rank's documents, keep mask, ledger and timings."""

    def __init__(self, comm: LocalComm, files: list[str], output_dir: Path, recipe: PipelineConfig, quiet: bool):
        self.comm, self.files, self.out, self.recipe, self.quiet = comm, files, output_dir, recipe, quiet
        self.ledger = Ledger()
        self.timings: dict[str, float] = {}
        self.clusters: list[dict] = []
        self.pairs: dict[str, int] = {}
        self.drop_examples: dict[str, list[dict]] = {}

    def timed(self, name: str, fn: Callable[[], T]) -> T:
        started = time.perf_counter()
        result = fn()
        self.timings[name] = round(time.perf_counter() - started, 3)
        return result

    def my_files(self) -> list[str]:
        owners = assign_files([os.path.getsize(f) for f in self.files], self.comm.size)
        return [f for f, owner in zip(self.files, owners, strict=True) if owner == self.comm.rank]

    def read(self) -> None:
        docs, rejects, fields_seen = collective(
            self.comm, "reading", lambda: read_share(self.my_files(), self.recipe, self.ledger, self.quiet)
        )
        write_jsonl_atomic(
            self.out / REJECTS_DIR / part_name(self.comm.rank), (r.to_record() for r in rejects), ensure_ascii=True
        )
        counts = self.comm.allgather(len(docs))
        self.offset = sum(counts[: self.comm.rank])
        self.owner_of = owner_of_blocks(counts)
        self.docs = docs
        self.doc_index = np.arange(self.offset, self.offset + len(docs), dtype=np.int64)
        self.kept = np.ones(len(docs), dtype=bool)
        bad = self.comm.allreduce_sum(len(rejects))
        missing = self.comm.allreduce_sum(sum(r.reason == "missing_text" for r in rejects))
        fields = sorted(set().union(*self.comm.allgather(fields_seen)))
        if error := text_field_error(sum(counts), missing, fields, self.recipe.read):
            raise error  # every rank decides alike from the reduced counts, so every rank raises
        summary(f"read: {sum(counts)} documents and {bad} bad records from {len(self.files)} files", self.quiet)

    def filter(self) -> None:
        reasons = filter_reasons(
            [d.text for d in self.docs], self.recipe.filters, resolve_workers(self.recipe.workers), self.quiet
        )
        with drop_log.DropLog(drop_log.part_path(self.out, f"part-{self.comm.rank:05d}")) as dropped:
            for i, failed in enumerate(reasons):
                if failed is not None:
                    doc, (reason, value) = self.docs[i], failed
                    self.kept[i] = False
                    self.ledger.drop(reason, source=doc.source)
                    dropped.add(doc.id, doc.source, reason, value, doc.text)
        self.drop_examples = dropped.examples
        passed, total = self.comm.allreduce_sum(int(self.kept.sum())), self.comm.allreduce_sum(len(self.docs))
        summary(f"filter: {passed} of {total} documents pass the quality filters", self.quiet)

    def dedup(self) -> None:
        cfg = self.recipe.dedup
        if cfg.exact:
            self.clusters += self.timed(
                "exact_dedup",
                lambda: exact_dedup(
                    self.comm, self.docs, self.doc_index, self.kept, self.ledger, self.recipe, self.owner_of
                ),
            )
            self.step_summary("exact dedup", "exact_dup", "exact_dedup")
        if cfg.near:
            self.params = lsh_params(self.recipe)
            summary(f"near dedup: {self.params.describe()}", self.quiet)
            self.clusters += self.timed(
                "near_dedup",
                lambda: near_dedup(
                    self.comm,
                    self.docs,
                    self.doc_index,
                    self.kept,
                    self.ledger,
                    self.recipe,
                    self.params,
                    self.pairs,
                    self.quiet,
                    self.owner_of,
                ),
            )
            self.step_summary("near dedup", "near_dup", "near_dedup")

    def step_summary(self, step: str, reason: str, timing: str) -> None:
        """Rank 0's line after a dedup step: removals summed over ranks (a collective: every rank calls it)."""
        removed = self.comm.allreduce_sum(self.ledger.dropped.get(reason, 0))
        clusters = self.comm.allreduce_sum(sum(c["kind"] == reason.split("_")[0] for c in self.clusters))
        summary(
            f"{step}: {removed} documents removed in {clusters} clusters ({self.timings[timing]:.1f} s)", self.quiet
        )

    def write_kept(self) -> None:
        kept_docs = []
        for doc, keep in zip(self.docs, self.kept, strict=True):
            if keep:
                kept_docs.append(doc.to_record())
                self.ledger.keep(source=doc.source)
        write_jsonl_atomic(self.out / KEPT_DIR / part_name(self.comm.rank), kept_docs)

    def execute(self) -> dict:
        self.timed("read", self.read)
        self.timed("filter", self.filter)
        self.dedup()
        self.timed("write_kept", self.write_kept)
        records = self.comm.gather(own_cluster_records(self.comm, self), root=0)
        ledgers = self.comm.gather(self.ledger, root=0)
        timings = self.comm.gather(self.timings, root=0)
        examples = self.comm.gather(self.drop_examples, root=0)
        stats = collective(
            self.comm,
            "writing stats",
            lambda: self.finish(ledgers, timings, records, examples) if self.comm.rank == 0 else None,
        )
        return self.comm.bcast(stats)

    def finish(
        self, ledgers: list[Ledger], timings: list[dict], rank_records: list[list[dict]], examples: list[dict]
    ) -> dict:
        """Rank 0: check the summed ledger, write stats.json, clusters.jsonl, the recipe and the report."""
        total = Ledger.merged(ledgers)
        total.check()
        records = sorted((r for part in rank_records for r in part), key=lambda r: r["kind"] != "exact")
        write_jsonl_atomic(self.out / CLUSTERS, records)
        save_recipe(self.recipe, self.out / RECIPE)
        stats = self.stats(total, records)
        write_json_atomic(self.out / STATS, stats)
        # wall times differ run to run: kept apart so stats.json is byte-identical for the same input and recipe
        write_json_atomic(self.out / TIMINGS, {k: max(t.get(k, 0.0) for t in timings) for k in timings[0]})
        report(stats, records, self.out, self.quiet, drop_log.merge_examples(examples))
        return stats

    def stats(self, total: Ledger, records: list[dict]) -> dict:
        stats: dict[str, Any] = total.to_stats()
        stats["filter_warnings"] = drop_log.filter_warnings(stats)
        stats["ranks"] = self.comm.size
        stats["input_files"] = len(self.files)
        stats["clusters"] = {
            "exact": sum(r["kind"] == "exact" for r in records),
            "near": sum(r["kind"] == "near" for r in records),
        }
        largest = max(records, key=lambda r: len(r["removed"]), default=None)
        stats["largest_cluster"] = (
            {"kept": largest["kept"], "size": 1 + len(largest["removed"]), "kind": largest["kind"]} if largest else None
        )
        if self.recipe.dedup.near:
            p = self.params
            stats["lsh"] = {"threshold": self.recipe.dedup.threshold, "num_perm": self.recipe.dedup.num_perm,
                            "bands": int(p.bands), "rows": int(p.rows), "describe": p.describe(), **self.pairs}  # fmt: skip
        return stats


def report(
    stats: dict, records: list[dict], output_dir: Path, quiet: bool, dropped_examples: dict, examples: int = 3
) -> None:
    """The end-of-stage summary: counts, per-input breakdown, filter warnings and examples, duplicate clusters.

    The warnings are printed even under --quiet: a filter recipe that empties an input must never go unnoticed.
    """
    dropped = ", ".join(f"{reason}={n}" for reason, n in stats["dropped"].items()) or "none"
    summary(f"dedup: {stats['input_docs']} input docs -> {stats['kept_docs']} kept; dropped: {dropped}", quiet)
    summary("per input (read -> kept; dropped by reason):", quiet)
    for line in drop_log.per_input_lines(stats):
        summary(line, quiet)
    if dropped_examples:
        summary(f"dropped by the filters, e.g. (all in {output_dir / DROPPED_DIR}):", quiet)
        for line in drop_log.example_lines(dropped_examples):
            summary(line, quiet)
    for warning in stats["filter_warnings"]:
        summary(f"warning: {warning}", quiet=False)
    shown = [r for r in records if r["kind"] == "exact"][:examples] + [r for r in records if r["kind"] == "near"][
        :examples
    ]
    for record in shown:
        sims = ", ".join(f"{s:.2f}" for s in record["similarity"][:3])
        summary(
            f"  {record['kind']} cluster: kept {record['kept']} removed {record['removed'][:3]} (similarity {sims})",
            quiet,
        )
    summary(f"dedup: outputs in {output_dir} (kept/, rejects/, {DROPPED_DIR}/, {CLUSTERS}, {STATS})", quiet)
