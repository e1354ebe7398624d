"""The one subcommand dispatcher of both commands (`pipeline`, `pretrain`).

A command is a list of (name, module) pairs; each module exposes `add_arguments(parser)`, `run(args) -> int`
and a docstring (its help). Only the chosen subcommand's module is imported (all of them for `--help`), so a
light subcommand never pays for a heavy one, and a module that fails to import is listed as unavailable
instead of breaking the others' help. The help keeps the docstring's own line breaks.

A closed stdout (`pipeline inspect DIR | head`, `pretrain plan | head -c 1`) is a normal end: the command
stops writing and exits 0 without a word, whichever subcommand was printing.
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import sys
from collections.abc import Callable, Sequence

# (name, module path)
Subcommands = Sequence[tuple[str, str]]
# what a command does with an exception its subcommand raised: an exit status, or None to let it propagate
FailureHandler = Callable[[str, BaseException], "int | None"]


def build_parser(prog: str, description: str, subcommands: Subcommands, argv: list[str]) -> argparse.ArgumentParser:
    """The full parser; when argv names a subcommand, only that subcommand's module is imported."""
    chosen = next((a for a in argv if a in dict(subcommands)), None)
    parser = argparse.ArgumentParser(prog=prog, description=description)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_path in subcommands:
        if chosen is not None and name != chosen:
            commands.add_parser(name)
            continue
        try:
            module = importlib.import_module(module_path)
        except ImportError as err:
            if chosen is not None:
                raise
            commands.add_parser(name, help=f"(unavailable: {err})")  # `--help` still lists the others
            continue
        doc = (module.__doc__ or "").strip()
        summary = doc.splitlines()[0] if doc else ""
        sub = commands.add_parser(
            name, help=summary, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(sub)
        sub.set_defaults(_module=module_path)
    return parser


def main(
    prog: str,
    description: str,
    subcommands: Subcommands,
    on_failure: FailureHandler,
    argv: list[str] | None = None,
    before_run: Callable[[], None] | None = None,
) -> int:
    """Parse, dispatch, and end: 0 on success or a closed stdout, else what `on_failure` makes of the error."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(prog, description, subcommands, argv).parse_args(argv)
    if before_run is not None:
        before_run()
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except BrokenPipeError as err:
        if stdout_reader_gone():
            return stdout_closed()
        return _failed(args.command, err, on_failure)
    except BaseException as err:  # noqa: BLE001 -- the command's handler decides; SystemExit passes
        if isinstance(err, SystemExit):
            raise
        return _failed(args.command, err, on_failure)


def _failed(command: str, err: BaseException, on_failure: FailureHandler) -> int:
    code = on_failure(command, err)
    if code is None:
        raise err
    return code


def stdout_reader_gone(fd: int | None = None) -> bool:
    """True when `fd` (stdout by default) is a pipe whose reader has closed it.

    A BrokenPipeError alone does not say that: a socket or a subprocess pipe written deep inside a run raises it
    too, and that must stay an error. Linux reports POLLERR on the write end of a pipe with no reader.
    """
    try:
        fd = sys.stdout.fileno() if fd is None else fd
    except (ValueError, OSError):  # no file descriptor (a captured or closed sys.stdout): not a closed pipe
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def stdout_closed() -> int:
    """The reader of stdout went away: point stdout at /dev/null (so the interpreter's final flush cannot fail
    and print 'Exception ignored ... BrokenPipeError') and report success, as `git log | head` leaves no trace."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0
