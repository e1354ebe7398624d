"""The pipeline's user-facing error: the CLI prints its message as one line on stderr and exits non-zero."""

from infra.errors import UserError


class PipelineError(UserError):
    """Something the user can fix (a path, a config key, a bad record under --strict); the message says what."""


class RankFailed(PipelineError):
    """A step failed on another rank; every rank raises so none is left waiting in a collective."""
