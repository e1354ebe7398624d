"""The `pipeline` command: a list of subcommands, each a lazily imported module with `add_arguments` and `run`.

Adding a subcommand is one line in SUBCOMMANDS. Modules are imported only when their subcommand runs (and for
`--help`, only to build its parser), so `pipeline demo-corpus` never pays for pyarrow or sentencepiece, and
nothing here imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from data_pipeline.errors import PipelineError

# (name, module): the module exposes `add_arguments(parser)`, `run(args) -> int` and a docstring (its help).
SUBCOMMANDS: list[tuple[str, str]] = [
    ("demo-corpus", "data_pipeline.demo_corpus"),
    ("dedup", "data_pipeline.dedup_stage"),
    ("run", "data_pipeline.tokenize_stage"),
    ("train-tokenizer", "data_pipeline.tokenizer"),
    ("inspect", "data_pipeline.inspect"),
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


def launcher_rank() -> int:
    """This process's rank as the launcher (mpiexec, srun) numbered it; 0 when not launched as one of many."""
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse, dispatch, and turn a PipelineError into one line on stderr and exit status 2."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (PipelineError, OSError) as e:  # OSError: a path the user named cannot be read or written
        if launcher_rank() == 0:  # collective failures raise on every rank; one line is enough
            print(f"pipeline {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pipeline {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
