"""File sink: encodes video and the driving audio into one file with PyAV.

Output goes to a temporary name beside the target and is renamed at the end, so a crash
never leaves a half-written file under the requested name.
"""

from __future__ import annotations

import errno
import os
from fractions import Fraction

import av
import numpy as np

from stream.config import OutputConfig
from stream.errors import InputError, OutputError
from stream.frames import AudioFrame, VideoFrame


def even_size(width: int, height: int) -> tuple[int, int]:
    """H.264 4:2:0 needs even sides: odd sides are padded by one replicated pixel."""
    return width + width % 2, height + height % 2


def check_output_path(path: str, inputs: tuple[str, ...] = ()) -> None:
    """Refuse, before any work, an output path that cannot be written or that is one of the
    ``inputs`` (writing it would destroy the input)."""
    d, name = os.path.split(os.path.abspath(path))
    if not os.path.isdir(d):
        raise InputError(f"output folder {d} does not exist: create it or choose another -o path")
    if os.path.isdir(path):
        raise InputError(f"output path {path} is a folder: name a file, e.g. {os.path.join(path, 'out.mp4')}")
    if not os.path.splitext(name)[1]:
        raise InputError(f"output path {path} has no extension: use e.g. {path}.mp4")
    for src in inputs:
        if os.path.exists(src) and os.path.exists(path) and os.path.samefile(src, path):
            raise InputError(
                f"output path {path} is one of the inputs: writing it would destroy {src}; choose another -o"
            )
        if os.path.abspath(src) == os.path.abspath(path):
            raise InputError(f"output path {path} is one of the inputs: choose another -o")
    if not os.access(d, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {d} is not writable (permission denied): choose another -o folder")


def _write_error(path: str, exc: BaseException) -> OutputError:
    code = getattr(exc, "errno", None)
    why, fix = {
        errno.ENOSPC: ("the disk is full", "free space or choose another -o"),
        errno.EFBIG: ("the file grew past the file system's size limit", "choose another -o file system"),
        errno.EDQUOT: ("the disk quota is used up", "free space or choose another -o"),
        errno.EACCES: ("permission denied", "choose a writable -o folder"),
        errno.EPERM: ("the operation is not permitted", "choose a writable -o folder"),
        errno.EROFS: ("the file system is read-only", "choose a writable -o folder"),
    }.get(code, (str(exc), "choose another -o"))  # type: ignore[arg-type]
    return OutputError(f"output {path} could not be written ({why}): {fix}; no partial file was kept")


class FileSink:
    def __init__(
        self,
        path: str,
        width: int,
        height: int,
        fps: Fraction,
        config: OutputConfig,
        time_base: Fraction | None = None,
    ) -> None:
        """``time_base``: the video pts unit (default ``1/fps``); a variable-frame-rate source
        passes its own so every frame keeps its source timestamp."""
        self.path = path
        check_output_path(path)
        d, name = os.path.split(os.path.abspath(path))
        root, ext = os.path.splitext(name)
        self.tmp_path = os.path.join(d, f".{root}.part{os.getpid()}{ext}")
        self.width, self.height = even_size(width, height)
        self.config = config
        try:
            self._c = av.open(self.tmp_path, "w")
            # a container that cannot hold the codecs (e.g. .wav, .webm) fails here
            self._v = self._c.add_stream(config.video_codec, rate=fps)
            self._a = self._c.add_stream(config.audio_codec, rate=config.audio_sample_rate_hz)
        except (OSError, PermissionError) as e:  # av.error.PermissionError is both an OSError and an FFmpegError
            self._remove_tmp()
            raise _write_error(path, e) from None
        except (av.error.FFmpegError, ValueError) as e:
            self._remove_tmp()
            raise InputError(f"output path {path} cannot be written ({e}): use .mp4, .mkv or .mov") from None
        self._v.width, self._v.height = self.width, self.height
        self._v.pix_fmt = "yuv420p"
        if config.video_codec == "libx264":
            self._v.options = {"crf": str(config.crf), "preset": "veryfast"}
        self._v.codec_context.time_base = time_base or Fraction(1) / fps
        self._a.layout = "stereo"
        self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=config.audio_sample_rate_hz)
        self._closed = self._finished = False

    def _mux(self, packets: list) -> None:
        try:
            for p in packets:
                self._c.mux(p)
        except OSError as e:  # a full disk, a quota, a file-size limit, a vanished folder
            raise _write_error(self.path, e) from None

    def write_video(self, frame: VideoFrame) -> None:
        img = frame.image
        h, w = img.shape[:2]
        if (w, h) != (self.width, self.height):
            img = np.pad(img, ((0, self.height - h), (0, self.width - w), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(img, format="rgb24")
        vf.pts = frame.pts
        vf.time_base = frame.time_base
        self._mux(self._v.encode(vf))

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
            self._mux(self._a.encode(o))

    def close(self) -> None:
        """Flush encoders and move the file to its final name."""
        if self._closed:
            return
        for o in self._resampler.resample(None):
            self._mux(self._a.encode(o))
        self._mux(self._a.encode(None))
        self._mux(self._v.encode(None))
        try:
            self._c.close()
        except OSError as e:
            raise _write_error(self.path, e) from None
        self._closed = self._finished = True
        try:
            os.replace(self.tmp_path, self.path)
        except OSError as e:  # a locked or immutable target: the finished run is kept under a visible name
            kept = self.tmp_path
            root, ext = os.path.splitext(self.path)
            for candidate in (f"{root}.new{ext}", f"{root}.new{os.getpid()}{ext}"):
                if not os.path.exists(candidate):
                    try:
                        os.replace(self.tmp_path, candidate)
                        kept = candidate
                        break
                    except OSError:
                        pass
            raise OutputError(
                f"output {self.path} could not be replaced ({e.strerror or e}); the finished video is kept "
                f"as {kept}: move it yourself"
            ) from None
        self.tmp_path = ""

    def abort(self) -> None:
        """Drop the partial output (on error or interrupt)."""
        if not self._closed:
            self._closed = True
            try:
                self._c.close()
            except Exception:  # noqa: BLE001 - already failing; the file is removed anyway
                pass
        if self._finished:  # renamed, or kept on purpose after a failed rename
            return
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self.tmp_path and os.path.exists(self.tmp_path):
            try:
                os.remove(self.tmp_path)
            except OSError:  # a folder turned read-only mid-run: nothing more can be done
                pass
