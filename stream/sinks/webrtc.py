"""Engine output as aiortc tracks: the session's playout puts frames in at their deadlines and the
RTP sender takes them out as they come, so what leaves on the wire keeps the engine's timing.

Each track holds a bounded queue (``max_queue_ms``); when the sender falls behind the oldest
frame is dropped and counted, so a slow peer never delays the others or grows memory.
"""

from __future__ import annotations

import asyncio
from fractions import Fraction

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from stream.frames import OutputAudio, OutputFrame

VIDEO_CLOCK_HZ = 90000


class _QueueTrack(MediaStreamTrack):
    def __init__(self, max_items: int) -> None:
        super().__init__()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._max_items = max_items
        self.dropped = 0
        self.sent = 0

    def _put(self, item: object) -> None:
        if self.readyState != "live":
            return
        while self._queue.qsize() >= self._max_items:
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)

    async def _get(self) -> object:
        if self.readyState != "live":
            raise MediaStreamError
        item = await self._queue.get()
        if item is None:
            raise MediaStreamError
        self.sent += 1
        return item

    def stop(self) -> None:
        if self.readyState == "live":
            self._queue.put_nowait(None)  # wakes a waiting recv()
        super().stop()


class OutputVideoTrack(_QueueTrack):
    """The lip-synced video. pts (90 kHz) follow each frame's deadline on the session clock."""

    kind = "video"

    def __init__(self, origin_s: float, max_queue_ms: int = 1000, fps_hint: float = 30.0) -> None:
        super().__init__(max(2, int(max_queue_ms / 1000 * fps_hint)))
        self.origin_s = origin_s
        self._last_pts = -1

    def put(self, out: OutputFrame) -> None:
        self._put(out)

    async def recv(self) -> av.VideoFrame:
        out = await self._get()
        assert isinstance(out, OutputFrame)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(out.frame.image), format="rgb24")
        pts = max(self._last_pts + 1, round((out.deadline_s - self.origin_s) * VIDEO_CLOCK_HZ))
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = Fraction(1, VIDEO_CLOCK_HZ)
        return frame


class OutputAudioTrack(_QueueTrack):
    """The delayed audio, as s16 blocks at the rate it came in (the Opus encoder resamples)."""

    kind = "audio"

    def __init__(self, max_queue_ms: int = 1000) -> None:
        super().__init__(max(4, max_queue_ms // 10))
        self._next_pts: int | None = None
        self._rate: int | None = None

    def put(self, out: OutputAudio) -> None:
        self._put(out)

    async def recv(self) -> av.AudioFrame:
        out = await self._get()
        assert isinstance(out, OutputAudio)
        af = out.frame
        samples = af.samples
        if samples.shape[1] > 2:  # Opus here takes mono or stereo
            samples = samples.mean(axis=1, keepdims=True)
        pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
        layout = "mono" if pcm.shape[1] == 1 else "stereo"
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout=layout)
        frame.sample_rate = af.sample_rate_hz
        if self._rate != af.sample_rate_hz or self._next_pts is None:
            self._rate = af.sample_rate_hz
            self._next_pts = 0 if self._next_pts is None else self._next_pts
        frame.pts = self._next_pts
        frame.time_base = Fraction(1, af.sample_rate_hz)
        self._next_pts += pcm.shape[0]
        return frame
