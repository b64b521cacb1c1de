"""Fixed-delay playout support: the degrade ladder that keeps deadlines.

Every frame captured at t leaves at t + D. When frames miss their deadline, the ladder steps
down: fewer sampler steps, then one step, then shorter chunks, then pass-through. After a
long enough run with no late frame it steps back up one rung. A climb that fails at once
(the load has not dropped) doubles the wait before the next try, up to 4x, so a model that
cannot keep up does not spend a burst of late frames every few seconds; a climb that holds
resets the wait.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field

from stream.config import ChunkConfig, PlayoutConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rung:
    steps: int
    chunk_frames: int
    overlap_frames: int
    passthrough: bool = False


class DegradeLadder:
    def __init__(self, config: PlayoutConfig, chunk: ChunkConfig, steps: int) -> None:
        self.config = config
        L, O = chunk.chunk_frames, chunk.overlap_frames  # noqa: E741 - the design's names
        rungs = [Rung(steps, L, O)]
        if steps > 2:
            rungs.append(Rung(max(1, steps // 2), L, O))
        if steps > 1:
            rungs.append(Rung(1, L, O))
        if L >= 4:
            short = max(2, L // 2)
            rungs.append(Rung(1, short, min(O, short - 1) if O else 0))
        rungs.append(Rung(1, L, O, passthrough=True))
        self.rungs = rungs
        self.level = 0
        self._recent: collections.deque[bool] = collections.deque(maxlen=config.degrade_window_frames)
        self._clean = 0
        self.changes = 0
        self.recover_after = config.recover_after_frames  # grows while climbs fail
        self._since_climb: int | None = None  # frames since the last climb, while on trial

    @property
    def rung(self) -> Rung:
        return self.rungs[self.level]

    def record(self, late: bool) -> bool:
        """Record one emitted frame; return True when the rung changed."""
        self._recent.append(late)
        self._clean = 0 if late else self._clean + 1
        if self._since_climb is not None:
            self._since_climb += 1
            if self._since_climb >= self.config.recover_after_frames:  # the climb held: back to the base wait
                self._since_climb = None
                self.recover_after = self.config.recover_after_frames
        if sum(self._recent) >= self.config.degrade_late_frames and self.level < len(self.rungs) - 1:
            self.level += 1
            self._recent.clear()
            self._clean = 0
            self.changes += 1
            if self._since_climb is not None:  # the last climb failed: wait longer next time
                self.recover_after = min(2 * self.recover_after, 4 * self.config.recover_after_frames)
                self._since_climb = None
            log.warning("frames are missing their deadline; degrading to %s", self.rung)
            return True
        if self.level > 0 and self._clean >= self.recover_after:
            self.level -= 1
            self._clean = 0
            self.changes += 1
            self._since_climb = 0
            log.info("deadlines met again; stepping back up to %s", self.rung)
            return True
        return False

    def describe(self) -> str:
        r = self.rung
        if r.passthrough:
            return "pass-through (no model)"
        return f"{r.steps} step(s), chunks of {r.chunk_frames}"


@dataclass
class OutputWindow:
    """Output timing and frame kinds over recent seconds, for live stats (server page, live
    stats line): fps and added latency over the last 2 s, what the frames were over the last
    10 s, and whether the model is keeping up."""

    frames: collections.deque = field(default_factory=lambda: collections.deque(maxlen=900))
    # (emitted s, added s, kind value or "", late)

    def add(self, emitted_s: float, added_s: float, kind: str = "", late: bool = False) -> None:
        self.frames.append((emitted_s, added_s, kind, late))

    def summary(self, now: float) -> dict[str, float]:
        recent = [(t, a) for t, a, _, _ in self.frames if now - t <= 2.0]
        if not recent:
            return {"fps": 0.0, "added_latency_ms_p50": 0.0, "added_latency_ms_p95": 0.0}
        span = max(now - recent[0][0], 1e-3)
        lat = sorted(a for _, a in recent)
        return {
            "fps": round(len(recent) / max(span, 0.5), 1),
            "added_latency_ms_p50": round(1000 * lat[len(lat) // 2], 1),
            "added_latency_ms_p95": round(1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))], 1),
        }

    def health(self, now: float, degrade_level: int, rung: str, window_s: float = 10.0) -> dict[str, object]:
        """Over the last ``window_s``: shares of frame kinds, late frames, and a verdict. The
        model is *not keeping up* when frames were late or the ladder is above its first rung."""
        recent = [(k, late) for t, _, k, late in self.frames if now - t <= window_s]
        n = len(recent)
        kinds: dict[str, int] = {}
        for k, _ in recent:
            kinds[k] = kinds.get(k, 0) + 1
        late = sum(1 for _, x in recent if x)
        keeping_up = late == 0 and degrade_level == 0
        passed = kinds.get("passthrough", 0)
        if keeping_up:
            status = "keeping up"
        else:
            status = (
                f"model NOT keeping up: {late} late and {passed} of {n} frames passed through in the last "
                f"{window_s:g} s; degrade level {degrade_level} ({rung})"
            )
        return {
            "keeping_up": keeping_up,
            "status": status,
            "recent_s": window_s,
            "recent_frames": n,
            "recent_late": late,
            "recent_kinds": kinds,
        }
