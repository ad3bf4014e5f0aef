"""Exception classes: every user-facing failure is one of these.

The CLI turns any :class:`FastesError` into a one-line message on stderr and exit status 2
(:class:`Interrupted`: its signal's status, 130 or 143), so each message must say what was
found and what to do about it.
"""

from __future__ import annotations


def one_line(text) -> str:
    """``text`` (or an exception's message) on one line, for a message that quotes it."""
    return " ".join(str(text).split()) or type(text).__name__


class FastesError(Exception):
    """Base class of every error fastes reports to a user."""

    exit_code = 2


class ConfigError(FastesError, ValueError):
    """An invalid hyperparameter, preset or option name."""


class ResourceError(ConfigError):
    """A configuration that does not fit this machine's memory or the noise table."""


class DatasetError(FastesError):
    """A missing, corrupt or inconsistent dataset or image file."""


class ModelFileError(FastesError):
    """A model or checkpoint file that cannot be read or does not fit."""


class RunFolderError(FastesError):
    """A results folder (or its files) that cannot be used as asked."""


class DivergenceError(FastesError):
    """Parameters or fitness became NaN or infinite during training."""


class BackendError(FastesError):
    """A backend that is not installed or failed (for example a Ray worker that died)."""


class Interrupted(FastesError):
    """SIGINT or SIGTERM stopped a command at a point where the message says how to go on."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum
