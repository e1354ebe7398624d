"""Phase 1 of the dedup stage: what one execution is given, and the tasks with the rank that runs each."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_pipeline import markers
from data_pipeline.comm import Comm
from data_pipeline.config import PipelineConfig
from data_pipeline.retries import RetryLog, RetryPolicy, with_retries
from data_pipeline.stages.outputs import STAGE
from data_pipeline.tasks import Task, assign_tasks, count_range_lines, plan_tasks

# The dedup keys the scan reads (whether to sign, and how): a change of any other dedup key (threshold, bands,
# rows, verify_threshold, keep, exact) redecides the duplicates from the same scan.
SCAN_DEDUP_KEYS = ("near", "num_perm", "ngram", "seed", "scheme", "shingle")
# keys of those sections that say how the stage runs, not what it outputs: changing one never refuses a folder
HOW_IT_RUNS = {"read": ("retries", "retry_backoff_s"), "dedup": ("keep_work",)}


def stage_config(recipe: PipelineConfig) -> dict:
    """What the outputs depend on (worker counts, HOW_IT_RUNS and the tokenizer sections do not change them)."""
    return {
        name: {k: v for k, v in recipe.section(name).items() if k not in HOW_IT_RUNS.get(name, ())}
        for name in ("read", "filters", "dedup")
    }


def scan_config(config: dict) -> dict:
    """The part of a stage config the per-task phases read: the scan's settings, not the dedup decision's."""
    sections = {k: v for k, v in config.items() if k != "against"}
    return {**sections, "dedup": {k: config["dedup"].get(k) for k in SCAN_DEDUP_KEYS}}


def scan_identity(identity: dict) -> dict:
    """A stage identity less what only the dedup decision reads: equal ones share every task's scan."""
    return {**identity, "config": scan_config(identity["config"])}


@dataclass(frozen=True)
class DedupJob:
    """What every phase of one execution of the stage on one rank is given, all fixed before the first phase."""

    comm: Comm
    out: Path
    recipe: PipelineConfig
    quiet: bool
    inputs: dict[str, dict]  # path -> identity (execution.identify_inputs), in input order
    against: dict[str, str] = field(default_factory=dict)  # earlier dataset -> its index manifest's sha256
    config: dict = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", stage_config(self.recipe))

    @property
    def identity(self) -> dict:
        """The stage marker's identity: recipe sections, the earlier datasets' indexes (--against) and every
        input's size and digest."""
        against = {"against": self.against} if self.against else {}
        return markers.stage_identity(STAGE, {**self.config, **against}, self.inputs)


@dataclass(frozen=True)
class Plan:
    """The tasks, which rank runs each, this rank's tasks, each task's first line number, and the retries of this
    rank's line counts (retries.py)."""

    tasks: list[Task]
    owners: list[int]
    mine: list[Task]
    first_lines: list[int]
    retries: list[dict]

    def task_identity(self, job: DedupJob, phase: str, task: Task, extra: Any = None) -> dict:
        """A task's marker identity in a phase: the scan's config, the task's bytes and its input file's digest."""
        spec = {"config": scan_config(job.config), "task": [task.path, task.start, task.end, self.first_lines[task.index]],
                "extra": extra}  # fmt: skip
        return markers.stage_identity(f"{STAGE}-{phase}", spec, {task.path: job.inputs[task.path]})


def task_stage(phase: str, task: Task) -> str:
    return f"{STAGE}-{phase}/t-{task.index:05d}"


def plan_tasks_over_ranks(job: DedupJob) -> Plan:
    """The same tasks on every rank, spread over the ranks by size (collective: allgather of line counts)."""
    comm = job.comm
    files = list(job.inputs)
    tasks = plan_tasks(files, [job.inputs[f]["size"] for f in files], job.recipe.read.task_bytes)
    owners = assign_tasks([t.size for t in tasks], comm.size)
    mine = [t for t in tasks if owners[t.index] == comm.rank]
    policy, retried = RetryPolicy.of(job.recipe.read), RetryLog()
    counted = {t.index: with_retries(functools.partial(count_range_lines, t), f"{t.describe()} (task {t.index}, "
                                     "counting its lines)", policy, retried) for t in mine if t.is_range}  # fmt: skip
    lines = {i: n for part in comm.allgather(counted) for i, n in part.items()}
    return Plan(tasks, owners, mine, first_line_numbers(tasks, lines), retried.tasks)


def first_line_numbers(tasks: list[Task], lines: dict[int, int]) -> list[int]:
    """Line number of each task's first line: 1, or 1 + the lines of the earlier ranges of the same file."""
    first, previous = [], None
    for task in tasks:
        line = first[-1] + lines[task.index - 1] if previous == task.path and task.is_range else 1
        first.append(line)
        previous = task.path
    return first
