"""The one base class of every error a `pretrain` command reports as a message, and the trainer's exit codes.

An error the user can act on (a wrong setting, a missing or damaged file, a refused relaunch) is a
PretrainError raised where the fault is found, with a message naming the file, key or flag and the fix. The
entry points (`pretrain CMD`, `python -m pretrain.train`) catch infra.errors.UserError once, print
`pretrain CMD: error: <message>` as one line on stderr and exit EXIT_USER_ERROR; any other exception is a bug
and keeps its traceback. A PipelineError counts too (both subclass UserError): the trainer, `evaluate` and `plan` read the pipeline's
shards, and a bad dataset folder is the user's to fix either way.

Subclasses exist only where a caller or test tells them apart. Defined here: UsageError (a bad command-line
value: the entry point points at --help) and ConfigError (a config key or a DeepSpeed JSON key that contradicts
the run config). In the module that raises them: RunLocked (its own exit code, retried by launch/restart.sh),
CheckpointCorrupt (a resume falls back past it) and RunFolderError (a refused launch, not a held lock).
Everything else raises PretrainError itself. README.md's
"Exit codes" table lists every status the commands and launch scripts end with; the trainer's own are the EXIT_*
constants below, the shared ones (2, 130, 143) are in infra/errors.py.
"""

from __future__ import annotations

from infra.errors import UserError

EXIT_BAD_STEPS = 3  # train.max_bad_steps non-finite steps in a row; last good weights saved
EXIT_COLLECTIVE_TIMEOUT = 4  # the watchdog: a collective waited train.collective_timeout_s (pretrain/watchdog.py)
EXIT_LOCKED = 5  # launch refused (run folder held) or lock lost mid-run; launch/restart.sh retries it


class PretrainError(UserError):
    """A failure the user can fix (a wrong setting, a missing or damaged file, a refused relaunch).

    Entry points catch this base once, print `pretrain CMD: error: <message>` and exit 2.
    """


class ConfigError(PretrainError):
    """A configuration value or key is wrong; the message names the field (`train.max_steps`) and the fix."""


class UsageError(PretrainError):
    """A command-line value out of range or contradicting another; the message names the flag."""
