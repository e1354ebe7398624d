"""The `pipeline` command: a list of subcommands, each a lazily imported module with `add_arguments` and `run`.

Adding a subcommand is one line in SUBCOMMANDS. Modules are imported only when their subcommand runs (and for
`--help`, only to build its parser), so `pipeline demo-corpus` never pays for pyarrow or sentencepiece, and
nothing here imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from data_pipeline.executor import install_signal_handlers, job_failed, return_large_frees_to_the_os

# (name, module): the module exposes `add_arguments(parser)`, `run(args) -> int` and a docstring (its help).
SUBCOMMANDS: list[tuple[str, str]] = [
    ("demo-corpus", "data_pipeline.demo_corpus"),
    ("dedup", "data_pipeline.dedup.stage"),
    ("run", "data_pipeline.tokenize_stage"),
    ("train-tokenizer", "data_pipeline.tokenizer"),
    ("inspect", "data_pipeline.inspect_dataset"),
]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; when argv names a subcommand, only that subcommand's module is imported."""
    chosen = next((a for a in (argv or []) if a in dict(SUBCOMMANDS)), None)
    parser = argparse.ArgumentParser(prog="pipeline", description="Corpus pipeline: filter, dedup, tokenize, shard.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_path in SUBCOMMANDS:
        if chosen is not None and name != chosen:
            commands.add_parser(name)
            continue
        module = importlib.import_module(module_path)
        summary = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
        sub = commands.add_parser(name, help=summary, description=summary)
        module.add_arguments(sub)
        sub.set_defaults(_module=module_path)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, dispatch, and end on any failure with its message on stderr and a non-zero status.

    A PipelineError or OSError is one line (exit 2); Ctrl-C exits 130, SIGTERM 143. Under several MPI ranks a
    rank that fails alone prints its error with its rank number and aborts the whole job (executor.job_failed).
    """
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    install_signal_handlers()
    return_large_frees_to_the_os()
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except BaseException as err:  # noqa: BLE001 -- every failure ends the job the same way; SystemExit passes
        if isinstance(err, SystemExit):
            raise
        return job_failed(args.command, err)


if __name__ == "__main__":
    sys.exit(main())
