"""edge-lottery: lottery ticket search for Keras models bound for microcontrollers and phones.

Importing this package selects Keras 2 (tf-keras) for TensorFlow, because TFMOT 0.8.1 rejects
Keras 3 objects. The heavy modules (TensorFlow, TFMOT) load lazily on first attribute access so
that ``edge-lottery --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from edge_lottery import _tf_env  # noqa: F401  (must run before TensorFlow is imported)
from edge_lottery.errors import (
    ConfigError,
    DataError,
    EdgeLotteryError,
    ModelError,
    WorkDirError,
)

__version__ = "0.1.0"

# Public name -> module that defines it; resolved on first access.
_LAZY = {
    "LotteryTicketSearch": "edge_lottery.search",
    "SearchResult": "edge_lottery.search",
    "open_search": "edge_lottery.workdir",
    "SearchConfig": "edge_lottery.config",
    "TrainConfig": "edge_lottery.config",
    "LRSchedule": "edge_lottery.config",
    "load_dataset": "edge_lottery.data",
    "build_model": "edge_lottery.models",
    "get_model_spec": "edge_lottery.models",
}

__all__ = [
    "ConfigError",
    "DataError",
    "EdgeLotteryError",
    "ModelError",
    "WorkDirError",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_lottery' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
