"""A camera read with PyAV (libavdevice: v4l2 on Linux, avfoundation on macOS, dshow on Windows),
or a media file / lavfi graph standing in for one (paced at its frame rate, looped).

Frames are read on a thread and handed to the event loop with their capture time on the
session clock. A camera that cannot be opened (busy, unplugged) or stops delivering is retried
with exponential backoff, with one clear log line per attempt; the stream keeps running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

import av

from stream.clock import Clock
from stream.config import LiveConfig
from stream.frames import MICROSECONDS as TIME_BASE
from stream.frames import VideoFrame

log = logging.getLogger(__name__)


def default_format() -> str:
    return {"linux": "v4l2", "darwin": "avfoundation", "win32": "dshow"}.get(sys.platform, "v4l2")


def open_spec(cfg: LiveConfig) -> tuple[str, str | None, dict[str, str], bool]:
    """(url, PyAV format, options, is_file) for the configured camera."""
    dev = cfg.camera_device
    if cfg.camera_format == "lavfi":
        return dev, "lavfi", {}, True
    if cfg.camera_format == "" and os.path.isfile(dev):
        return dev, None, {}, True
    fmt = cfg.camera_format or default_format()
    if not dev:
        dev = {"v4l2": "/dev/video0", "avfoundation": "0", "dshow": "video=0"}.get(fmt, "")
    opts = {"video_size": f"{cfg.camera_width}x{cfg.camera_height}", "framerate": str(cfg.camera_fps)}
    return dev, fmt, opts, False


class CameraSource:
    """Reads frames on a thread; ``on_frame(VideoFrame)`` is called on the event loop."""

    def __init__(self, cfg: LiveConfig, clock: Clock, origin_s: float) -> None:
        self.cfg = cfg
        self.clock = clock
        self.origin_s = origin_s
        self.url, self.format, self.options, self.is_file = open_spec(cfg)
        self.frames_read = 0
        self.open_failures = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def describe(self) -> str:
        return f"{self.format or 'file'}:{self.url}"

    def start(self, loop: asyncio.AbstractEventLoop, on_frame: Callable[[VideoFrame], None]) -> None:
        self._thread = threading.Thread(target=self._run, args=(loop, on_frame), name="camera", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _open(self) -> av.container.InputContainer:
        return av.open(self.url, "r", format=self.format, options=self.options, timeout=(5.0, 2.0))

    def _run(self, loop: asyncio.AbstractEventLoop, on_frame: Callable[[VideoFrame], None]) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                with self._open() as container:
                    backoff = 0.5
                    self._read(container, loop, on_frame)
                if self._stop.is_set():
                    return
                if not self.is_file:
                    raise OSError("the camera stopped delivering frames")
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                self.open_failures += 1
                self.last_error = str(exc)
                log.warning(
                    "camera %s is not available (%s): busy in another app, or unplugged? retrying in %.1f s",
                    self.describe(),
                    exc,
                    backoff,
                )
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, self.cfg.retry_max_s)

    def _read(
        self, container: av.container.InputContainer, loop: asyncio.AbstractEventLoop, on_frame: Callable
    ) -> None:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        t_start = time.monotonic()
        first_pts: float | None = None
        for frame in container.decode(stream):
            if self._stop.is_set():
                return
            if self.is_file and frame.pts is not None and frame.time_base is not None:
                # a file stands in for a camera: deliver each frame at its own time
                t = float(frame.pts * frame.time_base)
                first_pts = t if first_pts is None else first_pts
                wait = t_start + (t - first_pts) - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return
            img = frame.to_ndarray(format="rgb24")
            media_s = self.clock.now() - self.origin_s
            self.frames_read += 1
            vf = VideoFrame(img, round(media_s / TIME_BASE), TIME_BASE)
            try:
                loop.call_soon_threadsafe(on_frame, vf)
            except RuntimeError:  # the loop closed
                return
