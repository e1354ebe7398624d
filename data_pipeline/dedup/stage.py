"""Filter and deduplicate a corpus: tasks → streaming steps → distributed dedup → a streaming pass writes kept/.

The same code runs as one process (LocalComm) or as N MPI ranks (mpiexec, srun). Phases:

1. Plan. Rank 0 resolves the inputs; every rank cuts them into the same tasks (data_pipeline/tasks.py: a file,
   or a byte range of a large uncompressed jsonl file) and spreads them over ranks by size.
2. Scan, per task, streaming. Documents flow read → normalize → quality filter → exact key → MinHash signature
   (data_pipeline/steps.py) in bounded batches over this rank's local worker processes; what later phases need
   goes to disk per task under DIR/dedup/work/t-NNNNN/ (each document's filter verdict and id; for documents that
   pass, the exact key, the signature and the length), and the task's bad records to rejects/part-NNNNN.jsonl.
   Each task then gets its own completion marker: a rerun redoes only the tasks without one.
3. Dedup, collective. A document's global index is its position among all documents in task order, so it does
   not depend on N. Each rank loads the keys (then the signatures) of its own tasks' documents and calls the
   dedup functions (exact.py, lsh.py, clusters.py); each rank learns the removals among its own documents and
   receives the clusters whose kept document it holds.
4. Write, per task, streaming. The task is read again and its documents that passed and were not removed go to
   kept/part-NNNNN.jsonl; each task has its own marker (which records the removals it applied). The clusters a
   rank owns are written by that rank into its byte ranges of dedup/clusters.jsonl (task order, then exact
   before near, then kept index).
5. Finish. Rank 0 sums the per-rank ledgers, checks they add up, writes stats.json (with per-rank peak memory
   and bytes sent/received), timings.json, the recipe, and the stage marker last. Each file's sha256 is
   computed by the rank that wrote it, while writing; a rerun's check of the marker is split over the ranks.

Nothing holds a rank's documents: memory is a batch of text plus, during dedup, 8 bytes of index, 16 of key,
8 of priority and 4 * num_perm of signature per document of the rank's share. kept/ concatenated in part order
is the global input order for any N; which documents survive does not depend on N either.

Any rank's error ends the whole job (the CLI prints it with the rank number, then MPI_Abort); no completion
marker is written for unfinished work. Ctrl-C and SIGTERM terminate the local worker pools (executor.py).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np

from data_pipeline import drop_log, markers
from data_pipeline.comm import Comm, get_comm, on_root
from data_pipeline.config import PipelineConfig, load_recipe, save_recipe
from data_pipeline.dedup import clusters as dedup_clusters
from data_pipeline.dedup import exact as exact_dedup
from data_pipeline.dedup import lsh
from data_pipeline.documents import Document, Reject
from data_pipeline.errors import PipelineError
from data_pipeline.executor import mark_every_rank, ordered_map, peak_rss_bytes, worker_pool, workers_for_rank
from data_pipeline.ledger import Ledger
from data_pipeline.progress import stage_progress, summary
from data_pipeline.readers import ReadPosition, resolve_inputs, text_field_error
from data_pipeline.steps import init_steps, scan_batch
from data_pipeline.tasks import Task, assign_tasks, count_range_lines, file_sizes, plan_tasks, read_task
from infra.files import atomic_write, file_sha256, temp_path

STAGE = "dedup"
STATS = "stats.json"
TIMINGS = "timings.json"
RECIPE = "recipe.yaml"
KEPT_DIR, REJECTS_DIR, CLUSTERS, WORK_DIR = "kept", "rejects", "dedup/clusters.jsonl", "dedup/work"
DROPPED_DIR = drop_log.DROPPED_DIR
BATCH_DOCS = 1024
BATCH_BYTES = 4 << 20
SIGNATURE_BLOCK_ROWS = 4096
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


def part_name(task_index: int) -> str:
    return f"part-{task_index:05d}.jsonl"


def _write_error(path: Path, err: OSError) -> PipelineError:
    return PipelineError(f"{path}: cannot write ({err.strerror}); free space there or choose another --output")


class HashedFile:
    """A file written with `atomic_write` (infra/files.py) and hashed while written.

    A killed run never leaves a half file under the real name; a write error (disk full, quota, file-size
    limit) names the file, and the temporary one is removed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.digest = hashlib.sha256()
        self.file: BinaryIO | None = None
        self._open = contextlib.ExitStack()  # holds the atomic write from __enter__ to __exit__

    def __enter__(self) -> HashedFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.file = self._open.enter_context(atomic_write(self.path, "wb"))
        except OSError as err:
            raise _write_error(self.path, err) from err
        return self

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        try:
            self.file.write(data)
        except OSError as err:
            raise _write_error(self.path, err) from err

    def __exit__(self, kind: Any, err: Any, tb: Any) -> None:
        try:
            self._open.__exit__(kind, err, tb)
        except OSError as close_err:  # the last bytes, the fsync or the rename failed (again, after a write error)
            if err is not None:
                raise err from close_err
            raise _write_error(self.path, close_err) from close_err

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()


def write_json_atomic(path: Path, obj: Any) -> str:
    with HashedFile(path) as f:
        f.write((json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())
    return f.sha256


def jsonl_bytes(records: Iterable[dict], ensure_ascii: bool = False) -> bytes:
    return b"".join((json.dumps(r, ensure_ascii=ensure_ascii) + "\n").encode("utf-8") for r in records)


# ---------------------------------------------------------------------------------------------------- plan


def stage_config(recipe: PipelineConfig) -> dict:
    """What the outputs depend on (worker counts and the tokenizer sections do not change them)."""
    return {"read": recipe.section("read"), "filters": recipe.section("filters"), "dedup": recipe.section("dedup")}


class Plan:
    """The tasks, which rank runs each, and (after counting) each range task's first line number."""

    def __init__(self, comm: Comm, files: list[str], recipe: PipelineConfig) -> None:
        sizes = comm.bcast(file_sizes(files) if comm.rank == 0 else None)
        self.tasks = plan_tasks(files, sizes, recipe.read.task_bytes)
        self.owners = assign_tasks([t.size for t in self.tasks], comm.size)
        self.mine = [t for t in self.tasks if self.owners[t.index] == comm.rank]
        self.first_lines = self._first_lines(comm)

    def _first_lines(self, comm: Comm) -> list[int]:
        """Line number of each task's first line: 1, or 1 + the lines of the earlier ranges of the same file."""
        counted = {t.index: count_range_lines(t) for t in self.mine if t.is_range}
        lines = {i: n for part in comm.allgather(counted) for i, n in part.items()}
        first, previous = [], None
        for task in self.tasks:
            line = first[-1] + lines[task.index - 1] if previous == task.path and task.is_range else 1
            first.append(line)
            previous = task.path
        return first


def task_fingerprint(phase: str, task: Task, first_line: int, config: dict, extra: Any = None) -> str:
    spec = {"config": config, "task": [task.path, task.start, task.end, first_line], "extra": extra}
    return markers.fingerprint(f"{STAGE}-{phase}", spec, [task.path])


def task_stage(phase: str, task: Task) -> str:
    return f"{STAGE}-{phase}/t-{task.index:05d}"


# ---------------------------------------------------------------------------------------------------- scan


class TaskWork:
    """The per-task files later phases read: DIR/dedup/work/t-NNNNN/."""

    NAMES = ("verdict.u8", "value.f64", "keys.u64", "signatures.u32", "lengths.i64", "ids.jsonl", "meta.json")

    def __init__(self, output_dir: Path, task: Task) -> None:
        self.folder = output_dir / WORK_DIR / f"t-{task.index:05d}"

    def path(self, name: str) -> Path:
        return self.folder / name

    def meta(self) -> dict:
        return json.loads(self.path("meta.json").read_text())

    def verdicts(self) -> np.ndarray:
        """Per document: 0 passed the filters, k > 0 dropped for meta["filter_reasons"][k - 1]."""
        return np.fromfile(self.path("verdict.u8"), np.uint8)

    def keys(self) -> np.ndarray:
        return np.fromfile(self.path("keys.u64"), np.uint64).reshape(-1, 2)

    def lengths(self) -> np.ndarray:
        return np.fromfile(self.path("lengths.i64"), np.int64)

    def ids(self, ordinals: np.ndarray) -> list[str]:
        """Ids of the documents at these ordinals (sorted), streaming the ids file."""
        wanted, found = set(ordinals.tolist()), {}
        with open(self.path("ids.jsonl"), encoding="utf-8") as f:
            for ordinal, line in enumerate(f):
                if ordinal in wanted:
                    found[ordinal] = json.loads(line)
        return [found[o] for o in ordinals.tolist()]


class TaskScanner:
    """Phase 2 for one task: stream its documents through the steps; write its work files and rejects part."""

    def __init__(self, output_dir: Path, recipe: PipelineConfig, pool: Any, ahead: int, bar: Any) -> None:
        self.out, self.recipe, self.pool, self.ahead, self.bar = output_dir, recipe, pool, ahead, bar

    def scan(self, task: Task, first_line: int) -> dict[str, str]:
        """Returns {output path inside DIR: sha256} of the files it wrote."""
        work = TaskWork(self.out, task)
        work.folder.mkdir(parents=True, exist_ok=True)
        files = {n: HashedFile(work.path(n)) for n in TaskWork.NAMES if n != "meta.json"}
        rejects = HashedFile(self.out / REJECTS_DIR / part_name(task.index))
        reasons: dict[str, int] = {}
        counts = {"records": 0, "docs": 0, "bad_input": Counter(), "filter": Counter()}
        pending_ids: deque[list[str]] = deque()
        with rejects, files["verdict.u8"], files["value.f64"], files["keys.u64"], files["signatures.u32"], \
                files["lengths.i64"], files["ids.jsonl"]:  # fmt: skip
            position, shown = ReadPosition(), 0
            batches = self._batches(read_task(task, self.recipe.read, first_line, position), rejects, counts,
                                    pending_ids)  # fmt: skip
            for scanned in ordered_map(self.pool, scan_batch, batches, self.ahead):
                ids = pending_ids.popleft()
                codes = [0 if v is None else reasons.setdefault(v[0], len(reasons) + 1) for v in scanned.verdicts]
                counts["filter"].update(v[0] for v in scanned.verdicts if v is not None)
                files["verdict.u8"].write(np.asarray(codes, np.uint8).tobytes())
                values = [np.nan if v is None else v[1] for v in scanned.verdicts]
                files["value.f64"].write(np.asarray(values, np.float64).tobytes())
                files["keys.u64"].write(np.ascontiguousarray(scanned.keys, np.uint64).tobytes())
                files["signatures.u32"].write(np.ascontiguousarray(scanned.signatures, np.uint32).tobytes())
                files["lengths.i64"].write(scanned.lengths.astype(np.int64).tobytes())
                files["ids.jsonl"].write("".join(json.dumps(i) + "\n" for i in ids).encode("utf-8"))
                self.bar.update(len(ids), max(0, position.bytes_read - shown))
                shown = max(shown, position.bytes_read)
        meta = {
            "task": task.describe(),
            "records": counts["records"],
            "docs": counts["docs"],
            "bad_input": dict(sorted(counts["bad_input"].items())),
            "filter": dict(sorted(counts["filter"].items())),
            "filter_reasons": sorted(reasons, key=reasons.get),
            "fields_without_text": sorted(position.fields_without_text),
        }
        written = {f.path: f.sha256 for f in [*files.values(), rejects]}
        written[work.path("meta.json")] = write_json_atomic(work.path("meta.json"), meta)
        self.bar.update(0, max(0, task.size - shown))
        return {str(p.relative_to(self.out)): sha for p, sha in written.items()}

    def _batches(self, items: Iterator[Document | Reject], rejects: HashedFile, counts: dict,
                 pending_ids: deque) -> Iterator[list[str]]:  # fmt: skip
        """Texts in batches of at most BATCH_DOCS documents / BATCH_BYTES characters; rejects written in order."""
        texts: list[str] = []
        ids: list[str] = []
        size = 0
        for item in items:
            counts["records"] += 1
            if isinstance(item, Reject):
                counts["bad_input"][item.ledger_reason] += 1
                rejects.write(jsonl_bytes([item.to_record()], ensure_ascii=True))
                continue
            counts["docs"] += 1
            texts.append(item.text)
            ids.append(item.id)
            size += len(item.text)
            if len(texts) >= BATCH_DOCS or size >= BATCH_BYTES:
                pending_ids.append(ids)
                yield texts
                texts, ids, size = [], [], 0
        if texts:
            pending_ids.append(ids)
            yield texts


# ---------------------------------------------------------------------------------------------------- dedup


class GlobalIndex:
    """Global document indices: task order, then document order inside a task; the same for any N."""

    def __init__(self, docs_per_task: np.ndarray, owners: list[int]) -> None:
        self.docs = docs_per_task
        self.base = np.concatenate([[0], np.cumsum(docs_per_task)[:-1]]).astype(np.int64)
        self.task_owner = np.asarray(owners, np.int64)

    def task_of(self, index: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.base, np.asarray(index, np.int64), side="right") - 1

    def owner_of(self, index: np.ndarray) -> np.ndarray:
        """The rank holding each global index (vectorised): the dedup functions route by it."""
        return self.task_owner[self.task_of(index)]


class PackedClusters:
    """Clusters as three flat arrays (about 16 bytes per member instead of ~100 in dicts and lists)."""

    def __init__(self, kind: str, clusters: list[dict]) -> None:
        self.kind = kind
        self.kept = np.array([c["kept"] for c in clusters], np.int64)
        sizes = [len(c["removed"]) for c in clusters]
        self.bounds = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.removed = np.array([i for c in clusters for i in c["removed"]], np.int64)
        self.similarity = np.array([s for c in clusters for s in c.get("similarity", [1.0] * len(c["removed"]))])

    def unpack(self) -> list[dict]:
        bounds = self.bounds.tolist()
        return [
            {"kept": kept, "removed": self.removed[a:b].tolist(), "similarity": self.similarity[a:b].tolist(),
             "kind": self.kind}
            for kept, a, b in zip(self.kept.tolist(), bounds[:-1], bounds[1:], strict=True)
        ]  # fmt: skip


def _split_by_task(index: GlobalIndex, removed: np.ndarray) -> dict[int, np.ndarray]:
    """Sorted global indices -> {task: ordinals inside the task}."""
    removed = np.sort(np.asarray(removed, np.int64))
    tasks = index.task_of(removed)
    return {int(t): removed[tasks == t] - index.base[t] for t in np.unique(tasks)}


# ---------------------------------------------------------------------------------------------------- stage


def prepare_output(output_dir: Path) -> None:
    """Forget any earlier stage completion (per-task markers stay: finished tasks are reused)."""
    markers.invalidate(output_dir, STAGE)
    for sub in (KEPT_DIR, REJECTS_DIR, WORK_DIR):
        (output_dir / sub).mkdir(parents=True, exist_ok=True)


def remove_stale_parts(output_dir: Path, num_tasks: int) -> None:
    """Parts of an earlier plan with more tasks (or of the earlier per-rank layout) would mix into kept/;
    temporary parts of a killed rank are garbage."""
    expected = {part_name(i) for i in range(num_tasks)}
    for sub, suffix in ((KEPT_DIR, ""), (REJECTS_DIR, ""), (DROPPED_DIR, ".gz")):
        for part in (output_dir / sub).glob(f"part-*.jsonl{suffix}"):
            if part.name.removesuffix(suffix) not in expected:
                part.unlink()
        for tmp in (output_dir / sub).glob(f".part-*.jsonl{suffix}.tmp"):  # of a rank killed while writing
            tmp.unlink()


def already_complete(comm: Comm, output_dir: Path, stage_fp: str) -> bool:
    """True when the stage marker matches and every output is intact; ranks hash a share of the outputs each."""
    marker = on_root(comm, "checking earlier outputs", lambda: markers.read_marker(output_dir, STAGE, stage_fp))
    if marker is None:
        return False
    outputs = sorted(marker["outputs"].items())
    broken = not markers.outputs_intact(output_dir, outputs[comm.rank :: comm.size])
    return comm.allreduce_sum(int(broken)) == 0


def run_dedup(comm: Comm, inputs: list[str], output_dir: Path, recipe: PipelineConfig, quiet: bool) -> dict:
    """The whole stage on every rank; returns the merged stats (on every rank)."""
    output_dir = Path(output_dir)
    quiet = quiet or comm.rank != 0
    files = on_root(comm, "resolving inputs", lambda: resolve_inputs(inputs))
    stage_fp = markers.fingerprint(STAGE, stage_config(recipe), files)
    if already_complete(comm, output_dir, stage_fp):
        stats = json.loads((output_dir / STATS).read_text())
        summary(f"dedup: {output_dir} is already complete for these inputs and recipe; skipped", quiet)
        return stats
    on_root(comm, "preparing the output folder", lambda: prepare_output(output_dir))
    comm.barrier()
    return DedupRun(comm, files, output_dir, recipe, quiet, stage_fp).execute()


class DedupRun:
    """One execution of the stage on one rank: its tasks, their outputs' hashes, its ledger and timings."""

    def __init__(self, comm: Comm, files: list[str], output_dir: Path, recipe: PipelineConfig, quiet: bool,
                 stage_fp: str) -> None:  # fmt: skip
        self.comm, self.files, self.out, self.recipe, self.quiet = comm, files, output_dir, recipe, quiet
        self.stage_fp = stage_fp
        self.config = stage_config(recipe)
        self.timings: dict[str, float] = {}
        self.hashes: dict[str, str] = {}  # output path inside DIR -> sha256, for the stage marker
        self.pairs: dict[str, int] = {}
        self.params: Any = None

    def timed(self, name: str, fn: Callable[[], T]) -> T:
        started = time.perf_counter()
        result = fn()
        self.timings[name] = round(time.perf_counter() - started, 3)
        return result

    def execute(self) -> dict:
        self.plan = self.timed("plan", lambda: Plan(self.comm, self.files, self.recipe))
        self.timed("scan", self.scan)
        self.check_text_field()
        self.index = GlobalIndex(self.docs_per_task(), self.plan.owners)
        removed, clusters = self.timed("dedup", self.dedup)
        self.timed("write_kept", lambda: self.write_kept(removed))
        records = self.timed("clusters", lambda: self.write_clusters(clusters))
        return self.finish(removed, records)

    # -- phase 2 ---------------------------------------------------------------------------------------------

    def scan(self) -> None:
        """Scan this rank's unfinished tasks; finished ones (intact marker) are reused as they are."""
        plan, redo = self.plan, []
        for task in plan.mine:
            stage, fp = task_stage("scan", task), self.scan_fp(task)
            done = markers.task_outputs(self.out, stage, fp)
            if done is None:
                redo.append(task)
            else:
                self.hashes.update({k: v for k, v in done.items() if k.startswith(REJECTS_DIR)})
        workers = workers_for_rank(self.recipe.workers)
        total = sum(t.size for t in redo)
        with stage_progress("scan", total, self.quiet) as bar, \
                worker_pool(workers, init_steps, (self.recipe.filters, self.recipe.dedup)) as pool:  # fmt: skip
            scanner = TaskScanner(self.out, self.recipe, pool, 2 * workers, bar)
            for task in redo:
                stage, fp = task_stage("scan", task), self.scan_fp(task)
                markers.invalidate(self.out, stage)
                written = scanner.scan(task, plan.first_lines[task.index])
                markers.mark_complete(self.out, stage, fp, [self.out / p for p in written],
                                      known={self.out / p: sha for p, sha in written.items()})  # fmt: skip
                self.hashes.update({k: v for k, v in written.items() if k.startswith(REJECTS_DIR)})
        redone = self.comm.allreduce_sum(len(redo))
        summary(f"scan: {redone} of {len(plan.tasks)} tasks scanned, {len(plan.tasks) - redone} reused from an "
                "earlier run", self.quiet)  # fmt: skip

    def check_text_field(self) -> None:
        """Stop when no record has read.text_field but records have other fields (a misnamed key), on every rank."""
        metas = [TaskWork(self.out, t).meta() for t in self.plan.mine]
        docs = self.comm.allreduce_sum(sum(m["docs"] for m in metas))
        missing = self.comm.allreduce_sum(sum(m["bad_input"].get("bad_input:missing_text", 0) for m in metas))
        fields = sorted(set().union(*self.comm.allgather({f for m in metas for f in m["fields_without_text"]})))
        if error := text_field_error(docs, missing, fields, self.recipe.read):
            raise mark_every_rank(error)

    def scan_fp(self, task: Task) -> str:
        return task_fingerprint("scan", task, self.plan.first_lines[task.index], self.config)

    def docs_per_task(self) -> np.ndarray:
        mine = {t.index: TaskWork(self.out, t).meta()["docs"] for t in self.plan.mine}
        merged = {i: n for part in self.comm.allgather(mine) for i, n in part.items()}
        return np.array([merged[i] for i in range(len(self.plan.tasks))], np.int64)

    # -- phase 3 ---------------------------------------------------------------------------------------------

    def live_index(self, tasks: list[Task]) -> np.ndarray:
        """Global indices of this rank's documents that passed the filters, in task order."""
        parts = [self.index.base[t.index] + np.flatnonzero(TaskWork(self.out, t).verdicts() == 0) for t in tasks]
        return np.concatenate(parts or [np.zeros(0, np.int64)]).astype(np.int64)

    def dedup(self) -> tuple[dict[str, np.ndarray], list[dict]]:
        """Exact then near dedup over this rank's live documents; returns ({reason: removed}, owned clusters)."""
        cfg, comm, tasks = self.recipe.dedup, self.comm, self.plan.mine
        doc_index = self.live_index(tasks)
        lengths = np.concatenate([TaskWork(self.out, t).lengths() for t in tasks] or [np.zeros(0, np.int64)])
        priority = dedup_clusters.keep_priority(lengths, cfg.keep)
        del lengths
        removed = {"exact_dup": np.zeros(0, np.int64), "near_dup": np.zeros(0, np.int64)}
        packed: list[PackedClusters] = []
        if cfg.exact:
            keys = np.concatenate([TaskWork(self.out, t).keys() for t in tasks] or [np.zeros((0, 2), np.uint64)])
            result = exact_dedup.find_exact_duplicates(comm, doc_index, keys, priority, self.index.owner_of)
            del keys
            removed["exact_dup"] = np.asarray(result.removed, np.int64)
            packed.append(PackedClusters("exact", result.clusters))  # flat arrays while near dedup runs
            del result
            self.step_summary("exact dedup", removed["exact_dup"], len(packed[-1].kept))
        if cfg.near:
            self.params = lsh_params(self.recipe)
            summary(f"near dedup: {self.params.describe()}", self.quiet)
            alive = ~np.isin(doc_index, removed["exact_dup"])
            doc_index, priority = doc_index[alive], priority[alive]  # the full arrays are not needed any more
            signatures = self.live_signatures(tasks, alive)
            del alive
            result = lsh.find_near_duplicates(
                comm, doc_index, signatures, self.params, cfg.verify_threshold, priority, self.index.owner_of
            )
            del signatures, doc_index, priority
            removed["near_dup"] = np.asarray(result.removed, np.int64)
            packed.append(PackedClusters("near", result.clusters))
            self.pairs = {"candidate_pairs": int(result.candidate_pairs), "verified_pairs": int(result.verified_pairs)}
            self.step_summary("near dedup", removed["near_dup"], len(packed[-1].kept))
        return removed, [c for p in packed for c in p.unpack()]

    def live_signatures(self, tasks: list[Task], alive: np.ndarray) -> np.ndarray:
        """Signatures of the live documents still alive, read in blocks straight into one array (no temporary
        copy of a task's signatures, so memory is the alive signatures plus one block)."""
        num_perm = self.recipe.dedup.num_perm
        out = np.empty((int(alive.sum()), num_perm), np.uint32)
        start = row = 0
        for task in tasks:
            with open(TaskWork(self.out, task).path("signatures.u32"), "rb") as f:
                while (block := np.fromfile(f, np.uint32, count=SIGNATURE_BLOCK_ROWS * num_perm)).size:
                    block = block.reshape(-1, num_perm)
                    keep = alive[start : start + len(block)]
                    taken = int(keep.sum())
                    out[row : row + taken] = block[keep]
                    start, row = start + len(block), row + taken
        return out

    def step_summary(self, step: str, removed: np.ndarray, clusters: int) -> None:
        """Rank 0's line after a dedup step: removals and clusters summed over ranks (a collective)."""
        total = self.comm.allreduce_sum(len(removed))
        count = self.comm.allreduce_sum(clusters)
        summary(f"{step}: {total} documents removed in {count} clusters", self.quiet)

    # -- phase 4 ---------------------------------------------------------------------------------------------

    def write_kept(self, removed: dict[str, np.ndarray]) -> None:
        """Rewrite the kept part of every task whose marker does not record these removals."""
        by_task = {reason: _split_by_task(self.index, r) for reason, r in removed.items()}
        self.task_removed = {
            t.index: {reason: parts.get(t.index, np.zeros(0, np.int64)) for reason, parts in by_task.items()}
            for t in self.plan.mine
        }
        with stage_progress("write kept", sum(t.size for t in self.plan.mine), self.quiet) as bar:
            for task in self.plan.mine:
                dropped = self.task_removed[task.index]
                fp = task_fingerprint("write", task, self.plan.first_lines[task.index], self.config,
                                      {r: hashlib.sha256(o.tobytes()).hexdigest() for r, o in dropped.items()})  # fmt: skip
                stage = task_stage("write", task)
                done = markers.task_outputs(self.out, stage, fp)
                if done is None:
                    markers.invalidate(self.out, stage)
                    done = self.write_task(task, np.concatenate(list(dropped.values())))
                    markers.mark_complete(self.out, stage, fp, [self.out / p for p in done],
                                          known={self.out / p: sha for p, sha in done.items()})  # fmt: skip
                self.hashes.update({k: v for k, v in done.items() if k.startswith((KEPT_DIR, DROPPED_DIR))})
                bar.update(0, task.size)

    def write_task(self, task: Task, removed: np.ndarray) -> dict[str, str]:
        """Read the task again; its documents that passed the filters and were not removed go to its kept part,
        and those a filter dropped to its drop log (id, source, rule, measured value: DIR/dropped/)."""
        work = TaskWork(self.out, task)
        verdicts, removed_set = work.verdicts(), set(np.asarray(removed).tolist())
        values, rules = np.fromfile(work.path("value.f64"), np.float64), work.meta()["filter_reasons"]
        kept_file, kept = HashedFile(self.out / KEPT_DIR / part_name(task.index)), 0
        dropped_path = drop_log.part_path(self.out, f"part-{task.index:05d}")
        docs = (
            i for i in read_task(task, self.recipe.read, self.plan.first_lines[task.index]) if isinstance(i, Document)
        )
        read = 0
        with kept_file, drop_log.DropLog(dropped_path) as dropped:
            batch: list[dict] = []
            for ordinal, doc in enumerate(docs):
                read += 1
                if ordinal >= len(verdicts):
                    continue
                if verdicts[ordinal]:
                    dropped.add(doc.id, doc.source, rules[verdicts[ordinal] - 1], values[ordinal], doc.text)
                elif ordinal not in removed_set:
                    batch.append(doc.to_record())
                    if len(batch) == BATCH_DOCS:
                        kept_file.write(jsonl_bytes(batch))
                        kept, batch = kept + len(batch), []
            kept_file.write(jsonl_bytes(batch))
            kept += len(batch)
            if read != len(verdicts):  # inside the block: the half-written part is removed, no marker follows
                raise PipelineError(
                    f"{task.describe()}: read {read} documents now but {len(verdicts)} when scanned; the input "
                    "changed during the run: rerun in a new --output folder"
                )
        written = {kept_file.path: kept_file.sha256, dropped_path: file_sha256(dropped_path)}
        summary_file = work.path("kept.json")
        written[summary_file] = write_json_atomic(summary_file, {"kept_docs": kept, "examples": dropped.examples})
        return {str(p.relative_to(self.out)): sha for p, sha in written.items()}

    # -- clusters --------------------------------------------------------------------------------------------

    def write_clusters(self, clusters: list[dict]) -> list[dict]:
        """This rank's cluster records, written into its byte ranges of clusters.jsonl; returns the records."""
        kept = np.array([c["kept"] for c in clusters], np.int64)
        kept_task = self.index.task_of(kept).tolist() if len(kept) else []
        order = sorted(range(len(clusters)), key=lambda k: (kept_task[k], clusters[k]["kind"] != "exact", int(kept[k])))
        clusters, tasks = [clusters[k] for k in order], [kept_task[k] for k in order]
        members = np.unique(np.array([i for c in clusters for i in [c["kept"], *c["removed"]]], np.int64))
        mine = members[self.index.owner_of(members) == self.comm.rank] if len(members) else members
        mine = np.union1d(mine, np.concatenate([np.zeros(0, np.int64), *self.all_removed()]))
        ids = self.ids_of(mine)
        bare = [{k: c[k] for k in ("kept", "removed", "similarity") if k in c} for c in clusters]
        records = dedup_clusters.cluster_records_with_ids(self.comm, bare, mine, ids, self.index.owner_of)
        records = [{"kind": c["kind"], **r} for c, r in zip(clusters, records, strict=True)]
        lines: dict[int, list[dict]] = {}
        for task, record in zip(tasks, records, strict=True):
            lines.setdefault(task, []).append(record)
        self.write_pieces({task: jsonl_bytes(task_records) for task, task_records in lines.items()})
        return records

    def all_removed(self) -> list[np.ndarray]:
        return [self.index.base[t] + o for t, parts in self.task_removed.items() for o in parts.values()]

    def ids_of(self, indices: np.ndarray) -> list[str]:
        """Ids of these global indices of this rank's documents (sorted), read from the tasks' ids files."""
        ids: list[str] = []
        tasks = self.index.task_of(indices)
        for task in np.unique(tasks):
            ids += TaskWork(self.out, self.plan.tasks[task]).ids(indices[tasks == task] - self.index.base[task])
        return ids

    def write_pieces(self, pieces: dict[int, bytes]) -> None:
        """Each rank writes its tasks' records at their offsets in one file (task order); rank 0 renames it."""
        sizes = {i: n for part in self.comm.allgather({t: len(b) for t, b in pieces.items()}) for i, n in part.items()}
        offsets, total = {}, 0
        for task in sorted(sizes):
            offsets[task], total = total, total + sizes[task]
        path = self.out / CLUSTERS
        if self.comm.rank == 0:  # rank 0 holds the atomic write; every rank writes its pieces into its temp file
            with atomic_write(path, "wb") as f:
                f.truncate(total)
                self._write_at_offsets(path, pieces, offsets)
        else:
            self._write_at_offsets(path, pieces, offsets)

    def _write_at_offsets(self, path: Path, pieces: dict[int, bytes], offsets: dict[int, int]) -> None:
        """Between two barriers (the sized file exists; every rank's bytes are on disk), pwrite and fsync mine."""
        self.comm.barrier()
        try:
            with open(temp_path(path), "r+b") as f:
                for task, data in pieces.items():
                    os.pwrite(f.fileno(), data, offsets[task])
                os.fsync(f.fileno())  # each writer's own: on a shared file system rank 0's fsync covers its node only
        except OSError as err:
            raise _write_error(path, err) from err
        self.comm.barrier()

    # -- phase 5 ---------------------------------------------------------------------------------------------

    def task_ledger(self) -> Ledger:
        """This rank's tasks' fates, counted per input file (stats.json per_input)."""
        ledger = Ledger()
        for task in self.plan.mine:
            work, source = TaskWork(self.out, task), task.path
            meta = work.meta()
            ledger.read(meta["records"], source=source)
            for reason, n in [*meta["bad_input"].items(), *meta["filter"].items()]:
                ledger.drop(reason, n, source=source)
            for reason, ordinals in self.task_removed[task.index].items():
                ledger.drop(reason, len(ordinals), source=source)
            ledger.keep(json.loads(work.path("kept.json").read_text())["kept_docs"], source=source)
        return ledger

    def drop_examples(self) -> dict[str, list[dict]]:
        """A few documents each filter rule dropped, from this rank's tasks (for the report)."""
        parts = [json.loads(TaskWork(self.out, t).path("kept.json").read_text())["examples"] for t in self.plan.mine]
        return drop_log.merge_examples(parts)

    def finish(self, removed: dict[str, np.ndarray], records: list[dict]) -> dict:
        comm = self.comm
        ledgers = comm.gather(self.task_ledger(), root=0)
        clusters = {k: comm.allreduce_sum(sum(r["kind"] == k for r in records)) for k in ("exact", "near")}
        shared = comm.gather({**dedup_clusters.cluster_summary(records), "hashes": self.hashes,
                              "timings": self.timings, "dropped": self.drop_examples()}, root=0)  # fmt: skip
        resources = comm.gather(self.resources(), root=0)
        stats = on_root(comm, "writing stats", lambda: self.write_stats(ledgers, shared, clusters, resources))
        comm.barrier()
        if comm.rank == 0:
            shutil.rmtree(self.out / WORK_DIR, ignore_errors=True)
        return stats

    def resources(self) -> dict:
        return {**{f"peak_rss_{k}_bytes": v for k, v in peak_rss_bytes().items()},
                "bytes_sent": int(self.comm.bytes_sent), "bytes_received": int(self.comm.bytes_received)}  # fmt: skip

    def write_stats(self, ledgers: list[Ledger], shared: list[dict], clusters: dict, resources: list[dict]) -> dict:
        """Rank 0: check the summed ledger; write stats.json, timings.json, the recipe, then the stage marker."""
        total = Ledger.merged(ledgers)
        total.check()
        save_recipe(self.recipe, self.out / RECIPE)
        stats: dict[str, Any] = total.to_stats()
        stats["filter_warnings"] = drop_log.filter_warnings(stats)
        stats["input_files"] = len(self.files)
        stats["tasks"] = len(self.plan.tasks)
        stats["clusters"] = clusters
        biggest = [s["largest"] for s in shared if s["largest"] is not None]
        best = min(biggest, key=lambda x: -x[0], default=None)  # the first of the largest in rank order
        stats["largest_cluster"] = {"kept": best[1]["kept"], "size": best[0], "kind": best[1]["kind"]} if best else None
        if self.recipe.dedup.near:
            p, cfg = self.params, self.recipe.dedup
            stats["lsh"] = {"threshold": cfg.threshold, "num_perm": cfg.num_perm, "bands": int(p.bands),
                            "rows": int(p.rows), "describe": p.describe(), **self.pairs}  # fmt: skip
        stats["ranks"] = len(resources)
        stats["resources"] = {"per_rank": resources,
                              "max": {k: max(r[k] for r in resources) for k in resources[0]}}  # fmt: skip
        stats_sha = write_json_atomic(self.out / STATS, stats)
        timings = [s["timings"] for s in shared]
        write_json_atomic(self.out / TIMINGS, {k: max(t.get(k, 0.0) for t in timings) for k in timings[0]})
        remove_stale_parts(self.out, len(self.plan.tasks))
        hashes = {self.out / k: v for s in shared for k, v in s["hashes"].items()}
        hashes[self.out / STATS] = stats_sha
        outputs = sorted(hashes) + [self.out / CLUSTERS, self.out / RECIPE]
        markers.mark_complete(self.out, STAGE, self.stage_fp, outputs, known=hashes)
        examples = [r for s in shared for k in ("exact", "near") for r in s["examples"][k]]
        report(stats, examples, self.out, self.quiet, drop_log.merge_examples([s["dropped"] for s in shared]))
        return stats


def lsh_params(recipe: PipelineConfig) -> Any:
    from data_pipeline.dedup.lsh import LSHParams

    cfg = recipe.dedup
    return LSHParams.from_threshold(cfg.threshold, cfg.num_perm, bands=cfg.bands, rows=cfg.rows)


def report(
    stats: dict, examples: list[dict], output_dir: Path, quiet: bool, dropped_examples: dict, shown: int = 3
) -> None:
    """The end-of-stage summary: counts, per-input breakdown, filter warnings and examples, a few duplicate
    clusters, the largest rank's resources. Warnings print even under --quiet: a recipe that empties an input
    must never go unnoticed."""
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
    for kind in ("exact", "near"):
        for record in [r for r in examples if r["kind"] == kind][:shown]:
            sims = ", ".join(f"{s:.2f}" for s in record["similarity"][:3])
            summary(
                f"  {kind} cluster: kept {record['kept']} removed {record['removed'][:3]} (similarity {sims})", quiet
            )
    most = stats["resources"]["max"]
    summary(
        f"dedup: {stats['tasks']} tasks on {stats['ranks']} ranks; largest per rank: peak RSS "
        f"{most['peak_rss_rank_bytes'] / 2**20:.0f} MiB (workers {most['peak_rss_worker_bytes'] / 2**20:.0f} MiB), "
        f"sent {most['bytes_sent'] / 2**20:.1f} MiB, received {most['bytes_received'] / 2**20:.1f} MiB",
        quiet,
    )
    summary(f"dedup: outputs in {output_dir} (kept/, rejects/, {DROPPED_DIR}/, {CLUSTERS}, {STATS})", quiet)
