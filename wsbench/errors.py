"""User-facing errors: the CLI turns any WsbenchError into one clear line and exit code 2."""
from __future__ import annotations


class WsbenchError(Exception):
    """An error the user can cause and fix (bad name, bad file, bad config value)."""

    exit_code = 2


class UnknownNameError(WsbenchError):
    """An unknown registry name (method, zoo, task, preset, arch...)."""


class ConfigError(WsbenchError):
    """A config value that is missing, of the wrong type or out of range."""


class DataError(WsbenchError):
    """Missing or malformed input data (dataset files, zoo folders, weight files)."""


class IntegrityError(DataError):
    """A file whose checksum, shape, dtype or content does not match what it should be."""


class NotApplicableError(WsbenchError):
    """A method asked to do a task (or read a spec) it cannot do."""


class TrainingDivergedError(WsbenchError):
    """Training produced a non-finite loss; the run stops before a NaN reaches a checkpoint or record."""
