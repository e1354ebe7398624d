"""The base of every error a user can act on, and the exit statuses both commands share.

`PipelineError` (data_pipeline/errors.py) and `PretrainError` (pretrain/errors.py) subclass `UserError`, so an
entry point of either half catches one class, prints it as one line and exits EXIT_USER_ERROR. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2  # a UserError (or an OSError naming a path): fix the setting, path or flag and run again
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as a shell reports it)
EXIT_TERMINATED = 143  # SIGTERM (128 + SIGTERM): a scheduler's preemption or `kill`


class UserError(Exception):
    """Something the user can fix (a path, a config key, a bad record under --strict); the message says what."""


def one_line(err: BaseException) -> str:
    """The error's message on one line (a message may quote a multi-line config value or a DeepSpeed error)."""
    return " ".join(str(err).split())
