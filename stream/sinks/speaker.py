"""The delayed audio on an output device (the virtual microphone's other end), scheduled: each
block is given with the time it must be heard, and the device callback plays whatever is due at
the moment its buffer reaches the converter (PortAudio's DAC time). The device's own output
latency is therefore taken out, and the audio leaves at the same deadline as the video frames.
Late samples are dropped (counted), gaps are silence."""

from __future__ import annotations

import threading
from typing import Any

import av
import numpy as np

from stream.clock import Clock
from stream.config import LiveConfig
from stream.devices import open_portaudio_stream, sounddevice_module

BLOCK_MS = 10
JOIN_S = 0.02  # blocks this close to continuous are joined as continuous


class SpeakerSink:
    def __init__(self, cfg: LiveConfig, clock: Clock) -> None:
        self.cfg = cfg
        self.clock = clock
        self.stream: Any = None
        self.rate = 0
        self.channels = 0
        self.dropped_samples = 0
        self.underruns = 0
        self._lock = threading.Lock()
        self._buf = np.zeros(0, np.float32)
        self._t0 = 0.0
        self._resamplers: dict[int, av.AudioResampler] = {}

    def start(self) -> None:
        sd = sounddevice_module()

        def opened(stream: Any) -> None:
            self.stream = stream
            self.rate = int(stream.samplerate)
            self.channels = int(stream.channels)

        open_portaudio_stream(
            sd.OutputStream, self.cfg.speaker_device, "output", None, self._callback, BLOCK_MS, opened
        )

    @property
    def latency_s(self) -> float:
        return float(self.stream.latency) if self.stream is not None else 0.0

    def _resample(self, samples: np.ndarray, rate: int) -> np.ndarray:
        mono = samples.mean(axis=1).astype(np.float32) if samples.ndim == 2 else samples.astype(np.float32)
        if rate == self.rate:
            return mono
        rs = self._resamplers.get(rate)
        if rs is None:
            rs = self._resamplers[rate] = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
        af = av.AudioFrame.from_ndarray(mono[None, :], format="flt", layout="mono")
        af.sample_rate = rate
        outs = rs.resample(af)
        return np.concatenate([o.to_ndarray().reshape(-1) for o in outs]) if outs else np.zeros(0, np.float32)

    def put(self, samples: np.ndarray, rate: int, play_at_s: float) -> None:
        """Schedule ``samples`` ((n, channels) float32 at ``rate``) to be heard at ``play_at_s``."""
        x = self._resample(samples, rate)
        if x.size == 0:
            return
        with self._lock:
            if self._buf.size == 0:
                self._buf, self._t0 = x, play_at_s
                return
            end = self._t0 + self._buf.size / self.rate
            gap = play_at_s - end
            if abs(gap) <= JOIN_S:
                self._buf = np.concatenate([self._buf, x])
            elif gap > 0:
                self._buf = np.concatenate([self._buf, np.zeros(round(gap * self.rate), np.float32), x])
            else:  # overlaps what is queued: keep the queued part
                cut = round(-gap * self.rate)
                if cut < x.size:
                    self._buf = np.concatenate([self._buf, x[cut:]])

    def _dac_time(self, time_info: Any) -> float:
        now = self.clock.now()
        try:
            lead = float(time_info.outputBufferDacTime) - float(time_info.currentTime)
        except (AttributeError, TypeError):
            lead = -1.0
        if not 0.0 <= lead < 1.0:  # some host APIs report no DAC time
            lead = self.latency_s
        return now + lead

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, _status: Any) -> None:
        t = self._dac_time(time_info)
        out = np.zeros(frames, np.float32)
        with self._lock:
            if self._buf.size:
                skip = round((t - self._t0) * self.rate)
                if skip > 0:  # due before now: too late to play
                    n = min(skip, self._buf.size)
                    self.dropped_samples += n
                    self._buf = self._buf[n:]
                    self._t0 += n / self.rate
                    skip -= n
                if self._buf.size:
                    lead = max(0, -skip)
                    take = min(frames - min(lead, frames), self._buf.size)
                    if lead < frames and take > 0:
                        out[lead : lead + take] = self._buf[:take]
                        self._buf = self._buf[take:]
                        self._t0 += take / self.rate
            else:
                self.underruns += 1
        outdata[:] = out[:, None]

    def stop(self) -> None:
        if self.stream is not None:
            self.stream.stop()
            self.stream.close()
            self.stream = None
