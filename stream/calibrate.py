"""A/V calibration of the live outputs: flash the virtual camera and click the virtual microphone
at the same scheduled instants, read both back (the virtual camera as a camera, the virtual
microphone's monitor as an input), find each flash and each click on the same clock, and report
how much later the audio arrives than the video. ``live.audio_extra_delay_ms`` = minus that
offset corrects it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stream.clock import Clock
from stream.frames import AudioFrame

FLASH_LEVEL = 235
BASE_LEVEL = 40


@dataclass
class Calibration:
    flashes_s: list[float]
    clicks_s: list[float]
    offsets_ms: list[float]  # per pair: click - flash

    @property
    def offset_ms(self) -> float:
        return float(np.median(self.offsets_ms)) if self.offsets_ms else float("nan")

    def summary(self) -> str:
        if not self.offsets_ms:
            return (
                f"calibration failed: {len(self.flashes_s)} flashes and {len(self.clicks_s)} clicks were read back; "
                "check that the virtual camera and the virtual microphone monitor are the ones given"
            )
        o = self.offset_ms
        spread = float(np.ptp(self.offsets_ms)) if len(self.offsets_ms) > 1 else 0.0
        side = "after" if o > 0 else "before"
        return (
            f"audio arrives {abs(o):.0f} ms {side} the video (median of {len(self.offsets_ms)} flashes, spread "
            f"{spread:.0f} ms); set live.audio_extra_delay_ms = {-round(o)} (plus what is set now) to correct it"
        )


def onsets(times: np.ndarray, values: np.ndarray, threshold: float, refractory_s: float) -> list[float]:
    """Times where ``values`` rises through ``threshold``, at least ``refractory_s`` apart."""
    out: list[float] = []
    above = values >= threshold
    for i in range(1, len(values)):
        if above[i] and not above[i - 1] and (not out or times[i] - out[-1] > refractory_s):
            out.append(float(times[i]))
    return out


def click_times(blocks: list[AudioFrame], origin_s: float, threshold: float = 0.2) -> list[float]:
    """Click onsets (clock s) in recorded blocks, to the sample."""
    if not blocks:
        return []
    rate = blocks[0].sample_rate_hz
    t0 = blocks[0].time_s
    x = np.concatenate([np.abs(b.samples).max(axis=1) for b in blocks])
    t = origin_s + t0 + np.arange(x.size) / rate
    return onsets(t, x, threshold, 0.3)


def pair(flashes: list[float], clicks: list[float], max_s: float = 0.45) -> list[float]:
    out = []
    for f in flashes:
        if clicks:
            c = min(clicks, key=lambda c: abs(c - f))
            if abs(c - f) <= max_s:
                out.append(1000 * (c - f))
    return out


async def emit_pattern(
    clock: Clock,
    send_frame: Callable[[np.ndarray], None],
    play_audio: Callable[[np.ndarray, int, float], None],
    size: tuple[int, int] = (640, 480),
    fps: int = 30,
    flashes: int = 6,
    period_s: float = 1.0,
    audio_lead_s: float = 0.3,
) -> list[float]:
    """Frames at ``fps`` (grey, white at each flash) and a 10 ms click at each flash, scheduled on
    ``clock``; returns the flash instants."""
    w, h = size
    grey = np.full((h, w, 3), BASE_LEVEL, np.uint8)
    white = np.full((h, w, 3), FLASH_LEVEL, np.uint8)
    rate = 48000
    t_click = np.arange(int(0.01 * rate)) / rate  # 10 ms of 2 kHz: survives resampling and codecs
    click = (0.8 * np.sin(2 * np.pi * 2000 * t_click)).astype(np.float32)[:, None]
    start = clock.now() + audio_lead_s + 0.2
    instants = [start + 0.5 + k * period_s for k in range(flashes)]
    for t in instants:
        play_audio(click, rate, t)
    n = int((instants[-1] + 0.5 - start) * fps)
    for i in range(n):
        t = start + i / fps
        await clock.sleep_until(t)
        flash = any(0 <= t - f < 1 / fps for f in instants)
        send_frame(white if flash else grey)
    return instants


def flash_times(samples: list[tuple[float, float]]) -> list[float]:
    """Flash onsets from (clock s, mean brightness) read back from the virtual camera."""
    if not samples:
        return []
    t = np.array([s[0] for s in samples])
    v = np.array([s[1] for s in samples])
    return onsets(t, v, (FLASH_LEVEL + BASE_LEVEL) / 2, 0.3)
