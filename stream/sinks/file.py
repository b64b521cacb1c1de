"""File sink: encodes video and the driving audio into one file with PyAV.

Output goes to a temporary name beside the target and is renamed at the end, so a crash
never leaves a half-written file under the requested name.
"""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np

from stream.config import OutputConfig
from stream.errors import InputError
from stream.frames import AudioFrame, VideoFrame


def even_size(width: int, height: int) -> tuple[int, int]:
    """H.264 4:2:0 needs even sides: odd sides are padded by one replicated pixel."""
    return width + width % 2, height + height % 2


class FileSink:
    def __init__(self, path: str, width: int, height: int, fps: Fraction, config: OutputConfig) -> None:
        self.path = path
        d, name = os.path.split(os.path.abspath(path))
        if not os.path.isdir(d):
            raise InputError(f"output folder {d} does not exist: create it or choose another -o path")
        root, ext = os.path.splitext(name)
        if not ext:
            raise InputError(f"output path {path} has no extension: use e.g. {path}.mp4")
        if os.path.isdir(path):
            raise InputError(f"output path {path} is a folder: name a file, e.g. {os.path.join(path, 'out.mp4')}")
        self.tmp_path = os.path.join(d, f".{root}.part{os.getpid()}{ext}")
        self.width, self.height = even_size(width, height)
        self.config = config
        try:
            self._c = av.open(self.tmp_path, "w")
            # a container that cannot hold the codecs (e.g. .wav, .webm) fails here
            self._v = self._c.add_stream(config.video_codec, rate=fps)
            self._a = self._c.add_stream(config.audio_codec, rate=config.audio_sample_rate_hz)
        except (av.error.FFmpegError, ValueError) as e:
            raise InputError(f"output path {path} cannot be written ({e}): use .mp4, .mkv or .mov") from None
        self._v.width, self._v.height = self.width, self.height
        self._v.pix_fmt = "yuv420p"
        if config.video_codec == "libx264":
            self._v.options = {"crf": str(config.crf), "preset": "veryfast"}
        self._v.codec_context.time_base = Fraction(1) / fps
        self._a.layout = "stereo"
        self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=config.audio_sample_rate_hz)
        self._closed = False

    def write_video(self, frame: VideoFrame) -> None:
        img = frame.image
        h, w = img.shape[:2]
        if (w, h) != (self.width, self.height):
            img = np.pad(img, ((0, self.height - h), (0, self.width - w), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(img, format="rgb24")
        vf.pts = frame.pts
        vf.time_base = frame.time_base
        for p in self._v.encode(vf):
            self._c.mux(p)

    def write_audio(self, frame: AudioFrame) -> None:
        x = np.ascontiguousarray(frame.samples.astype(np.float32))
        ch = x.shape[1]
        layout = {1: "mono", 2: "stereo"}.get(ch)
        if layout is None:  # more channels: downmix to mono first
            x, layout = np.ascontiguousarray(x.mean(axis=1, keepdims=True)), "mono"
        af = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="flt", layout=layout)
        af.sample_rate = frame.sample_rate_hz
        af.pts = frame.pts
        af.time_base = frame.time_base
        for o in self._resampler.resample(af):
            for p in self._a.encode(o):
                self._c.mux(p)

    def close(self) -> None:
        """Flush encoders and move the file to its final name."""
        if self._closed:
            return
        for o in self._resampler.resample(None):
            for p in self._a.encode(o):
                self._c.mux(p)
        for p in self._a.encode(None):
            self._c.mux(p)
        for p in self._v.encode(None):
            self._c.mux(p)
        self._c.close()
        self._closed = True
        os.replace(self.tmp_path, self.path)

    def abort(self) -> None:
        """Drop the partial output (on error or interrupt)."""
        if not self._closed:
            self._closed = True
            try:
                self._c.close()
            except Exception:  # noqa: BLE001 - already failing; the file is removed anyway
                pass
        if os.path.exists(self.tmp_path):
            os.remove(self.tmp_path)
