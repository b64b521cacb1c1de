"""A talking avatar on the engine: speech audio in (a voice agent's TTS), lip-synced video of a
face plus that same audio out, paced in real time. Framework-neutral; the LiveKit Agents and
Pipecat adapters (``stream/integrations``) wrap it.

The face is a still portrait or an idle clip that loops. Media time is wall-clock time since
the avatar started: an idle frame enters the engine every frame period, and audio is laid on
the timeline where it arrives (a TTS burst faster than real time queues behind the audio
before it, and is fed to the engine at most ``FEED_AHEAD_S`` ahead). Output leaves at the
engine's deadlines (``playout.delay_ms`` after its media time), video and the audio of the
same media time together.

- :meth:`Avatar.push_audio` adds speech (any rate and channel count, float32 or int16);
- :meth:`Avatar.end_segment` marks the end of an utterance: an ``end`` event follows its last
  audio out;
- :meth:`Avatar.clear` (the user interrupted): audio not yet played is dropped and the mouth
  goes to rest from the next frame out;
- ``async for ev in avatar.events()``: ``("video", image, media_s, kind)`` (kind: the frame's
  ``FrameKind`` value: generated, rest, ...), ``("audio", samples
  (n, ch) float32, rate, media_s)`` and ``("end", media_s)``, in media-time order.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np

from stream.clock import Clock, MonotonicClock
from stream.config import Config
from stream.errors import InputError
from stream.frames import AudioFrame, VideoFrame
from stream.session import LipSyncSession
from stream.worker import LipSyncModel

log = logging.getLogger(__name__)
# audio is handed to the engine at most this far ahead of the video clock (enough for the model's
# lookahead; what has been handed over is committed, so an utterance after an interruption
# starts at most this much later)
FEED_AHEAD_S = 0.3
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def load_face(path: str, max_seconds: float = 20.0) -> list[np.ndarray]:
    """RGB frames of the avatar's face: one for a still image, the first ``max_seconds`` of a
    clip (looped by the avatar). A file that cannot be read is a one-line InputError."""
    if not os.path.isfile(path):
        raise InputError(f"avatar face {path} does not exist: pass a portrait image or an idle clip")
    frames: list[np.ndarray] = []
    try:
        with av.open(path) as c:
            if not c.streams.video:
                raise InputError(f"avatar face {path} has no picture: pass a portrait image or an idle clip")
            st = c.streams.video[0]
            for f in c.decode(st):
                frames.append(f.to_ndarray(format="rgb24"))
                if f.time is not None and f.time > max_seconds:
                    break
    except av.error.FFmpegError as e:
        raise InputError(f"avatar face {path} cannot be read ({e}): pass a PNG/JPEG portrait or an MP4 clip") from None
    if not frames:
        raise InputError(f"avatar face {path} holds no frame: pass a portrait image or an idle clip")
    # even sizes, as video encoders want them
    h, w = frames[0].shape[:2]
    return [np.ascontiguousarray(f[: h - h % 2, : w - w % 2]) for f in frames]


@dataclass
class _Pending:
    frame: AudioFrame  # media-timed, float32 (n, ch)
    pushed_at: float  # clock time it was given to the avatar


@dataclass
class AvatarStats:
    video_out: int = 0
    audio_out: int = 0
    segments_ended: int = 0
    interruptions: int = 0
    latency_s: list[float] = field(default_factory=list)  # audio in -> its frame out

    def as_dict(self) -> dict[str, Any]:
        lat = np.array(self.latency_s) * 1000 if self.latency_s else np.zeros(1)
        return {
            "video_out": self.video_out,
            "audio_out": self.audio_out,
            "segments_ended": self.segments_ended,
            "interruptions": self.interruptions,
            "latency_ms_p50": float(np.percentile(lat, 50)),
            "latency_ms_p95": float(np.percentile(lat, 95)),
        }


class Avatar:
    def __init__(
        self,
        config: Config,
        model: LipSyncModel,
        face: list[np.ndarray],
        fps: float = 25.0,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or MonotonicClock()
        self.session = LipSyncSession(config, model, self.clock)
        self.face = face
        self.fps = fps
        self.tb = Fraction(1, 90000)
        self.stats = AvatarStats()
        self._start = self.clock.now()
        self._next_video = 0  # index of the next idle frame to push
        self._audio_cursor = 0.0  # media time where the next pushed audio starts
        self._fed_until = 0.0  # media time up to which the engine has audio (speech or silence)
        self._queue: deque[_Pending] = deque()  # audio not yet fed to the engine
        self._fed: deque[tuple[float, float]] = deque()  # (media end, pushed_at) of fed audio
        self._ends: deque[float] = deque()  # media times where segments end
        self._closed = False
        self._wake = asyncio.Event()
        self._last_out = -1.0

    # -- input ----------------------------------------------------------------------
    def media_now(self) -> float:
        return self.clock.now() - self._start

    def push_audio(self, samples: np.ndarray, rate: int) -> None:
        """Speech: (n,) or (n, channels), float in [-1, 1] or int16."""
        x = np.asarray(samples)
        if x.dtype == np.int16:
            x = x.astype(np.float32) / 32768.0
        x = x.astype(np.float32, copy=False)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[0] == 0 or rate <= 0:
            raise InputError(f"avatar audio must be (samples, channels) at a positive rate, got {x.shape} at {rate}")
        start = max(self._audio_cursor, self.media_now(), self._fed_until)
        pts = round(start * rate)
        frame = AudioFrame(x, rate, pts, Fraction(1, rate))
        self._audio_cursor = (pts + x.shape[0]) / rate
        self._queue.append(_Pending(frame, self.clock.now()))
        self._wake.set()

    def end_segment(self) -> None:
        """The utterance is complete: an ``end`` event follows its last audio."""
        self._ends.append(max(self._audio_cursor, self.media_now()))
        self._wake.set()

    def clear(self) -> None:
        """Interrupted: drop what has not been played; the mouth rests from the next frame out."""
        self._queue.clear()
        self._ends.clear()
        t = self._last_out + 1.0 / self.fps if self._last_out >= 0 else self.media_now()
        self.session.interrupt(t)
        self._audio_cursor = max(self.media_now(), self._fed_until)
        self.stats.interruptions += 1
        self._wake.set()

    def pending_audio(self) -> bool:
        """Whether audio given to the avatar has not all left it yet."""
        return bool(self._queue) or bool(self._ends) or self.session.audio_pending > 0

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self.session.close()

    # -- the loop ---------------------------------------------------------------------
    def _feed(self, now_media: float) -> None:
        while self._queue and self._queue[0].frame.time_s <= now_media + FEED_AHEAD_S:
            p = self._queue.popleft()
            self.session.push_audio(p.frame)
            end = p.frame.time_s + p.frame.duration_s
            self._fed.append((end, p.pushed_at))
            self._fed_until = max(self._fed_until, end)
        # between utterances the engine still needs its audio clock to move (a chunk waits for
        # the audio past its last frame): silence up to now, not handed out again
        if self._fed_until < now_media - 0.01:
            n = round((now_media - self._fed_until) * 16000)
            pts = round(self._fed_until * 16000)
            silence = AudioFrame(np.zeros((n, 1), np.float32), 16000, pts, Fraction(1, 16000))
            self.session.push_audio(silence, emit=False)
            self._fed_until = (pts + n) / 16000
        while self._next_video / self.fps <= now_media:
            img = self.face[self._next_video % len(self.face)]
            t = self._next_video / self.fps
            self.session.push_video(VideoFrame(img, round(t / self.tb), self.tb))
            self._next_video += 1

    async def events(self) -> AsyncIterator[tuple[Any, ...]]:
        while not self._closed:
            now_media = self.media_now()
            self._feed(now_media)
            frames, audio = self.session.pull(self.clock.now())
            out: list[tuple[float, tuple[Any, ...]]] = []
            for f in frames:
                t = f.frame.time_s
                out.append((t, ("video", f.frame.image, t, f.kind.value)))
                self._last_out = max(self._last_out, t)
                while self._fed and self._fed[0][0] <= t:
                    _, pushed_at = self._fed.popleft()
                    self.stats.latency_s.append(self.clock.now() - pushed_at)
            for a in audio:
                out.append((a.frame.time_s, ("audio", a.frame.samples, a.frame.sample_rate_hz, a.frame.time_s)))
            out.sort(key=lambda x: (x[0], x[1][0] != "video"))  # a frame's video, then its audio
            for _, ev in out:
                if ev[0] == "video":
                    self.stats.video_out += 1
                else:
                    self.stats.audio_out += 1
                yield ev
            while self._ends and self._ends[0] <= self._last_out and not self._queue:
                t = self._ends.popleft()
                self.stats.segments_ended += 1
                yield ("end", t)
            nd = self.session.next_deadline()
            wait = 1.0 / self.fps if nd is None else max(0.0, min(nd - self.clock.now(), 1.0 / self.fps))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except TimeoutError:
                pass
