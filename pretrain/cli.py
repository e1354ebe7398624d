"""The `pretrain` command: a list of subcommands, each a lazily imported module with `add_arguments` and `run`.

Adding a subcommand is one line in SUBCOMMANDS. Only the chosen subcommand's module is imported (all of them
for `--help`), so `pretrain plan` never pays for building a model and a broken optional module cannot break the
others. A PretrainError or PipelineError (pretrain/errors.py: a bad config value, flag or file) becomes one line
on stderr and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pretrain.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, USER_ERRORS, UsageError, one_line

# (name, module): the module exposes `add_arguments(parser)`, `run(args) -> int` and a docstring (its help).
SUBCOMMANDS: list[tuple[str, str]] = [
    ("plan", "pretrain.plan"),
    ("export", "pretrain.interop.export"),
    ("generate", "pretrain.generate"),
    ("evaluate", "pretrain.evaluate"),
    ("plot", "pretrain.plot"),
]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; when argv names a subcommand, only that subcommand's module is imported."""
    chosen = next((a for a in (argv or []) if a in dict(SUBCOMMANDS)), None)
    parser = argparse.ArgumentParser(prog="pretrain", description="GPT pretraining with DeepSpeed ZeRO-3.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_path in SUBCOMMANDS:
        if chosen is not None and name != chosen:
            commands.add_parser(name)
            continue
        try:
            module = importlib.import_module(module_path)
        except ImportError as e:
            if chosen is not None:
                raise
            commands.add_parser(name, help=f"(unavailable: {e})")  # `--help` still lists the others
            continue
        doc = (module.__doc__ or "").strip()
        summary = doc.splitlines()[0] if doc else ""
        sub = commands.add_parser(
            name, help=summary, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(sub)
        sub.set_defaults(_module=module_path)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, dispatch, and turn a user's error into one line on stderr and exit status 2."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except USER_ERRORS as err:
        hint = f" (see pretrain {args.command} --help)" if isinstance(err, UsageError) else ""
        print(f"pretrain {args.command}: error: {one_line(err)}{hint}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"pretrain {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
