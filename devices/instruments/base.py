"""One interface for every power monitor: a :class:`PowerTrace` and the ``PowerInstrument`` protocol.

A trace is uniformly sampled power (each sample holds for one period, as an energy-output monitor
reports it) plus the times of the DUT's timestamp edges. Integration is exact for that
piecewise-constant model, including fractions of a sample at the window ends, so the EEMBC
arithmetic ("sum the samples between the last two events") is ``energy_between(t0, t1)`` with
``t0``/``t1`` on sample boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

__all__ = ["PowerTrace", "PowerInstrument", "edges_from_logic"]


@dataclass(frozen=True, eq=False)
class PowerTrace:
    """Power samples ``power_w[i]`` over ``[t0 + i*dt, t0 + (i+1)*dt)`` and edge times (s)."""

    power_w: np.ndarray
    dt: float
    t0: float = 0.0
    edges: tuple[float, ...] = ()
    voltage_v: float | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_energy(cls, energy_j: np.ndarray, dt: float, **kw) -> PowerTrace:
        return cls(np.asarray(energy_j, dtype=np.float64) / dt, dt, **kw)

    @classmethod
    def from_current(cls, current_a: np.ndarray, voltage_v: np.ndarray | float, dt: float, **kw) -> PowerTrace:
        p = np.asarray(current_a, dtype=np.float64) * np.asarray(voltage_v, dtype=np.float64)
        if np.isscalar(voltage_v) or np.ndim(voltage_v) == 0:
            kw.setdefault("voltage_v", float(voltage_v))
        return cls(p, dt, **kw)

    @property
    def duration_s(self) -> float:
        return len(self.power_w) * self.dt

    @property
    def times(self) -> np.ndarray:
        return self.t0 + np.arange(len(self.power_w)) * self.dt

    def energy_between(self, t0: float, t1: float) -> float:
        """Energy (J) between ``t0`` and ``t1`` seconds, counting partial samples pro rata."""
        if t1 < t0:
            t0, t1 = t1, t0
        n = len(self.power_w)
        if n == 0:
            return 0.0
        a = (t0 - self.t0) / self.dt
        b = (t1 - self.t0) / self.dt
        a = min(max(a, 0.0), float(n))
        b = min(max(b, 0.0), float(n))
        ia, ib = int(np.floor(a)), int(np.floor(b))
        if ia == ib:
            return float(self.power_w[min(ia, n - 1)] * (b - a) * self.dt) if ia < n else 0.0
        total = float(np.sum(self.power_w[ia + 1:ib])) if ib > ia + 1 else 0.0
        total += float(self.power_w[ia]) * (ia + 1 - a)
        if ib < n:
            total += float(self.power_w[ib]) * (b - ib)
        return total * self.dt

    def total_energy(self) -> float:
        return float(np.sum(self.power_w) * self.dt)


class PowerInstrument(Protocol):
    """A power monitor as the EEMBC energy loop drives it."""

    name: str

    def start(self) -> None:
        """Begin an acquisition (clears the previous one)."""

    def stop(self) -> PowerTrace:
        """End the acquisition and return what was recorded."""

    def close(self) -> None: ...


def edges_from_logic(bits: np.ndarray, channel: int, dt: float, t0: float = 0.0, *,
                     falling: bool = True) -> tuple[float, ...]:
    """Times of falling (or rising) edges of ``channel`` in a per-sample logic byte array."""
    line = (np.asarray(bits, dtype=np.int64) >> channel) & 1
    if len(line) < 2:
        return ()
    d = np.diff(line)
    idx = np.nonzero(d == (-1 if falling else 1))[0] + 1
    return tuple(float(t0 + i * dt) for i in idx)
