"""The virtual camera (pyvirtualcam: v4l2loopback on Linux, OBS on macOS / Windows, Unity
Capture on Windows). Frames are sent as they leave the playout, at their deadlines."""

from __future__ import annotations

from typing import Any

import numpy as np

from stream.config import LiveConfig
from stream.devices import VIRTUAL_CAMERA_SETUP, _os
from stream.errors import DeviceError


def even_frame(img: np.ndarray) -> np.ndarray:
    """Pad to even width and height (v4l2loopback's YUV formats need them)."""
    h, w = img.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return img
    return np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def open_virtual_camera(cfg: LiveConfig, width: int, height: int, fps: float) -> Any:
    """A pyvirtualcam camera of this size, or a DeviceError with the set-up command."""
    try:
        import pyvirtualcam
    except ImportError as exc:
        raise DeviceError(f"the virtual camera needs pyvirtualcam ({exc}): pip install pyvirtualcam") from None
    try:
        return pyvirtualcam.Camera(
            width=width + width % 2,
            height=height + height % 2,
            fps=fps,
            fmt=pyvirtualcam.PixelFormat.RGB,
            backend=cfg.virtual_camera_backend or None,
            device=cfg.virtual_camera_device or None,
        )
    except (RuntimeError, ValueError) as exc:
        raise DeviceError(f"no virtual camera ({exc}); set one up: {VIRTUAL_CAMERA_SETUP[_os()]}") from None


class VirtualCameraSink:
    """Sends frames to ``camera`` (anything with pyvirtualcam's ``send(rgb)`` and ``close()``)."""

    def __init__(self, camera: Any) -> None:
        self.camera = camera
        self.sent = 0

    def send(self, image: np.ndarray) -> None:
        img = even_frame(image)
        w = int(getattr(self.camera, "width", 0) or img.shape[1])
        h = int(getattr(self.camera, "height", 0) or img.shape[0])
        if img.shape[1] != w or img.shape[0] != h:  # the camera changed size mid-stream: fit it
            out = np.zeros((h, w, 3), np.uint8)
            out[: min(h, img.shape[0]), : min(w, img.shape[1])] = img[:h, :w]
            img = out
        self.camera.send(img)
        self.sent += 1

    def close(self) -> None:
        self.camera.close()


class PreviewSink:
    """Shows each frame in a local window (OpenCV) and passes it on to ``inner``."""

    def __init__(self, inner: VirtualCameraSink) -> None:
        import os

        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) and _os() == "linux":
            raise DeviceError("live.preview = true needs a display (DISPLAY is not set): set live.preview = false")
        import cv2

        self._cv2 = cv2
        self.inner = inner

    def send(self, image: np.ndarray) -> None:
        self.inner.send(image)
        self._cv2.imshow("sayanything-live preview", image[..., ::-1])
        self._cv2.waitKey(1)

    def close(self) -> None:
        self.inner.close()
        self._cv2.destroyAllWindows()
