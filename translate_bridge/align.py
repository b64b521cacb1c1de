"""The duration policy: where each dubbed segment plays, how fast, and how much delay that costs.

Dubbed speech is rarely as long as the speech it translates (English -> Japanese runs longer,
for instance), and the delay must not grow over a talk. Times here are on the *source*
timeline (the video's media time); the engine's playout delay D is added to everything alike.

For each complete segment, in arrival order:

1. It starts at its source anchor (``source_start_s``), or when the previous dub ends if that
   is later: dubs never overlap, and a segment that arrives out of order or overlapping waits
   its turn.
2. It should end by its own source end plus ``tail_s``. If it would not, it is sped up
   (pitch-preserving time-stretch, FFmpeg's ``atempo``) by what it takes, at most
   ``max_speed``; it is never slowed down: gaps hold the mouth at rest.
3. Re-anchoring: its end may not pass ``source_end_s + max_lag_s``; what would is cut (with a
   short fade). So the running delay (start - anchor) never exceeds ``max_lag_s`` and each
   sentence starts on its own anchor again once the previous one is over. A segment whose
   whole span is already that far in the past is dropped.

``Aligner.lag_s`` is the running delay of the latest segment; ``max_lag_seen_s`` the worst.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from translate_bridge.protocol import Segment

FADE_S = 0.03


@dataclass(frozen=True)
class AlignConfig:
    max_speed: float = 1.25  # fastest speed-up of a dub that would overrun its span
    tail_s: float = 0.25  # a dub may run this far past its span's end before it is sped up
    max_lag_s: float = 1.5  # bound on the running delay (start - anchor); beyond it the dub is cut

    def __post_init__(self) -> None:
        if not 1.0 <= self.max_speed <= 2.0:
            raise ValueError(f"max_speed = {self.max_speed} must be within 1.0 to 2.0")
        if self.tail_s < 0 or self.max_lag_s < self.tail_s:
            raise ValueError("tail_s must be >= 0 and max_lag_s >= tail_s")


@dataclass
class Placement:
    id: str
    start_s: float  # on the source timeline
    audio: np.ndarray  # mono float32, after stretch and cut
    sample_rate_hz: int
    speed: float
    lag_s: float  # start_s - source_start_s
    cut_s: float  # dubbed audio dropped to keep the delay bounded
    text: str = ""

    @property
    def end_s(self) -> float:
        return self.start_s + self.audio.shape[0] / self.sample_rate_hz


def stretch(audio: np.ndarray, rate: int, speed: float) -> np.ndarray:
    """Mono float32 ``audio`` played ``speed`` times faster, pitch kept (FFmpeg atempo)."""
    if abs(speed - 1.0) < 1e-3 or audio.size == 0:
        return audio.astype(np.float32)
    graph = av.filter.Graph()
    src = graph.add_abuffer(format="flt", sample_rate=rate, layout="mono", time_base=Fraction(1, rate))
    tempo = graph.add("atempo", f"{speed:.6f}")
    sink = graph.add("abuffersink")
    src.link_to(tempo)
    tempo.link_to(sink)
    graph.configure()
    out: list[np.ndarray] = []
    block = rate // 10
    for i in range(0, audio.size, block):
        frame = av.AudioFrame.from_ndarray(audio[None, i : i + block].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = i
        frame.time_base = Fraction(1, rate)
        graph.push(frame)
        out.extend(_drain(graph))
    graph.push(None)
    out.extend(_drain(graph))
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def _drain(graph: av.filter.Graph) -> list[np.ndarray]:
    got: list[np.ndarray] = []
    while True:
        try:
            f = graph.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return got
        got.append(f.to_ndarray().reshape(-1))


@dataclass
class Aligner:
    config: AlignConfig = field(default_factory=AlignConfig)
    end_s: float = 0.0  # where the last placed dub ends
    lag_s: float = 0.0
    max_lag_seen_s: float = 0.0
    cut_total_s: float = 0.0
    dropped: list[str] = field(default_factory=list)
    sped_up: int = 0

    def place(self, seg: Segment) -> Placement | None:
        """Where and how ``seg`` plays, or None if it is dropped (entirely too late)."""
        c = self.config
        rate = seg.sample_rate_hz
        mono = seg.audio.mean(axis=1).astype(np.float32) if seg.audio.ndim == 2 else seg.audio.astype(np.float32)
        start = max(seg.source_start_s, self.end_s)
        hard_end = seg.source_end_s + c.max_lag_s
        if start >= hard_end - 0.05:
            self.dropped.append(seg.id)
            return None
        natural = mono.shape[0] / rate
        available = seg.source_end_s + c.tail_s - start
        speed = 1.0
        if natural > available:
            speed = min(c.max_speed, natural / max(available, 1e-3))
        audio = stretch(mono, rate, speed) if speed > 1.0 else mono
        if speed > 1.0:
            self.sped_up += 1
        cut = 0.0
        room = round((hard_end - start) * rate)
        if audio.shape[0] > room:
            cut = (audio.shape[0] - room) / rate
            audio = audio[:room].copy()
            n = min(round(FADE_S * rate), audio.shape[0])
            audio[audio.shape[0] - n :] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
        self.end_s = start + audio.shape[0] / rate
        self.lag_s = start - seg.source_start_s
        self.max_lag_seen_s = max(self.max_lag_seen_s, self.lag_s)
        self.cut_total_s += cut
        return Placement(seg.id, start, audio, rate, speed, self.lag_s, cut, seg.text)
