"""Phase 5 of the dedup stage: sum the ranks' ledgers, check they add up, write stats.json, timings.json, the
recipe and the stage marker last, and print the summary.

Each output's sha256 was computed by the rank that wrote it, while writing; rank 0 gathers them for the marker.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from data_pipeline import drop_log, markers
from data_pipeline.comm import on_root
from data_pipeline.config import save_recipe
from data_pipeline.executor import peak_rss_bytes
from data_pipeline.ledger import Ledger
from data_pipeline.progress import summary
from data_pipeline.stages.duplicates import Removals
from data_pipeline.stages.outputs import (
    CLUSTERS,
    DROPPED_DIR,
    RECIPE,
    STAGE,
    STATS,
    TIMINGS,
    WORK_DIR,
    remove_stale_parts,
    write_json_atomic,
)
from data_pipeline.stages.plan import DedupJob, Plan
from data_pipeline.stages.scan import TaskWork


def finish(
    job: DedupJob,
    plan: Plan,
    removals: Removals,
    removed: dict[int, dict[str, np.ndarray]],
    cluster_summary: dict,  # write_clusters'
    hashes: dict[str, str],
    timings: dict[str, float],
    retries: list[dict],  # the scan's (scan_tasks); the plan's line counts' are in plan.retries
) -> dict:
    """Rank 0 writes the stats and the marker from what every rank gathered to it; returns the stats (every rank).

    Cluster counts come from the packed clusters, the largest cluster and the examples from the summary
    write_clusters took while writing: no rank builds a list of its records, and rank 0 gathers summaries only.

    Collective: gathers of ledgers, cluster summaries, hashes and resources, allreduces of cluster counts, the
    outcome of rank 0's writing. The scan's work files stay (DIR/dedup/work/) unless dedup.keep_work=false
    (`remove_work`): a rerun with another threshold, band layout or keep rule decides again from them without
    rescanning.
    """
    comm = job.comm
    ledgers = comm.gather(task_ledger(job, plan, removed), root=0)
    kinds = ("exact", "near", "exact_earlier", "near_earlier") if job.against else ("exact", "near")
    clusters = {k: comm.allreduce_sum(sum(len(p) for p in removals.clusters if p.kind == k)) for k in kinds}
    shared = comm.gather({**cluster_summary, "hashes": hashes, "timings": timings,
                          "dropped": drop_examples(job, plan), "retries": [*plan.retries, *retries]}, root=0)  # fmt: skip
    resources = comm.gather(rank_resources(job), root=0)
    return on_root(
        comm, "writing stats", lambda: write_stats(job, plan, removals, ledgers, shared, clusters, resources)
    )


def remove_work(job: DedupJob, plan: Plan) -> None:
    """dedup.keep_work=false, after `finish`: each rank deletes its own tasks' work folders (no rank lists or
    deletes another's: ~144k files at 1B documents), then rank 0 the emptied dedup/work/, with any folder of an
    earlier plan.

    Collective: a barrier, then rank 0's removal (on_root). After the stage marker: the marker does not vouch for
    work files, so a job killed here is still complete; a rerun that needs them rescans (their task markers no
    longer match).
    """
    for task in plan.mine:
        shutil.rmtree(TaskWork(job.out, task).folder)
    job.comm.barrier()
    on_root(job.comm, f"removing {WORK_DIR}", lambda: shutil.rmtree(job.out / WORK_DIR))


def task_ledger(job: DedupJob, plan: Plan, removed: dict[int, dict[str, np.ndarray]]) -> Ledger:
    """This rank's tasks' fates, counted per input file (stats.json per_input)."""
    ledger = Ledger()
    for task in plan.mine:
        work, source = TaskWork(job.out, task), task.path
        meta = work.meta()
        ledger.read(meta["records"], source=source)
        for reason, n in [*meta["bad_input"].items(), *meta["filter"].items()]:
            ledger.drop(reason, n, source=source)
        for reason, ordinals in removed[task.index].items():
            ledger.drop(reason, len(ordinals), source=source)
        ledger.keep(json.loads(work.path("kept.json").read_text())["kept_docs"], source=source)
    return ledger


def drop_examples(job: DedupJob, plan: Plan) -> dict[str, list[dict]]:
    """A few documents each filter rule dropped, from this rank's tasks (for the report)."""
    parts = [json.loads(TaskWork(job.out, t).path("kept.json").read_text())["examples"] for t in plan.mine]
    return drop_log.merge_examples(parts)


def rank_resources(job: DedupJob) -> dict:
    return {**{f"peak_rss_{k}_bytes": v for k, v in peak_rss_bytes().items()},
            "bytes_sent": int(job.comm.bytes_sent), "bytes_received": int(job.comm.bytes_received)}  # fmt: skip


def write_stats(
    job: DedupJob,
    plan: Plan,
    removals: Removals,
    ledgers: list[Ledger],
    shared: list[dict],
    clusters: dict,
    resources: list[dict],
) -> dict:
    """Rank 0: check the summed ledger; write stats.json, timings.json, the recipe, then the stage marker."""
    out, recipe = job.out, job.recipe
    total = Ledger.merged(ledgers)
    total.check()
    save_recipe(recipe, out / RECIPE)
    stats: dict[str, Any] = total.to_stats()
    stats["filter_warnings"] = drop_log.filter_warnings(stats)
    stats["input_files"] = len(job.inputs)
    stats["tasks"] = len(plan.tasks)
    stats["clusters"] = clusters
    biggest = [s["largest"] for s in shared if s["largest"] is not None]
    best = min(biggest, key=lambda x: -x[0], default=None)  # the first of the largest in rank order
    stats["largest_cluster"] = {"kept": best[1]["kept"], "size": best[0], "kind": best[1]["kind"]} if best else None
    if recipe.dedup.near:
        p, cfg = removals.lsh, recipe.dedup
        stats["lsh"] = {"threshold": cfg.threshold, "num_perm": cfg.num_perm, "bands": int(p.bands),
                        "rows": int(p.rows), "describe": p.describe(), **removals.pairs}  # fmt: skip
    stats["read_retries"] = read_retries([s["retries"] for s in shared])
    stats["ranks"] = len(resources)
    stats["resources"] = {"per_rank": resources,
                          "max": {k: max(r[k] for r in resources) for k in resources[0]}}  # fmt: skip
    stats_sha = write_json_atomic(out / STATS, stats)
    timings = [s["timings"] for s in shared]
    write_json_atomic(out / TIMINGS, {k: max(t.get(k, 0.0) for t in timings) for k in timings[0]})
    remove_stale_parts(out, len(plan.tasks))
    hashes = {out / k: v for s in shared for k, v in s["hashes"].items()}
    hashes[out / STATS] = stats_sha
    outputs = sorted(hashes) + [out / CLUSTERS, out / RECIPE]
    markers.mark_complete(out, STAGE, job.identity, outputs, known=hashes)
    examples = [r for s in shared for k in ("exact", "near") for r in s["examples"][k]]
    report(stats, examples, out, job.quiet, drop_log.merge_examples([s["dropped"] for s in shared]))
    return stats


def read_retries(per_rank: list[list[dict]]) -> dict:
    """The retries of transiently failed task reads (retries.py), in total and per task with its last error."""
    tasks = [t for rank in per_rank for t in rank]
    return {"total": sum(t["retries"] for t in tasks), "tasks": tasks}


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
    if retried := stats["read_retries"]["total"]:
        summary(f"warning: {retried} task read(s) failed transiently and were retried (stats.json read_retries)", False)
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
