"""The one base class of every error a `pretrain` command reports as a message rather than a traceback."""


class PretrainError(Exception):
    """A failure the user can fix (a wrong setting, a missing or damaged file, a refused relaunch).

    Entry points catch this base once, print `pretrain CMD: error: <message>` and exit 2.
    """


class ConfigError(PretrainError):
    """A configuration value or key is wrong; the message names the field (`train.max_steps`) and the fix."""
