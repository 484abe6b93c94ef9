"""Errors the user can fix: the CLI prints their message as one line and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad user input (config, paths, data, run directories); the message names the culprit."""


class ConfigError(UserError):
    """A config key is unknown, mistyped or out of range; `problems` lists every such key's
    line where validation found several (`config check` prints them all)."""

    def __init__(self, message: str, *, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]


class DataError(UserError):
    """A data file, row or column cannot be used."""


class CheckpointError(UserError):
    """A checkpoint or run directory is missing, corrupt or untrusted."""
