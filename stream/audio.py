"""Audio input: any rate / channel count -> 16 kHz mono float32, kept in a ring buffer
indexed by absolute sample number (sample i is at media time i / 16000 s)."""

from __future__ import annotations

import logging

import av
import numpy as np

from stream.frames import AudioFrame

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16000


def sanitize(samples: np.ndarray) -> tuple[np.ndarray, int]:
    """Return float32 (n, channels) samples with NaN/inf replaced by 0 and clipped to [-1, 1],
    and the number of samples that were not finite."""
    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[:, None]
    if x.dtype.kind == "i":
        x = x.astype(np.float32) / float(-np.iinfo(x.dtype).min)
    elif x.dtype.kind == "u":  # unsigned PCM is centred on half its range (e.g. 128 for 8-bit)
        half = float(np.iinfo(x.dtype).max // 2 + 1)
        x = (x.astype(np.float32) - half) / half
    else:
        x = x.astype(np.float32, copy=False)
    bad = ~np.isfinite(x)
    n_bad = int(bad.sum())
    if n_bad:
        x = np.where(bad, 0.0, x).astype(np.float32)
    return np.clip(x, -1.0, 1.0), n_bad


class AudioRing:
    """A fixed-capacity ring of 16 kHz mono samples addressed by absolute sample index.

    Overflow policy: the oldest samples are overwritten. Reading samples that were never
    written (before the stream, in a gap, or already overwritten) returns zeros.
    """

    def __init__(self, capacity_ms: int, sample_rate_hz: int = SAMPLE_RATE_HZ) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.capacity = int(capacity_ms * sample_rate_hz / 1000)
        self._buf = np.zeros(self.capacity, np.float32)
        self.end_index = 0  # one past the newest written sample
        self._start_index = 0  # oldest valid sample

    @property
    def end_s(self) -> float:
        return self.end_index / self.sample_rate_hz

    def write(self, start_index: int, samples: np.ndarray) -> None:
        n = samples.shape[0]
        if n == 0:
            return
        if start_index > self.end_index:  # gap: zero-fill it
            self.write(self.end_index, np.zeros(min(start_index - self.end_index, self.capacity), np.float32))
            start_index = max(start_index, self.end_index)
        if n > self.capacity:
            samples = samples[-self.capacity :]
            start_index += n - self.capacity
            n = self.capacity
        pos = start_index % self.capacity
        first = min(n, self.capacity - pos)
        self._buf[pos : pos + first] = samples[:first]
        self._buf[: n - first] = samples[first:]
        self.end_index = max(self.end_index, start_index + n)
        self._start_index = max(self._start_index, self.end_index - self.capacity)

    def read(self, start_index: int, n: int) -> np.ndarray:
        out = np.zeros(n, np.float32)
        lo = max(start_index, self._start_index)
        hi = min(start_index + n, self.end_index)
        if hi <= lo:
            return out
        idx = np.arange(lo, hi) % self.capacity
        out[lo - start_index : hi - start_index] = self._buf[idx]
        return out


class AudioInput:
    """Converts incoming audio frames to 16 kHz mono and writes them into an :class:`AudioRing`.

    The first frame's pts anchors the sample index; later frames are placed at their own pts
    (gaps are zero-filled, overlaps overwrite). Non-finite samples are replaced by 0 and counted.
    """

    def __init__(self, ring: AudioRing) -> None:
        self.ring = ring
        self.nonfinite_samples = 0
        self._resampler: av.AudioResampler | None = None
        self._in_rate: int | None = None
        self._next_in_index: int | None = None  # expected 16k index of the next input sample
        self._out_index = 0  # 16k index where the resampler's next output lands

    def push(self, frame: AudioFrame) -> None:
        x, n_bad = sanitize(frame.samples)
        if n_bad:
            if self.nonfinite_samples == 0:
                log.warning("audio contains NaN/inf samples; replacing them with silence")
            self.nonfinite_samples += n_bad
        mono = x.mean(axis=1).astype(np.float32)
        start = round(frame.time_s * SAMPLE_RATE_HZ)
        if (
            self._resampler is None
            or frame.sample_rate_hz != self._in_rate
            or self._next_in_index is None
            or abs(start - self._next_in_index) > SAMPLE_RATE_HZ // 100  # >10 ms jump: restart
        ):
            self._flush()
            self._in_rate = frame.sample_rate_hz
            self._resampler = (
                None
                if frame.sample_rate_hz == SAMPLE_RATE_HZ
                else av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HZ)
            )
            self._out_index = start
        self._next_in_index = start + round(mono.shape[0] * SAMPLE_RATE_HZ / frame.sample_rate_hz)
        self._write(self._resample(mono, frame.sample_rate_hz))

    def _resample(self, mono: np.ndarray, rate: int) -> np.ndarray:
        if self._resampler is None:
            return mono
        af = av.AudioFrame.from_ndarray(mono[None, :], format="flt", layout="mono")
        af.sample_rate = rate
        outs = self._resampler.resample(af)
        if not outs:
            return np.zeros(0, np.float32)
        return np.concatenate([o.to_ndarray().reshape(-1) for o in outs]).astype(np.float32)

    def _write(self, out: np.ndarray) -> None:
        if out.shape[0]:
            self.ring.write(self._out_index, out)
            self._out_index += out.shape[0]

    def _flush(self) -> None:
        if self._resampler is not None:
            outs = self._resampler.resample(None)
            if outs:
                self._write(np.concatenate([o.to_ndarray().reshape(-1) for o in outs]).astype(np.float32))

    def close(self) -> None:
        """Flush the resampler's tail into the ring (end of stream)."""
        self._flush()
        self._resampler = None
