"""Fakes for engine tests: sources with exact pts, a marker-painting model, a scripted VAD,
and a face detector that reports a fixed face. Real objects with simple behaviour, not mocks."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import numpy as np

from stream.face import FaceDetection
from stream.frames import AudioFrame, VideoFrame
from stream.worker import ModelChunk


def make_face_image(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(40, 200, (height, width, 3), dtype=np.uint8)
    return img


class FixedFaceDetector:
    """Reports faces at fixed boxes (x0, y0, x1, y1) with plausible keypoints."""

    def __init__(self, boxes: list[tuple[float, float, float, float]]) -> None:
        self.boxes = boxes
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        self.calls += 1
        out = []
        for x0, y0, x1, y1 in self.boxes:
            w, h = x1 - x0, y1 - y0
            kp = np.array(
                [
                    [x0 + 0.3 * w, y0 + 0.35 * h],
                    [x0 + 0.7 * w, y0 + 0.35 * h],
                    [x0 + 0.5 * w, y0 + 0.55 * h],
                    [x0 + 0.5 * w, y0 + 0.75 * h],
                    [x0 + 0.05 * w, y0 + 0.45 * h],
                    [x0 + 0.95 * w, y0 + 0.45 * h],
                ],
                np.float32,
            )
            out.append(FaceDetection((x0, y0, x1, y1), 0.9, kp))
        return out


class NoFaceDetector:
    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        return []


class MarkerModel:
    """Paints the masked region with a grey level that follows the audio energy of each frame's
    window (plus an optional per-chunk bias, like a sampler's per-chunk noise).

    Optionally sleeps ``latency_s`` of virtual time per call (a slow model), or raises on chosen
    calls (a failing model)."""

    name = "marker"
    mask_scale = (1.0, 1.0)
    crop_zoom = 1.0
    paste_gain = 1.0

    def __init__(
        self,
        resolution_px: int = 64,
        clock: Any = None,
        latency_s: float = 0.0,
        chunk_bias: float = 0.0,
        fail_calls: set[int] | None = None,
    ) -> None:
        self.resolution_px = resolution_px
        self.clock = clock
        self.latency_s = latency_s
        self.chunk_bias = chunk_bias
        self.fail_calls = fail_calls or set()
        self.calls: list[ModelChunk] = []

    def encode_reference(self, crop: np.ndarray) -> Any:
        return crop.copy()

    @staticmethod
    def level(audio_window: np.ndarray) -> float:
        return 40.0 + 200.0 * min(1.0, float(np.sqrt(np.mean(audio_window**2))) * 4)

    def generate(self, chunk: ModelChunk, reference: Any, steps: int) -> np.ndarray:
        n = len(self.calls)
        self.calls.append(chunk)
        if self.latency_s and self.clock is not None:
            self.clock.sleep(self.latency_s)
        if n in self.fail_calls:
            raise RuntimeError(f"fake failure on call {n}")
        out = chunk.frames.copy()
        bias = self.chunk_bias * (1 if n % 2 else -1)
        for i in range(out.shape[0]):
            v = np.clip(self.level(chunk.audio[i]) + bias, 0, 255)
            m = chunk.masks[i] > 0
            out[i][m] = np.uint8(round(v))
        return out


class ScriptedVad:
    """Speech exactly inside the given (start_s, end_s) segments; always final and settled.
    ``quiet``: per segment, where the silence that ended it began (default: its end)."""

    def __init__(self, segments: list[tuple[float, float]], quiet: list[float] | None = None) -> None:
        self._times: list[float] = []
        self._states: list[bool] = []
        for a, b in segments:
            self._times += [a, b]
            self._states += [True, False]
        self._quiet = quiet if quiet is not None else [b for _, b in segments]
        self.final_until_s = float("inf")
        self.settled_until_s = float("inf")

    def update(self) -> None:
        pass

    def change_points(self) -> tuple[list[float], list[bool]]:
        return self._times, self._states

    def settled_change_points(self, tail_s: float) -> tuple[list[float], list[bool]]:
        times = list(self._times)
        for k, q in enumerate(self._quiet):
            times[2 * k + 1] = max(min(times[2 * k + 1], q + tail_s), times[2 * k])
        return times, self._states

    def is_speech(self, t: float) -> bool:
        return any(a <= t < b for a, b in zip(self._times[::2], self._times[1::2], strict=True))


def video_frames(n: int, fps: int = 25, width: int = 640, height: int = 480, seed: int = 0) -> Iterator[VideoFrame]:
    base = make_face_image(width, height, seed)
    for i in range(n):
        img = base.copy()
        img[0:4, 0:4] = i % 256  # frame id in a corner, far from any face
        yield VideoFrame(img, i, Fraction(1, fps))


def tone(
    duration_s: float, rate: int = 48000, channels: int = 1, freq: float = 220.0, amp_fn: Any = None
) -> np.ndarray:
    t = np.arange(round(duration_s * rate)) / rate
    amp = amp_fn(t) if amp_fn is not None else 0.5
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1)


def audio_frames(samples: np.ndarray, rate: int, block: int = 960) -> Iterator[AudioFrame]:
    for i in range(0, samples.shape[0], block):
        yield AudioFrame(samples[i : i + block], rate, i, Fraction(1, rate))
