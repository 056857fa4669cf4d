"""converters: quantize, pack and emit winning tickets for TFLite, TFLite-Micro and firmware."""

from __future__ import annotations

from edge_lottery import _tf_env  # noqa: F401  (Keras 2 before TensorFlow)
from edge_lottery.errors import EdgeLotteryError


class ConverterError(EdgeLotteryError):
    """A model, tensor or option cannot be converted or packed as asked."""


__all__ = ["ConverterError"]
