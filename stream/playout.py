"""Fixed-delay playout support: the degrade ladder that keeps deadlines.

Every frame captured at t leaves at t + D. When frames miss their deadline, the ladder steps
down: fewer sampler steps, then one step, then shorter chunks, then pass-through. After a
long enough run with no late frame it steps back up one rung.
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

    @property
    def rung(self) -> Rung:
        return self.rungs[self.level]

    def record(self, late: bool) -> bool:
        """Record one emitted frame; return True when the rung changed."""
        self._recent.append(late)
        self._clean = 0 if late else self._clean + 1
        if sum(self._recent) >= self.config.degrade_late_frames and self.level < len(self.rungs) - 1:
            self.level += 1
            self._recent.clear()
            self._clean = 0
            self.changes += 1
            log.warning("frames are missing their deadline; degrading to %s", self.rung)
            return True
        if self.level > 0 and self._clean >= self.config.recover_after_frames:
            self.level -= 1
            self._clean = 0
            self.changes += 1
            log.info("deadlines met again; stepping back up to %s", self.rung)
            return True
        return False


@dataclass
class OutputWindow:
    """Output timing over the last two seconds, for live stats (server page, live stats line)."""

    frames: collections.deque = field(default_factory=lambda: collections.deque(maxlen=300))  # (emitted, added s)

    def add(self, emitted_s: float, added_s: float) -> None:
        self.frames.append((emitted_s, added_s))

    def summary(self, now: float) -> dict[str, float]:
        recent = [(t, a) for t, a in self.frames if now - t <= 2.0]
        if not recent:
            return {"fps": 0.0, "added_latency_ms_p50": 0.0, "added_latency_ms_p95": 0.0}
        span = max(now - recent[0][0], 1e-3)
        lat = sorted(a for _, a in recent)
        return {
            "fps": round(len(recent) / max(span, 0.5), 1),
            "added_latency_ms_p50": round(1000 * lat[len(lat) // 2], 1),
            "added_latency_ms_p95": round(1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))], 1),
        }
