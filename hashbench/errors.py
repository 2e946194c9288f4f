"""Errors a user can act on. Each carries a message that names the problem and the fix."""

from __future__ import annotations

import sys


class HashbenchError(Exception):
    """Base class: the CLI prints these without a traceback and exits non-zero."""


class ConfigError(HashbenchError):
    """A benchmark file or a parameter table is wrong.

    `where` is a human-readable location such as ``benchmarks/quick.toml [[attack]] #1``.
    """

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


class PluginError(HashbenchError):
    """A plugin is unknown, clashes with another, or breaks its contract."""


class DataError(HashbenchError):
    """A dataset or a weight file is missing or malformed."""


class StageError(HashbenchError):
    """A stage failed for a reason the user can fix (e.g. a non-finite loss)."""


class StoreError(HashbenchError):
    """The results directory cannot be written or holds a corrupt artifact."""


def warn(message: str) -> None:
    """Tell the user about something skipped or adjusted that does not stop the command."""
    print(f"hashbench: warning: {message}", file=sys.stderr)
