"""The `pipeline` command: its subcommands, dispatched by infra/cli.py.

Adding a subcommand is one line in SUBCOMMANDS. Modules are imported only when their subcommand runs (and for
`--help`, only to build its parser), so `pipeline demo-corpus` never pays for pyarrow or sentencepiece, and
nothing here imports torch.
"""

from __future__ import annotations

import sys

from data_pipeline.executor import install_signal_handlers, job_failed, return_large_frees_to_the_os
from infra import cli

# (name, module): the module exposes `add_arguments(parser)`, `run(args) -> int` and a docstring (its help).
SUBCOMMANDS: list[tuple[str, str]] = [
    ("demo-corpus", "data_pipeline.demo_corpus"),
    ("dedup", "data_pipeline.stages.dedup"),
    ("run", "data_pipeline.stages.run"),
    ("train-tokenizer", "data_pipeline.tokenizer"),
    ("inspect", "data_pipeline.inspect_dataset"),
]


def _prepare() -> None:
    install_signal_handlers()
    return_large_frees_to_the_os()


def main(argv: list[str] | None = None) -> int:
    """Parse, dispatch, and end on any failure with its message on stderr and a non-zero status.

    A PipelineError or OSError is one line (exit 2); Ctrl-C exits 130, SIGTERM 143. Under several MPI ranks a
    rank that fails alone prints its error with its rank number and aborts the whole job (executor.job_failed).
    """
    description = "Corpus pipeline: filter, dedup, tokenize, shard."
    return cli.main("pipeline", description, SUBCOMMANDS, job_failed, argv, before_run=_prepare)


if __name__ == "__main__":
    sys.exit(main())
