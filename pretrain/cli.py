"""The `pretrain` command: a list of subcommands, each a lazily imported module with `add_arguments` and `run`.

Adding a subcommand is one line in SUBCOMMANDS. Only the chosen subcommand's module is imported (all of them
for `--help`), so `pretrain plan` never pays for building a model and a broken optional module cannot break the
others. Expected errors (a bad config value, a missing file) become one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pretrain.errors import ConfigError

# (name, module): the module exposes `add_arguments(parser)`, `run(args) -> int` and a docstring (its help).
SUBCOMMANDS: list[tuple[str, str]] = [
    ("plan", "pretrain.plan"),
    ("export", "pretrain.interop.export"),
    ("generate", "pretrain.generate"),
    ("evaluate", "pretrain.evaluate"),
    ("plot", "pretrain.plot"),
]

# Errors a user fixes by changing an argument, a config value or a path; anything else is a bug and keeps its
# traceback.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError, NotADirectoryError, PermissionError)


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
    """Parse, dispatch, and turn an expected error into one line on stderr and exit status 2."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except EXPECTED_ERRORS as e:
        message = " ".join(str(e).split())  # one line, whatever the exception text holds
        print(f"pretrain {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pretrain {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
