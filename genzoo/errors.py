"""Errors that the CLI turns into a one-line message and a non-zero exit (no traceback).

Library code raises these with a message that says what went wrong and what to do.
"""


class GenzooError(Exception):
    """Base class: a user-facing error whose message is complete on its own."""


class ConfigError(GenzooError):
    """Unknown family / dataset / preset, or a bad `--set key=value` override."""


class DataError(GenzooError):
    """A dataset is missing, corrupt, or cannot be prepared offline."""


class CheckpointError(GenzooError):
    """A checkpoint or run directory is missing, corrupt, or does not match the config."""


class TrainingError(GenzooError):
    """Training stopped: non-finite loss, or an inconsistent distributed state."""


class Interrupted(GenzooError):
    """Training was stopped by Ctrl-C / SIGTERM after saving a checkpoint."""
