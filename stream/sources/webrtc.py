"""Media from a WebRTC peer (aiortc remote tracks) into engine frames.

RTP timestamps start at a random value per track, so on their own they say nothing about how a
peer's audio and video line up; arrival times do not either (the receiver's audio jitter buffer
holds a few packets, video decoding takes its own time). The sender says it in its RTCP sender
reports: each maps one RTP timestamp of a track to the sender's wall clock (NTP). Frames are
stamped on that common sender clock, shifted once onto the receiving clock (:class:`PeerTimeline`),
so the audio and video of a peer keep the alignment they were captured with (the standard
RTP lip-sync mechanism, RFC 3550 section 6.4.1). Before a track's first sender report, and for
audio borrowed from another peer, a track keeps the spacing of its own timestamps anchored at
arrival (:class:`Stamper`). Either is re-anchored to arrival when it drifts more than
``tolerance_s`` from it (a sender pause, clock drift, a lost report).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np

from stream.clock import Clock
from stream.frames import MICROSECONDS as TIME_BASE
from stream.frames import AudioFrame, VideoFrame

log = logging.getLogger(__name__)


class Stamper:
    """Media time (s, on the receiving clock relative to ``origin_s``) for each frame of one track."""

    def __init__(self, origin_s: float, tolerance_s: float = 0.1) -> None:
        self.origin_s = origin_s
        self.tolerance_s = tolerance_s
        self._base: float | None = None  # media time = base + frame time
        self._last = -1.0
        self.reanchored = 0

    def stamp(self, arrival_s: float, frame_time_s: float | None) -> float:
        arrival = arrival_s - self.origin_s
        if frame_time_s is None:
            t = arrival
        else:
            if self._base is None:
                self._base = arrival - frame_time_s
            t = self._base + frame_time_s
            if abs(t - arrival) > self.tolerance_s:
                if self._last >= 0:
                    self.reanchored += 1
                self._base = arrival - frame_time_s
                t = arrival
        return self.keep_increasing(t)

    def keep_increasing(self, t: float) -> float:
        """``t``, or just after the previous stamp if it is not later (stamps strictly increase)."""
        t = max(t, self._last + 1e-6)
        self._last = t
        return t


class PeerTimeline:
    """Sender-report mapping for the tracks of one peer (see the module docstring)."""

    def __init__(self, origin_s: float, tolerance_s: float = 0.25) -> None:
        self.origin_s = origin_s
        self.tolerance_s = tolerance_s
        self.reports: dict[str, tuple[float, int]] = {}  # kind -> (sender NTP s, RTP timestamp)
        # kind -> the RTP timestamp of pts 0 (aiortc's receiver starts decoded pts at 0)
        self.rtp_origin: dict[str, Callable[[], int | None]] = {}
        self.offset_s: float | None = None  # receiving media time = sender time + offset
        self.reanchored = 0

    def on_sender_report(self, kind: str, ntp_timestamp: int, rtp_timestamp: int) -> None:
        self.reports[kind] = (ntp_timestamp / 2**32, rtp_timestamp)

    def sender_time(self, kind: str, pts: int, clock_hz: float) -> float | None:
        """Sender wall-clock time of a decoded frame's ``pts`` (None until a report arrived)."""
        rep = self.reports.get(kind)
        origin = self.rtp_origin[kind]() if kind in self.rtp_origin else None
        if rep is None or origin is None:
            return None
        ntp_s, rtp_sr = rep
        diff = (pts + origin - rtp_sr) & 0xFFFFFFFF
        if diff >= 2**31:  # before the report (RTP timestamps wrap at 2^32)
            diff -= 2**32
        return ntp_s + diff / clock_hz

    def stamp(self, arrival_s: float, sender_s: float) -> float:
        arrival = arrival_s - self.origin_s
        if self.offset_s is None:
            self.offset_s = arrival - sender_s
        t = sender_s + self.offset_s
        if abs(t - arrival) > self.tolerance_s:
            self.reanchored += 1
            self.offset_s = arrival - sender_s
            t = arrival
        return t


def watch_sender_reports(receiver, kind: str, timeline: PeerTimeline) -> None:  # noqa: ANN001
    """Feed the RTCP sender reports reaching an aiortc ``RTCRtpReceiver`` to ``timeline``.

    aiortc keeps sender reports to itself (it only exposes their wall-clock half in getStats) and
    starts the pts of decoded frames at 0, so this reaches into the receiver: its RTCP handler is
    wrapped on this one instance and the RTP timestamp of pts 0 is read from its timestamp
    mapper. aiortc is pinned (pyproject) and tests/test_server.py checks A/V alignment through it.
    """
    from aiortc.rtp import RtcpSrPacket

    mapper = receiver._RTCRtpReceiver__timestamp_mapper
    timeline.rtp_origin[kind] = lambda: mapper._origin
    inner = receiver._handle_rtcp_packet

    async def handle(packet: object) -> None:
        if isinstance(packet, RtcpSrPacket):
            timeline.on_sender_report(kind, packet.sender_info.ntp_timestamp, packet.sender_info.rtp_timestamp)
        await inner(packet)

    receiver._handle_rtcp_packet = handle


def _frame_time(frame: av.VideoFrame | av.AudioFrame) -> float | None:
    if frame.pts is None or frame.time_base is None:
        return None
    return float(frame.pts * frame.time_base)


def to_video_frame(frame: av.VideoFrame, media_s: float) -> VideoFrame:
    return VideoFrame(frame.to_ndarray(format="rgb24"), round(media_s / TIME_BASE), TIME_BASE)


def to_audio_frame(frame: av.AudioFrame, media_s: float) -> AudioFrame:
    """Any PyAV audio frame as float32 (samples, channels)."""
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        samples = arr.reshape(channels, -1).T
    else:
        samples = arr.reshape(-1, channels)
    if samples.dtype == np.int16:
        samples = samples.astype(np.float32) / 32768.0
    elif samples.dtype == np.int32:
        samples = samples.astype(np.float32) / 2147483648.0
    else:
        samples = samples.astype(np.float32)
    rate = frame.sample_rate
    return AudioFrame(np.ascontiguousarray(samples), rate, round(media_s * rate), Fraction(1, rate))


async def pump(
    track,  # noqa: ANN001 - an aiortc MediaStreamTrack
    kind: str,
    clock: Clock,
    origin_s: float,
    push: Callable[[VideoFrame | AudioFrame], None] | None,
    on_frame: Callable[[], None] | None = None,
    timeline: PeerTimeline | None = None,
) -> int:
    """Read ``track`` until it ends; stamp each frame (on ``timeline`` once its sender reports
    arrive) and hand it to ``push`` (None: discard). Returns the number of frames read. A frame
    that cannot be converted is skipped and logged."""
    from aiortc.mediastreams import MediaStreamError

    stamper = Stamper(origin_s)
    n = 0
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return n
        n += 1
        if on_frame is not None:
            on_frame()
        if push is None:
            continue
        now = clock.now()
        sender_s = None
        if timeline is not None and frame.pts is not None and frame.time_base is not None:
            sender_s = timeline.sender_time(kind, int(frame.pts), 1 / float(frame.time_base))
        if sender_s is not None:
            assert timeline is not None
            t = stamper.keep_increasing(timeline.stamp(now, sender_s))
        else:
            t = stamper.stamp(now, _frame_time(frame))
        try:
            item = to_video_frame(frame, t) if kind == "video" else to_audio_frame(frame, t)
        except (ValueError, av.error.FFmpegError) as exc:  # pragma: no cover - decoder output is well formed
            log.warning("skipped a %s frame that could not be converted: %s", kind, exc)
            continue
        push(item)
        await asyncio.sleep(0)  # let the playout run between bursts
