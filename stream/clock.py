"""One injectable clock. The real clock is monotonic wall time; tests drive a virtual clock."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep_until(self, t: float) -> None: ...


class MonotonicClock:
    """Wall time from ``time.monotonic``, starting at 0 when the clock is made."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._t0

    async def sleep_until(self, t: float) -> None:
        delay = t - self.now()
        if delay > 0:
            await asyncio.sleep(delay)


class VirtualClock:
    """A clock that only moves when told to.

    ``sleep_until`` jumps straight to the requested time, which makes a single driver
    loop deterministic: work on other threads is not counted as elapsed time unless it
    calls :meth:`sleep` (a blocking, virtual-time sleep used by slow fake models), in
    which case the jump wakes it at exactly its wake time and waits for the work it
    then does to finish (see :meth:`work_started` / :meth:`work_finished`).
    """

    def __init__(self, start_s: float = 0.0) -> None:
        self._now = start_s
        self._cond = threading.Condition()
        self._busy = 0  # worker threads with submitted work not yet finished
        self._sleepers: list[float] = []  # wake times of threads blocked in sleep()

    def now(self) -> float:
        with self._cond:
            return self._now

    # -- used by worker threads -------------------------------------------------
    def work_started(self) -> None:
        with self._cond:
            self._busy += 1

    def work_finished(self) -> None:
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    def sleep(self, seconds: float) -> None:
        """Block the calling thread until virtual time has advanced by ``seconds``."""
        with self._cond:
            wake = self._now + seconds
            self._sleepers.append(wake)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._now >= wake)
            self._sleepers.remove(wake)

    # -- used by the driver -------------------------------------------------------
    def _settle(self) -> None:
        # Every busy job must be either finished or parked in sleep() with a future wake time.
        settled = self._cond.wait_for(
            lambda: self._busy <= sum(1 for w in self._sleepers if w > self._now), timeout=60.0
        )
        if not settled:
            raise RuntimeError("virtual clock: worker threads did not finish or sleep within 60 s")

    def advance_to(self, t: float) -> None:
        with self._cond:
            self._settle()
            while True:
                due = [w for w in self._sleepers if self._now < w <= t]
                if not due:
                    break
                self._now = min(due)
                self._cond.notify_all()
                self._settle()
            if t > self._now:
                self._now = t
            self._cond.notify_all()
            self._settle()

    def settle(self) -> None:
        """Wait until submitted work is finished or sleeping in virtual time."""
        with self._cond:
            self._settle()

    async def sleep_until(self, t: float) -> None:
        self.advance_to(t)
        await asyncio.sleep(0)


def work_started(clock: object) -> None:
    fn = getattr(clock, "work_started", None)
    if fn is not None:
        fn()


def work_finished(clock: object) -> None:
    fn = getattr(clock, "work_finished", None)
    if fn is not None:
        fn()
