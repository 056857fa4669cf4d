"""How a benchmark is run: :class:`BenchSettings`, one frozen dataclass shared by every target."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from devices import DeviceError
from edge_lottery.errors import expected

MODES = ("performance", "accuracy", "energy")
#: Named delegates; anything else must be a path to a delegate shared library.
DELEGATES = ("default", "none", "sparse")


@dataclass(frozen=True)
class BenchSettings:
    """Benchmark settings; recorded verbatim (``to_json``) in every :class:`BenchRecord`.

    ``delegate``: ``default`` (LiteRT's XNNPACK), ``none`` (builtin kernels only), ``sparse``
    (the project's delegate, ``converters.delegate.load``) or a path to a delegate ``.so``.
    ``inputs``: an ``.npz`` of inputs (or a dataset name for accuracy mode); ``extra`` holds
    target-specific string options (e.g. ``baud`` for serial, ``arena`` for tflm).
    """

    runs: int = 50
    warmup: int = 5
    threads: int = 1
    delegate: str = "default"
    inputs: str | None = None
    labels: str | None = None
    mode: str = "performance"
    timeout_s: float = 30.0
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.runs, int) or self.runs < 1:
            raise DeviceError(expected("runs", "an integer >= 1", self.runs))
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise DeviceError(expected("warmup", "an integer >= 0", self.warmup))
        if not isinstance(self.threads, int) or self.threads < 1:
            raise DeviceError(expected("threads", "an integer >= 1", self.threads))
        if self.mode not in MODES:
            raise DeviceError(expected("mode", " | ".join(MODES), self.mode))
        if not self.delegate or not isinstance(self.delegate, str):
            raise DeviceError(expected("delegate", " | ".join(DELEGATES) + " | a path to a .so", self.delegate))
        if not (self.timeout_s > 0):
            raise DeviceError(expected("timeout_s", "a positive number of seconds", self.timeout_s))
        object.__setattr__(self, "extra", MappingProxyType({str(k): str(v) for k, v in dict(self.extra).items()}))

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["extra"] = dict(self.extra)
        return out

    def get_config(self) -> dict[str, Any]:
        return self.to_json()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BenchSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise DeviceError(expected("bench settings keys", sorted(known), unknown))
        return cls(**dict(config))

    def replace(self, **changes: Any) -> BenchSettings:
        return dataclasses.replace(self, **changes)


__all__ = ["BenchSettings", "DELEGATES", "MODES"]
