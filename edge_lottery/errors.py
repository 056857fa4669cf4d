"""The toolkit's error types.

Every error a user can cause is an :class:`EdgeLotteryError`; its message is one line that says
what was wrong, what was expected and what was received. The CLI prints it without a traceback
and exits with code 1.
"""

from __future__ import annotations


class EdgeLotteryError(Exception):
    """Base class of all user-facing errors of edge-lottery, converters and devices."""


class ConfigError(EdgeLotteryError, ValueError):
    """An argument or hyperparameter is outside what is accepted."""


class DataError(EdgeLotteryError):
    """A dataset is unknown, missing, corrupted or does not fit the model."""


class ModelError(EdgeLotteryError):
    """A model is unknown, of the wrong Keras flavour, or cannot be pruned as asked."""


class WorkDirError(EdgeLotteryError):
    """A work directory is corrupted, foreign, or would be overwritten."""


def expected(what: str, expected_: object, received: object) -> str:
    """Format the house style of message: ``what: expected X, received Y``."""
    return f"{what}: expected {expected_}, received {received!r}"
