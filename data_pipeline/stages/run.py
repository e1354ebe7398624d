"""`pipeline run`: the dedup stage (stages/dedup.py), then the tokenize stage (stages/tokenize.py), on every rank.

read → filter → exact + near dedup → SentencePiece → Arrow shards + manifest.json.
"""

from __future__ import annotations

import argparse

from data_pipeline import storage
from data_pipeline.comm import get_comm
from data_pipeline.stages.dedup import add_arguments as corpus_arguments
from data_pipeline.stages.dedup import recipe_from_args, run_dedup
from data_pipeline.stages.tokenize import run_tokenize_stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The same corpus arguments as `pipeline dedup`."""
    corpus_arguments(parser)


def run(args: argparse.Namespace) -> int:
    comm = get_comm()
    recipe = recipe_from_args(args)
    with storage.output_folder(comm, args.output) as output_dir:
        run_dedup(comm, args.input, output_dir, recipe, args.quiet, args.against)
        run_tokenize_stage(comm, output_dir, recipe, args.quiet)
    return 0
