"""The one base class of every error a `pretrain` command reports as a message rather than a traceback."""


class PretrainError(Exception):
    """A failure the user can fix (a wrong setting, a missing or damaged file, a refused relaunch).

    Entry points catch this base once, print `pretrain CMD: error: <message>` and exit 2.
    """
