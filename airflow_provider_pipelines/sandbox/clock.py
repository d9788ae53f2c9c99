"""Simulation clock and event scheduler of the sandbox.

Every simulated job moves through its states on this clock. Time is kept in integer
milliseconds so that event times computed as ``created + d1 + d2`` compare exactly with a
manual clock advanced by ``d1`` and then ``d2`` (no floating point drift).

The clock has two modes:

* ``real`` (default): wall-clock time plus an offset. :meth:`SandboxClock.advance` moves the
  offset forward, so it works in real mode too.
* ``manual``: time stands still until :meth:`SandboxClock.advance` or
  :meth:`SandboxClock.set` is called. Tests use it to make job progression deterministic.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "SandboxClock", "Scheduler", "seconds_to_ms"]


def seconds_to_ms(seconds: float | None) -> int | None:
    """Convert a duration in seconds to integer milliseconds; ``None``/inf/negative-free means never."""
    if seconds is None:
        return None
    value = float(seconds)
    if math.isinf(value) or math.isnan(value):
        return None
    return max(0, round(value * 1000))


class SandboxClock:
    """A clock that is either real time (plus an offset) or manual (frozen until advanced)."""

    def __init__(self, mode: str = "real", start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._offset_ms = 0
        self._frozen_ms: int | None = None
        self.configure(mode=mode, start=start)

    # -- configuration -------------------------------------------------------------------------
    def configure(self, mode: str = "real", start: float | None = None) -> None:
        """(Re)configure the clock; ``start`` is epoch seconds (manual mode, default: now)."""
        if mode not in ("real", "manual"):
            raise ValueError(f"clock mode must be 'real' or 'manual', not {mode!r}")
        with self._lock:
            self._offset_ms = 0
            if mode == "manual":
                self._frozen_ms = round(start * 1000) if start is not None else self._wall_ms()
            else:
                self._frozen_ms = None
                if start is not None:
                    self._offset_ms = round(start * 1000) - self._wall_ms()

    @staticmethod
    def _wall_ms() -> int:
        return int(time.time() * 1000)

    # -- reading ------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return "manual" if self._frozen_ms is not None else "real"

    def now_ms(self) -> int:
        """Current simulation time in epoch milliseconds."""
        with self._lock:
            if self._frozen_ms is not None:
                return self._frozen_ms
            return self._wall_ms() + self._offset_ms

    def now(self) -> float:
        """Current simulation time in epoch seconds."""
        return self.now_ms() / 1000.0

    # -- changing -----------------------------------------------------------------------------
    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (both modes); returns the new time in seconds."""
        if seconds < 0:
            raise ValueError("the sandbox clock cannot go backwards")
        delta = round(float(seconds) * 1000)
        with self._lock:
            if self._frozen_ms is not None:
                self._frozen_ms += delta
            else:
                self._offset_ms += delta
        return self.now()

    def freeze(self) -> float:
        """Switch to manual mode at the current time."""
        now = self.now_ms()
        with self._lock:
            self._frozen_ms = now
        return now / 1000.0

    def unfreeze(self) -> float:
        """Switch back to real mode, continuing from the current simulation time."""
        with self._lock:
            if self._frozen_ms is not None:
                self._offset_ms = self._frozen_ms - self._wall_ms()
                self._frozen_ms = None
        return self.now()

    def set(self, epoch_seconds: float) -> float:
        """Jump to an absolute time (not before the current time)."""
        target = round(float(epoch_seconds) * 1000)
        now = self.now_ms()
        if target < now:
            raise ValueError("the sandbox clock cannot go backwards")
        return self.advance((target - now) / 1000.0)

    def as_dict(self) -> dict[str, Any]:
        now = self.now_ms()
        return {"mode": self.mode, "now": now / 1000.0, "now_ms": now}


@dataclass(order=True)
class Event:
    """A scheduled simulation step; ``fn`` gets the event's own time (ms), not the current time."""

    when: int
    seq: int
    fn: Callable[[int], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    """A heap of future simulation steps, run lazily whenever the sandbox is looked at."""

    def __init__(self) -> None:
        self._heap: list[Event] = []
        self._seq = itertools.count()

    def at(self, when: int | None, fn: Callable[[int], None]) -> Event | None:
        """Schedule ``fn(when)``; ``when=None`` means never (the job never finishes)."""
        if when is None:
            return None
        event = Event(when, next(self._seq), fn)
        heapq.heappush(self._heap, event)
        return event

    def run_until(self, now_ms: int) -> int:
        """Run every event due at or before ``now_ms`` in time order; returns how many ran."""
        ran = 0
        while self._heap and self._heap[0].when <= now_ms:
            event = heapq.heappop(self._heap)
            if event.cancelled:
                continue
            event.fn(event.when)
            ran += 1
        return ran

    def clear(self) -> None:
        self._heap.clear()

    def pending(self) -> int:
        return sum(1 for e in self._heap if not e.cancelled)
