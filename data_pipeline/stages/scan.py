"""Phase 2 of the dedup stage: each task streamed through the steps, what later phases need written per task.

Documents flow read → normalize → quality filter → exact key → MinHash signature (data_pipeline/steps.py) in
bounded batches over this rank's local worker processes; what later phases need goes to disk per task under
DIR/dedup/work/t-NNNNN/ (each document's filter verdict and id; for documents that pass, the exact key, the
signature and the length; the documents themselves, for the write pass: stages/task_documents.py), and the task's
bad records to rejects/part-NNNNN.jsonl. Each task has its own completion marker: a rerun redoes only the tasks
without one. The input is read here only, once: a web page's main text is extracted once.
"""

from __future__ import annotations

import functools
import json
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from data_pipeline.config import PipelineConfig
from data_pipeline.dedup.index import ids_at
from data_pipeline.documents import Document, Reject
from data_pipeline.executor import mark_every_rank, ordered_map, worker_pool, workers_for_rank
from data_pipeline.progress import stage_progress, summary
from data_pipeline.readers import ReadPosition, text_field_error
from data_pipeline.retries import RetryLog, RetryPolicy, with_retries
from data_pipeline.stages.execution import run_once
from data_pipeline.stages.outputs import REJECTS_DIR, WORK_DIR, HashedFile, jsonl_bytes, part_name, write_json_atomic
from data_pipeline.stages.plan import DedupJob, Plan, task_stage
from data_pipeline.stages.task_documents import DOCS, TaskDocumentsWriter
from data_pipeline.steps import init_steps, scan_batch
from data_pipeline.tasks import Task, read_task

BATCH_DOCS = 1024
BATCH_BYTES = 4 << 20


class TaskWork:
    """The per-task files later phases read: DIR/dedup/work/t-NNNNN/."""

    NAMES = ("verdict.u8", "value.f64", "keys.u64", "signatures.u32", "lengths.i64", "ids.jsonl", DOCS, "meta.json")

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
        return ids_at(self.path("ids.jsonl"), ordinals)


def scan_tasks(job: DedupJob, plan: Plan) -> tuple[dict[str, str], list[dict]]:
    """Scan this rank's unfinished tasks, reuse finished ones; returns {rejects part: sha256} of its tasks and the
    retries of the tasks whose read failed transiently (retries.py: each retry redoes the task from its start).

    Collective: the count of tasks scanned (allreduce) for the summary line.
    """
    workers = workers_for_rank(job.recipe.workers)
    hashes: dict[str, str] = {}
    scanned, retried = 0, RetryLog()
    policy = RetryPolicy.of(job.recipe.read)
    with stage_progress("scan", sum(t.size for t in plan.mine), job.quiet) as bar, \
            worker_pool(workers, init_steps, (job.recipe.filters, job.recipe.dedup)) as pool:  # fmt: skip
        scanner = TaskScanner(job.out, job.recipe, pool, 2 * workers, bar)
        for task in plan.mine:
            identity = plan.task_identity(job, "scan", task, TaskWork.NAMES)  # a folder of other work files: rescan
            scan_one = functools.partial(scanner.scan, task, plan.first_lines[task.index])
            what = f"{task.describe()} (task {task.index})"
            produce = functools.partial(with_retries, scan_one, what, policy, retried)
            written, ran = run_once(job.out, task_stage("scan", task), identity, produce)
            scanned += ran
            if not ran:
                bar.update(0, task.size)
            hashes.update({k: v for k, v in written.items() if k.startswith(REJECTS_DIR)})
    redone = job.comm.allreduce_sum(scanned)
    summary(f"scan: {redone} of {len(plan.tasks)} tasks scanned, {len(plan.tasks) - redone} reused from an "
            "earlier run", job.quiet)  # fmt: skip
    return hashes, retried.tasks


def check_text_field(job: DedupJob, plan: Plan) -> None:
    """Stop when no record has read.text_field but records have other fields (a misnamed key), on every rank.

    Collective: two allreduces and an allgather, on every rank, before any rank can raise.
    """
    metas = [TaskWork(job.out, t).meta() for t in plan.mine]
    docs = job.comm.allreduce_sum(sum(m["docs"] for m in metas))
    missing = job.comm.allreduce_sum(sum(m["bad_input"].get("bad_input:missing_text", 0) for m in metas))
    fields = sorted(set().union(*job.comm.allgather({f for m in metas for f in m["fields_without_text"]})))
    if error := text_field_error(docs, missing, fields, job.recipe.read):
        raise mark_every_rank(error)


class TaskScanner:
    """One task through the steps: its work files and rejects part."""

    def __init__(self, output_dir: Path, recipe: PipelineConfig, pool: Any, ahead: int, bar: Any) -> None:
        self.out, self.recipe, self.pool, self.ahead, self.bar = output_dir, recipe, pool, ahead, bar

    def scan(self, task: Task, first_line: int) -> dict[str, str]:
        """Returns {output path inside DIR: sha256} of the files it wrote."""
        work = TaskWork(self.out, task)
        work.folder.mkdir(parents=True, exist_ok=True)
        files = {n: HashedFile(work.path(n)) for n in TaskWork.NAMES if n not in (DOCS, "meta.json")}
        documents = TaskDocumentsWriter(work.path(DOCS))
        rejects = HashedFile(self.out / REJECTS_DIR / part_name(task.index))
        reasons: dict[str, int] = {}
        counts = {"records": 0, "docs": 0, "bad_input": Counter(), "filter": Counter()}
        pending: deque[list[Document]] = deque()  # the batches in the pool, for the documents file
        with rejects, files["verdict.u8"], files["value.f64"], files["keys.u64"], files["signatures.u32"], \
                files["lengths.i64"], files["ids.jsonl"], documents:  # fmt: skip
            position, shown = ReadPosition(), 0
            batches = self._batches(read_task(task, self.recipe.read, first_line, position), rejects, counts, pending)
            for scanned in ordered_map(self.pool, scan_batch, batches, self.ahead):
                docs = pending.popleft()
                ids = [d.id for d in docs]
                documents.add(docs, [v is None for v in scanned.verdicts], scanned.languages)
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
        written = {f.path: f.sha256 for f in [*files.values(), documents, rejects]}
        written[work.path("meta.json")] = write_json_atomic(work.path("meta.json"), meta)
        self.bar.update(0, max(0, task.size - shown))
        return {str(p.relative_to(self.out)): sha for p, sha in written.items()}

    def _batches(self, items: Iterator[Document | Reject], rejects: HashedFile, counts: dict,
                 pending: deque) -> Iterator[list[Document]]:  # fmt: skip
        """Documents in batches of at most BATCH_DOCS documents / BATCH_BYTES characters, each also appended to
        `pending`; rejects written in order."""
        batch: list[Document] = []
        size = 0
        for item in items:
            counts["records"] += 1
            if isinstance(item, Reject):
                counts["bad_input"][item.ledger_reason] += 1
                rejects.write(jsonl_bytes([item.to_record()], ensure_ascii=True))
                continue
            counts["docs"] += 1
            batch.append(item)  # the whole document: the filters read its url (block list) too
            size += len(item.text)
            if len(batch) >= BATCH_DOCS or size >= BATCH_BYTES:
                pending.append(batch)
                yield batch
                batch, size = [], 0
        if batch:
            pending.append(batch)
            yield batch
