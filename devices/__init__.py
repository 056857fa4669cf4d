"""devices: measure latency, memory and energy on the host, TFLite-Micro, MCUs and phones."""

from __future__ import annotations

from edge_lottery import _tf_env  # noqa: F401  (Keras 2 before TensorFlow)
from edge_lottery.errors import EdgeLotteryError


class DeviceError(EdgeLotteryError):
    """A device, port, instrument or benchmark run failed in a way the user can act on."""


__all__ = ["DeviceError"]
