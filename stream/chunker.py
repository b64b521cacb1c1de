"""Chunk schedule: the model sees L frames with O frames overlapping the previous chunk.

Audio windows are cut per frame from the continuous 16 kHz ring (never per chunk), so the
features of a frame do not depend on where chunk boundaries fall. Overlapping frames get a
linear cross-fade weight: for overlap position j (0..O-1) the newer chunk weighs (j+1)/(O+1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.audio import SAMPLE_RATE_HZ, AudioRing
from stream.config import ChunkConfig


@dataclass(frozen=True)
class ChunkPlan:
    start: int  # first frame index
    stop: int  # one past the last frame index
    overlap: int  # how many leading frames were covered by the previous chunk

    def weight(self, index: int) -> float:
        j = index - self.start
        return (j + 1) / (self.overlap + 1) if j < self.overlap else 1.0


class Chunker:
    """Decides which frame ranges form the next chunk. The ladder may shorten chunks."""

    def __init__(self, config: ChunkConfig) -> None:
        self.config = config
        self.chunk_frames = config.chunk_frames
        self.overlap_frames = config.overlap_frames
        self.next_start = 0  # first frame not yet covered by a planned chunk
        self._prev_stop = 0  # stop of the last planned chunk (for overlap bookkeeping)

    @property
    def lookahead_s(self) -> float:
        return self.config.audio_after_ms / 1000

    def set_length(self, chunk_frames: int, overlap_frames: int) -> None:
        self.chunk_frames = chunk_frames
        self.overlap_frames = min(overlap_frames, chunk_frames - 1)

    def plan(self, n_frames: int, has_face: list[bool] | None = None, final: bool = False) -> ChunkPlan | None:
        """The next chunk over frames [0, n_frames) if it is complete (or ``final``), else None.

        Does not change state: call :meth:`commit` once the chunk is used. ``has_face[k]`` says
        whether frame ``next_start + k`` has a face; chunks never span a frame without one
        (such frames are skipped: they pass through)."""
        start = self.next_start
        if has_face is not None:
            while start < n_frames and not has_face[start - self.next_start]:
                start += 1
        L = self.chunk_frames
        avail = n_frames - start
        if avail <= 0 or (avail < L and not final):
            return None
        stop = start + min(L, avail)
        if has_face is not None:
            for i in range(start, stop):
                if not has_face[i - self.next_start]:
                    stop = i
                    break
        overlap = max(0, min(self._prev_stop - start, stop - start))
        return ChunkPlan(start, stop, overlap)

    def commit(self, plan: ChunkPlan) -> None:
        n = plan.stop - plan.start
        self.next_start = plan.start + (max(1, n - self.overlap_frames) if n == self.chunk_frames else n)
        self._prev_stop = plan.stop

    def skip_to(self, index: int) -> None:
        """Never plan frames before ``index`` (they have already left)."""
        self.next_start = max(self.next_start, index)


def audio_windows(ring: AudioRing, times_s: np.ndarray, before_ms: int, after_ms: int) -> np.ndarray:
    """(len(times), n) windows of 16 kHz audio around each frame time."""
    before = round(before_ms * SAMPLE_RATE_HZ / 1000)
    after = round(after_ms * SAMPLE_RATE_HZ / 1000)
    return np.stack([ring.read(round(t * SAMPLE_RATE_HZ) - before, before + after) for t in times_s])
