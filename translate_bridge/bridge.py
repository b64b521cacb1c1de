"""Dubbed audio drives a lip-sync session.

Offline (:func:`dub_track`): the placed segments become one continuous track on the video's
timeline, silence in the gaps, which then drives the ordinary file pipeline; the original audio
is never used. Live (:class:`LiveDub`): placed segments are pushed into a running session as
they complete, and the gaps are filled with silence just before their deadline, so the original
speech never reaches the output and the mouth rests between dubs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np

from stream.frames import AudioFrame
from translate_bridge.align import AlignConfig, Aligner, Placement
from translate_bridge.protocol import Assembler, Event, Limits, Segment

log = logging.getLogger(__name__)

RATE_HZ = 48000
BLOCK_S = 0.02


def _to_rate(audio: np.ndarray, rate: int, out_rate: int) -> np.ndarray:
    if rate == out_rate or audio.size == 0:
        return audio.astype(np.float32)
    rs = av.AudioResampler(format="flt", layout="mono", rate=out_rate)
    frame = av.AudioFrame.from_ndarray(audio[None, :].astype(np.float32), format="flt", layout="mono")
    frame.sample_rate = rate
    parts = [f.to_ndarray().reshape(-1) for f in rs.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in rs.resample(None)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


@dataclass
class DubReport:
    placements: list[Placement]
    dropped: list[str]
    max_lag_s: float
    cut_s: float
    sped_up: int

    def summary(self) -> str:
        return (
            f"dub: {len(self.placements)} segments placed ({self.sped_up} sped up, {len(self.dropped)} dropped), "
            f"running delay at most {1000 * self.max_lag_s:.0f} ms, {self.cut_s:.2f} s cut to keep it bounded"
        )


def dub_track(
    segments: list[Segment], duration_s: float, aligner: Aligner | None = None, rate: int = RATE_HZ
) -> tuple[np.ndarray, DubReport]:
    """(mono float32 track of max(duration_s, last dub end) at ``rate``, report)."""
    aligner = aligner or Aligner()
    placed = [p for p in (aligner.place(s) for s in segments) if p is not None]
    end = max([duration_s, *(p.end_s for p in placed)])
    track = np.zeros(int(np.ceil(end * rate)), np.float32)
    for p in placed:
        x = _to_rate(p.audio, p.sample_rate_hz, rate)
        a = round(p.start_s * rate)
        n = min(x.size, track.size - a)
        track[a : a + n] += x[:n]
    report = DubReport(placed, list(aligner.dropped), aligner.max_lag_seen_s, aligner.cut_total_s, aligner.sped_up)
    return track, report


@dataclass
class LiveDub:
    """Feeds a live session with dubbed audio (see the module docstring).

    ``push(AudioFrame)`` goes into the session; ``media_now()`` is the session's current media
    time; ``deadline_margin_s``: gaps are filled with silence this long before audio at that
    time would be due (the session's delay D minus this is the provider's latency budget).
    """

    push: Callable[[AudioFrame], None]
    media_now: Callable[[], float]
    delay_s: float
    deadline_margin_s: float = 0.3
    aligner: Aligner = field(default_factory=Aligner)
    assembler: Assembler = field(default_factory=Assembler)
    covered_s: float = 0.0  # audio has been pushed up to here (source timeline)
    late_s: float = 0.0  # dubbed audio that arrived after its slot was filled with silence
    segments: int = 0

    @classmethod
    def for_session(
        cls, session: Any, push: Callable[[AudioFrame], None], media_now: Callable[[], float], bridge: Any
    ) -> LiveDub:
        """A dub that drives ``session`` (a :class:`stream.session.LipSyncSession`) from now on,
        configured by a ``[bridge]`` config section: the original audio still queued in the
        session is dropped (never heard) and silence covers from the oldest time not yet due."""
        align, limits = policy(bridge)
        session.drop_pending_audio()
        return cls(
            push,
            media_now,
            session.delay_s,
            bridge.deadline_margin_ms / 1000,
            Aligner(align),
            Assembler(limits),
            covered_s=max(0.0, media_now() - session.delay_s),
        )

    def on_event(self, event: Event) -> list[Placement]:
        placed = []
        for seg in self.assembler.feed(event):
            p = self.aligner.place(seg)
            if p is not None:
                self._push_placement(p)
                placed.append(p)
                self.segments += 1
        return placed

    def _push_block(self, samples: np.ndarray, start_s: float) -> None:
        pts = round(start_s * RATE_HZ)
        self.push(AudioFrame(samples[:, None], RATE_HZ, pts, Fraction(1, RATE_HZ)))

    def _silence_until(self, t: float) -> None:
        block = round(BLOCK_S * RATE_HZ)
        while self.covered_s < t - 1e-6:
            n = min(block, max(1, round((t - self.covered_s) * RATE_HZ)))
            self._push_block(np.zeros(n, np.float32), self.covered_s)
            self.covered_s += n / RATE_HZ

    def _push_placement(self, p: Placement) -> None:
        x = _to_rate(p.audio, p.sample_rate_hz, RATE_HZ)
        start = p.start_s
        if start < self.covered_s:  # its beginning is already past: play the rest
            skip = round((self.covered_s - start) * RATE_HZ)
            self.late_s += min(skip, x.size) / RATE_HZ
            x = x[skip:]
            start = self.covered_s
        self._silence_until(start)
        block = round(BLOCK_S * RATE_HZ)
        for i in range(0, x.size, block):
            self._push_block(x[i : i + block], start + i / RATE_HZ)
        self.covered_s = start + x.size / RATE_HZ

    def tick(self) -> None:
        """Fill the gap up to what is about to be due with silence (call every ~100 ms)."""
        self._silence_until(self.media_now() - self.delay_s + self.deadline_margin_s)


def policy(cfg) -> tuple[AlignConfig, Limits]:  # noqa: ANN001 - a stream.config.BridgeConfig
    """The duration policy and provider limits of a ``[bridge]`` config section."""
    return (
        AlignConfig(max_speed=cfg.max_speed, tail_s=cfg.tail_s, max_lag_s=max(cfg.max_lag_s, cfg.tail_s)),
        Limits(max_message_bytes=cfg.max_message_bytes, max_segment_s=cfg.max_segment_s),
    )
