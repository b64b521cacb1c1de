"""What both adapters share: building the avatar from a face and the config, and audio
conversion."""

from __future__ import annotations

from typing import Any

import numpy as np

from stream.avatar import Avatar, load_face
from stream.config import Config, load
from stream.worker import LipSyncModel


def build_avatar(
    face: str | None = None, config: Config | None = None, model: LipSyncModel | None = None, fps: float = 25.0
) -> Avatar:
    """An avatar of ``face`` (a portrait or an idle clip; default: the bundled character) on
    ``model`` (default: the one ``config`` names, i.e. the shipped tiny model)."""
    from stream.cli import DEMO_VIDEO, asset

    config = config or load(None, [])
    if model is None:
        from model import load_model

        model = load_model(config)
    return Avatar(config, model, load_face(face or asset(DEMO_VIDEO)), fps=fps)


def int16_to_float(data: bytes | memoryview, channels: int) -> np.ndarray:
    return np.frombuffer(data, np.int16).reshape(-1, channels).astype(np.float32) / 32768.0


def float_to_int16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype(np.int16).tobytes()


class Resampler:
    """Any rate and channel count -> ``rate`` Hz, ``channels`` channels (float32)."""

    def __init__(self, rate: int, channels: int = 1) -> None:
        self.rate, self.channels = rate, channels
        self._rs: Any = None
        self._in: tuple[int, int] | None = None

    def __call__(self, x: np.ndarray, rate: int) -> np.ndarray:
        import av

        if x.shape[1] != self.channels:
            x = x.mean(axis=1, keepdims=True) if self.channels == 1 else np.repeat(x[:, :1], self.channels, 1)
        if rate == self.rate:
            return x.astype(np.float32)
        if self._rs is None or self._in != (rate, x.shape[1]):
            layout = "mono" if self.channels == 1 else "stereo"
            self._rs = av.AudioResampler(format="flt", layout=layout, rate=self.rate)
            self._in = (rate, x.shape[1])
        layout = "mono" if self.channels == 1 else "stereo"
        f = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.reshape(1, -1), np.float32), format="flt", layout=layout)
        f.sample_rate = rate
        outs = self._rs.resample(f)
        if not outs:
            return np.zeros((0, self.channels), np.float32)
        return np.concatenate([o.to_ndarray().reshape(-1, self.channels) for o in outs]).astype(np.float32)
