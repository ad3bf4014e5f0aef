"""Exception classes: every user-facing failure is one of these.

The CLI turns any :class:`FastesError` into a one-line message on stderr and exit status 2,
so each message must say what was found and what to do about it.
"""

from __future__ import annotations


class FastesError(Exception):
    """Base class of every error fastes reports to a user."""


class ConfigError(FastesError, ValueError):
    """An invalid hyperparameter, preset or option name."""


class DatasetError(FastesError):
    """A missing, corrupt or inconsistent dataset file."""


class ModelFileError(FastesError):
    """A model or checkpoint file that cannot be read or does not fit."""


class DivergenceError(FastesError):
    """Parameters or fitness became NaN or infinite during training."""


class BackendError(FastesError):
    """A backend that is not installed or failed (for example a Ray worker that died)."""
