"""A microphone through sounddevice (PortAudio). Blocks are stamped on the session clock at the
time their first sample reached the converter (callback time minus the block and the input
latency), kept continuous by sample count and re-anchored if that drifts from the clock.

``mic_device`` is a sounddevice input name (or index); on Linux with PulseAudio or PipeWire it
may also be a source name (``pactl list short sources``), opened through the ``pulse`` device.
Any sample rate and channel count is accepted: the engine resamples to 16 kHz mono.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np

from stream.clock import Clock
from stream.config import LiveConfig
from stream.devices import open_portaudio_stream, sounddevice_module
from stream.errors import DeviceError
from stream.frames import AudioFrame

log = logging.getLogger(__name__)

BLOCK_MS = 20


class MicSource:
    def __init__(self, cfg: LiveConfig, clock: Clock, origin_s: float) -> None:
        self.cfg = cfg
        self.clock = clock
        self.origin_s = origin_s
        self.stream: Any = None
        self.rate = 0
        self.blocks = 0
        self.overflows = 0
        self._next_pts: int | None = None

    def start(self, loop: asyncio.AbstractEventLoop, on_audio: Callable[[AudioFrame], None]) -> None:
        sd = sounddevice_module()

        def callback(data: np.ndarray, frames: int, _time: Any, status: Any) -> None:
            if status.input_overflow:
                self.overflows += 1
            latency = float(self.stream.latency) if self.stream is not None else 0.0
            start_s = self.clock.now() - self.origin_s - frames / self.rate - latency
            pts = round(start_s * self.rate)
            if self._next_pts is not None and abs(pts - self._next_pts) < self.rate // 10:
                pts = self._next_pts  # continuous: follow the sample count, not callback jitter
            self._next_pts = pts + frames
            self.blocks += 1
            af = AudioFrame(data.copy(), self.rate, pts, Fraction(1, self.rate))
            try:
                loop.call_soon_threadsafe(on_audio, af)
            except RuntimeError:  # the loop closed
                pass

        rate = self.cfg.mic_sample_rate_hz or None
        try:
            self.stream = open_portaudio_stream(sd.InputStream, self.cfg.mic_device, "input", rate, callback, BLOCK_MS)
        except DeviceError as exc:
            if rate is None:
                raise
            # the device does not take that rate: use its own (the engine resamples)
            log.warning("%s; using the device's own sample rate instead", exc)
            self.stream = open_portaudio_stream(sd.InputStream, self.cfg.mic_device, "input", None, callback, BLOCK_MS)
        self.rate = int(self.stream.samplerate)

    def stop(self) -> None:
        if self.stream is not None:
            self.stream.stop()
            self.stream.close()
            self.stream = None
