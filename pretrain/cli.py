"""The `pretrain` command: its subcommands, dispatched by infra/cli.py.

Adding a subcommand is one line in SUBCOMMANDS. Only the chosen subcommand's module is imported (all of them
for `--help`), so `pretrain plan` never pays for building a model and a broken optional module cannot break the
others. A UserError (a PretrainError or PipelineError: a bad config value, flag or file) becomes one line on
stderr and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

from infra import cli
from infra.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError, one_line
from pretrain.errors import UsageError

# (name, module): the module exposes `add_arguments(parser)`, `run(args) -> int` and a docstring (its help).
SUBCOMMANDS: list[tuple[str, str]] = [
    ("plan", "pretrain.plan"),
    ("export", "pretrain.interop.export"),
    ("generate", "pretrain.generate"),
    ("evaluate", "pretrain.evaluate"),
    ("plot", "pretrain.plot"),
]


def report(command: str, err: BaseException) -> int | None:
    """A user's error is one line and exit 2, Ctrl-C exits 130; anything else propagates with its traceback."""
    if isinstance(err, UserError):
        hint = f" (see pretrain {command} --help)" if isinstance(err, UsageError) else ""
        print(f"pretrain {command}: error: {one_line(err)}{hint}", file=sys.stderr)
        return EXIT_USER_ERROR
    if isinstance(err, KeyboardInterrupt):
        print(f"pretrain {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return None


def main(argv: list[str] | None = None) -> int:
    """Parse, dispatch, and turn a user's error into one line on stderr and exit status 2."""
    return cli.main("pretrain", "GPT pretraining with DeepSpeed ZeRO-3.", SUBCOMMANDS, report, argv)


if __name__ == "__main__":
    sys.exit(main())
