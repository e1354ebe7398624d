"""`pipeline dedup`: filter and deduplicate a corpus. Tasks → streaming steps → distributed dedup → a streaming
pass writes kept/.

The same code runs as one process (LocalComm) or as N MPI ranks (mpiexec, srun). The phases, each a function
of its own module with explicit inputs and a returned value (every rank calls them in this order):

0. Identify (execution.identify_inputs). Rank 0 resolves and stats the inputs once (no other rank stats one);
   the ranks digest a share of those the digest cache does not cover; a
   complete output folder with the same identity is skipped, one with another is refused naming what changed,
   unless only dedup keys the scan does not read (or --against) changed: then it reruns on the same scan.
1. Plan (plan.py). Every rank cuts the inputs into the same tasks (data_pipeline/tasks.py) and spreads them
   over the ranks by size.
2. Scan (scan.py), per task, streaming, each task once behind its own marker; a transient read failure redoes
   the task from its start, at most read.retries times (retries.py).
3. Dedup (duplicates.py), collective: exact then near dedup; each rank gets a `Removals` for its documents.
   With --against (earlier.py), the earlier datasets' indexes are opened first, and their kept documents win
   over the new duplicates of them (`exact_dup_earlier`, `near_dup_earlier`), each rank reading its share.
4. Write (write.py), per task: kept/ parts; the dataset's own dedup index (index.py); then this rank's clusters
   into dedup/clusters.jsonl.
5. Finish (finish.py): rank 0 sums the per-rank ledgers, checks they add up, writes stats.json (with per-rank
   peak memory and bytes sent/received, and the read retries), timings.json, the recipe, and the stage marker
   last; with dedup.keep_work=false each rank then deletes its own tasks' work folders.

Every collective call is in the body of the phase that owns it (docstrings say which), never in a helper, so
that reordering code cannot leave ranks waiting in different collectives. Nothing holds a rank's documents:
memory is a batch of text plus, during dedup, the per-document arrays of duplicates.py. kept/ concatenated in
part order is the global input order for any N; which documents survive does not depend on N either.

Any rank's error ends the whole job (the CLI prints it with the rank number, then MPI_Abort); no completion
marker is written for unfinished work. Ctrl-C and SIGTERM terminate the local worker pools (executor.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from data_pipeline import markers, storage
from data_pipeline.comm import Comm, get_comm, on_root
from data_pipeline.config import PipelineConfig, load_recipe
from data_pipeline.progress import summary
from data_pipeline.readers import resolve_inputs
from data_pipeline.stages.duplicates import find_duplicates, global_index
from data_pipeline.stages.earlier import open_earlier
from data_pipeline.stages.execution import identify_inputs, timed
from data_pipeline.stages.finish import finish, remove_work
from data_pipeline.stages.index import write_index
from data_pipeline.stages.outputs import STAGE, STATS, prepare_output
from data_pipeline.stages.plan import DedupJob, plan_tasks_over_ranks, scan_identity
from data_pipeline.stages.scan import check_text_field, scan_tasks
from data_pipeline.stages.write import write_clusters, write_kept


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The corpus arguments shared by `pipeline dedup` and `pipeline run`."""
    parser.add_argument("--input", action="append", required=True, metavar="PATH_OR_GLOB",
                        help="jsonl[.gz|.zst], parquet or txt file, directory or glob; repeatable")  # fmt: skip
    parser.add_argument("--output", required=True, metavar="DIR_OR_URL", help="output folder or URL (s3://bucket/v1)")
    parser.add_argument("--against", action="append", default=[], metavar="DIR",
                        help="an earlier dataset (an --output of pipeline dedup/run) whose documents win over the "
                             "input's duplicates of them, read from its dedup index; repeatable")  # fmt: skip
    parser.add_argument("--config", metavar="RECIPE.yaml", help="recipe file (see data_pipeline/config.py)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override, e.g. dedup.threshold=0.8; repeatable")  # fmt: skip
    parser.add_argument("--strict", action="store_true", help="stop at the first bad input record (read.strict)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summary lines")


def recipe_from_args(args: argparse.Namespace) -> PipelineConfig:
    return load_recipe(args.config, [*args.set, *(["read.strict=true"] if args.strict else [])])


def run(args: argparse.Namespace) -> int:
    comm = get_comm()
    with storage.output_folder(comm, args.output) as output_dir:
        run_dedup(comm, args.input, output_dir, recipe_from_args(args), args.quiet, args.against)
    return 0


def run_dedup(
    comm: Comm, inputs: list[str], output_dir: Path, recipe: PipelineConfig, quiet: bool, against: list[str] = ()
) -> dict:
    """The whole stage on every rank, deduplicating against the datasets `against` too; returns the merged stats
    (on every rank)."""
    output_dir = Path(output_dir)
    quiet = quiet or comm.rank != 0
    files = on_root(comm, "resolving inputs", lambda: resolve_inputs(inputs))
    earlier = open_earlier(comm, list(against), recipe, output_dir) if against else None
    job = DedupJob(comm, output_dir, recipe, quiet, identify_inputs(comm, output_dir, files),
                   earlier.manifests if earlier else {})  # fmt: skip
    if earlier_run_complete(job):
        summary(f"dedup: {output_dir} is already complete for these inputs and recipe; skipped", quiet)
        return json.loads((output_dir / STATS).read_text())
    on_root(comm, "preparing the output folder", lambda: prepare_output(output_dir))
    comm.barrier()
    timings: dict[str, float] = {}
    with timed(timings, "plan"):
        plan = plan_tasks_over_ranks(job)
    with timed(timings, "scan"):
        hashes, retries = scan_tasks(job, plan)
    check_text_field(job, plan)
    index = global_index(job, plan, earlier)
    with timed(timings, "dedup"):
        removals = find_duplicates(job, plan, index)
    removed = removals.by_task(index, plan.mine)
    with timed(timings, "write_kept"):
        hashes |= write_kept(job, plan, removed)
    with timed(timings, "index"):
        hashes |= write_index(job, plan, removed)
    with timed(timings, "clusters"):
        clusters = write_clusters(job, plan, index, removals)
    stats = finish(job, plan, removals, removed, clusters, hashes, timings, retries)
    if not recipe.dedup.keep_work:
        remove_work(job, plan)
    return stats


def earlier_run_complete(job: DedupJob) -> bool:
    """True when the stage marker matches and every output is intact; a marker for another identity is refused
    naming what changed, unless only the decision changed (`stage_marker`).

    Collective: rank 0 reads the marker (its outcome shared), then the ranks each hash a share of the outputs
    (allreduce of the broken count).
    """
    comm, out = job.comm, job.out
    marker = on_root(comm, "checking earlier outputs", lambda: stage_marker(job))
    if marker is None:
        return False
    outputs = sorted(marker["outputs"].items())
    broken = not markers.outputs_intact(out, outputs[comm.rank :: comm.size])
    return comm.allreduce_sum(int(broken)) == 0


def stage_marker(job: DedupJob) -> dict | None:
    """The stage marker if it records this identity. None when there is none, or when it differs only in how the
    duplicates are decided (dedup keys the scan does not read, such as the threshold, or --against): the stage
    then runs again on the same scan, and rewrites only what the new decision changes. A tokenized dataset
    (its token manifest exists) is still refused: training runs read its shards."""
    try:
        return markers.read_marker(job.out, STAGE, job.identity)
    except markers.StageMismatch:
        from data_pipeline import shards  # here only: pyarrow is not imported by a plain `pipeline dedup`

        recorded = json.loads(markers.marker_path(job.out, STAGE).read_text()).get("identity")
        same_scan = recorded and markers.fingerprint(scan_identity(recorded)) == markers.fingerprint(
            scan_identity(job.identity)
        )
        if not same_scan or (job.out / shards.MANIFEST).is_file():
            raise
        return None
