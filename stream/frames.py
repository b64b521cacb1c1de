"""Frame types that travel through a session. Every frame carries integer pts and its time_base."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

MICROSECONDS = Fraction(1, 1_000_000)  # the time base live sources stamp frames in


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """One RGB video frame. ``image`` is HxWx3 uint8; media time = pts * time_base seconds."""

    image: np.ndarray
    pts: int
    time_base: Fraction

    @property
    def time_s(self) -> float:
        return float(self.pts * self.time_base)


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """A block of PCM audio: ``samples`` is (n_samples, channels) float32 in [-1, 1].

    ``pts`` (in ``time_base`` units) is the media time of the first sample.
    """

    samples: np.ndarray
    sample_rate_hz: int
    pts: int
    time_base: Fraction

    @property
    def time_s(self) -> float:
        return float(self.pts * self.time_base)

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / self.sample_rate_hz


class FrameKind(enum.Enum):
    """How an output frame's mouth region was produced."""

    GENERATED = "generated"  # the model's mouth, on time
    REST = "rest"  # silence: the still mouth at rest
    HOLD = "hold"  # model late or failed: last good mouth held
    PASSTHROUGH = "passthrough"  # no face, or the degrade ladder's last rung


@dataclass(slots=True)
class OutputFrame:
    """A video frame leaving the session, with how and when it left."""

    frame: VideoFrame
    kind: FrameKind
    deadline_s: float
    emitted_at_s: float
    late: bool = False
    speech: bool = False
    stats: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class OutputAudio:
    """An audio frame leaving the session, delayed by the same amount as the video."""

    frame: AudioFrame
    deadline_s: float
    emitted_at_s: float
