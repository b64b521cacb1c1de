"""Faces: detect periodically, track and smooth in between, crop to the model size, build the
adaptive mouth mask (the model's editing-control region) and paste the result back, feathered.

The default detector is MediaPipe's short-range BlazeFace, run by MediaPipe's Tasks API from the
weights the project ships (``stream/assets/face_detection_short_range.tflite``, Apache-2.0, as
released in the mediapipe 0.10.14 wheel; nothing downloads). It gives a box and six keypoints:
right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import cv2
import numpy as np

from stream.compositor import LUMA
from stream.config import FaceConfig
from stream.errors import InputError

log = logging.getLogger(__name__)
FACE_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "face_detection_short_range.tflite")

# Keypoint rows in FaceDetection.keypoints
RIGHT_EYE, LEFT_EYE, NOSE, MOUTH = 0, 1, 2, 3
# (FaceCropper.affine) how far down the face a zoomed crop's centre moves, in face-square sides,
# times (1 - 1/zoom): 2 x 0.18, the mask centre's drop below the square's centre on the
# rendered characters (eyes to mouth keypoint 1.0, crop centre 0.64, eye distances; mask from
# 0.27 above to 1.0 below the mouth, in a square 4.1 eye distances wide)
LOWER_FACE_DROP = 0.36
DETECT_MAX_SIDE_PX = 640  # larger frames are downscaled before detection


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """MediaPipe's native code logs set-up chatter straight to fd 2; silence it while loading."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass(frozen=True)
class FaceDetection:
    """A detected face in frame pixels: box (x0, y0, x1, y1), score, keypoints (6, 2)."""

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


class FaceDetector(Protocol):
    def detect(self, image: np.ndarray) -> list[FaceDetection]: ...


# MediaPipe Tasks objects run their C calls on a private executor thread; one left to the cyclic
# garbage collector can be finalised after its executor, and its close() then waits forever.
# So each is held here, closed by close() or by a weakref.finalize when its owner is collected
# (while the object itself is alive), and forgotten (not closed) at interpreter exit.
_LIVE: dict[int, Any] = {}


def _close_task(key: int) -> None:
    task = _LIVE.pop(key, None)
    if task is not None:
        try:
            task.close()
        except Exception as e:  # noqa: BLE001 - closing must not raise from a finaliser
            log.debug("closing a face detector: %s", e)


@atexit.register
def _forget_tasks() -> None:
    for task in _LIVE.values():
        task._handle = None  # the process is ending: nothing to release, and no executor to do it
    _LIVE.clear()


class MediaPipeFaceDetector:
    """BlazeFace short-range detector (MediaPipe Tasks) with the shipped weights. ``close()``
    releases it (its thread and native state); it is also released when collected."""

    def __init__(self, min_confidence: float = 0.5) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import mediapipe as mp
                from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as e:  # pragma: no cover - mediapipe is a hard dependency
            raise InputError("face detection needs mediapipe: pip install 'mediapipe==0.10.32'") from e
        if not os.path.isfile(FACE_MODEL):
            raise InputError(f"the face detector's weights {FACE_MODEL} are missing: reinstall sayanything-live")
        self._mp = mp
        opts = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=FACE_MODEL), min_detection_confidence=min_confidence
        )
        with _quiet_native_stderr():
            self._fd = vision.FaceDetector.create_from_options(opts)
            self._key = id(self._fd)
            _LIVE[self._key] = self._fd
            self._finalizer = weakref.finalize(self, _close_task, self._key)
            self._finalizer.atexit = False
            self._run(np.zeros((64, 64, 3), np.uint8))  # warm up (its first call logs natively)

    def _run(self, image: np.ndarray):  # noqa: ANN202
        if self._key not in _LIVE:
            raise RuntimeError("this face detector was closed: make a new MediaPipeFaceDetector")
        return self._fd.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=image))

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        h, w = image.shape[:2]
        scale = min(1.0, DETECT_MAX_SIDE_PX / max(h, w))
        small = (
            image
            if scale == 1.0
            else cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        )
        res = self._run(np.ascontiguousarray(small))
        sx, sy = w / small.shape[1], h / small.shape[0]
        out = []
        for d in res.detections or []:
            b = d.bounding_box  # pixels of the image detected on
            kp = np.array([[k.x * w, k.y * h] for k in d.keypoints or []], np.float32)
            if kp.shape != (6, 2):
                continue
            box = (b.origin_x * sx, b.origin_y * sy, (b.origin_x + b.width) * sx, (b.origin_y + b.height) * sy)
            out.append(FaceDetection(box, float(d.categories[0].score), kp))
        return out

    def close(self) -> None:
        self._finalizer()


@dataclass(frozen=True)
class FaceState:
    """The tracked face in one frame: where the model crop comes from and its mouth mask."""

    center: tuple[float, float]  # crop centre, frame pixels
    side_px: float  # crop side, frame pixels
    angle_rad: float  # head roll; the crop is rotated so the eyes are level
    keypoints: np.ndarray  # (6, 2) frame pixels, smoothed

    def affine(self, size_px: int) -> np.ndarray:
        """2x3 matrix mapping frame pixels to crop pixels."""
        s = size_px / self.side_px
        c, si = math.cos(self.angle_rad) * s, math.sin(self.angle_rad) * s
        cx, cy = self.center
        # rotate by -angle about the centre, scale, then move the centre to the crop centre
        return np.array(
            [[c, si, size_px / 2 - (c * cx + si * cy)], [-si, c, size_px / 2 - (-si * cx + c * cy)]],
            np.float32,
        )

    def eyes(self) -> tuple[np.ndarray, float]:
        """The midpoint between the eyes (frame pixels) and the eye distance."""
        kp = self.keypoints.astype(np.float64)
        return (kp[RIGHT_EYE] + kp[LEFT_EYE]) / 2, float(np.linalg.norm(kp[LEFT_EYE] - kp[RIGHT_EYE]))

    def shape(self) -> np.ndarray:
        """The crop window relative to the eyes: (x, y) of its centre from the eyes' midpoint in
        the face's own axes, and its side, all in eye distances. The eyes do not move with the
        jaw; the detector's box and the mouth keypoint, which place the window, do."""
        mid, dist = self.eyes()
        c, s = math.cos(self.angle_rad), math.sin(self.angle_rad)
        dx, dy = np.array(self.center) - mid
        d = max(dist, 1e-6)
        return np.array([(c * dx + s * dy) / d, (-s * dx + c * dy) / d, self.side_px / d])


def place_by_eyes(face: FaceState, mid: np.ndarray, dist: float, angle_rad: float, shape: np.ndarray) -> FaceState:
    """``face`` with its crop window placed from the eyes (``mid``, ``dist``, ``angle_rad``) and a
    window ``shape`` (``FaceState.shape``)."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    ox, oy, ratio = (float(v) for v in shape)
    center = (float(mid[0] + dist * (c * ox - s * oy)), float(mid[1] + dist * (s * ox + c * oy)))
    return replace(face, center=center, side_px=float(ratio * dist), angle_rad=float(angle_rad))


def _select(dets: list[FaceDetection], rule: str, width: int) -> FaceDetection:
    if rule == "largest":
        return max(dets, key=lambda d: d.area)
    if rule == "leftmost":
        return min(dets, key=lambda d: d.box[0])
    if rule == "rightmost":
        return max(dets, key=lambda d: d.box[2])
    return min(dets, key=lambda d: abs((d.box[0] + d.box[2]) / 2 - width / 2))


class FaceTracker:
    """Runs the detector every ``detect_every_frames`` frames and tracks the face in between.

    Tracking is an alpha-beta filter over the face state (crop centre, size, roll and
    keypoints): every frame the state is predicted at constant velocity; each detection
    corrects it by ``1 - smoothing`` of the residual (and the velocity by the matching beta),
    so the box is steady when the head is still and does not lag when it moves.

    The correction is not shown at once: it is spread evenly over the ``detect_every_frames``
    frames up to the next detection. Applied in one step, every detection frame moved the crop
    and the mask by the whole correction while the frames between moved smoothly, and the mouth
    pasted back on the face jumped every N frames (a flicker at fps / N). A face missing
    for more than ``lost_after_frames`` frames is dropped (the session passes frames through).
    Once a face is tracked, the detection nearest to it is followed, so a second face entering
    the picture does not steal the track.
    """

    def __init__(self, config: FaceConfig, detector: FaceDetector | None = None) -> None:
        self.config = config
        self.detector = detector if detector is not None else MediaPipeFaceDetector(config.min_confidence)
        self._own_detector = detector is None
        self.state: FaceState | None = None
        self._frame_index = 0
        self._frames_since_seen = 0
        self._x: np.ndarray | None = None  # filter state: cx, cy, side, angle, 12 keypoint coords
        self._v: np.ndarray | None = None  # its velocity per frame
        self._since_update = 0
        # the last correction still to be shown: shown state = filter state - catch_up * catch_up_left
        self._catch_up: np.ndarray | None = None  # the share of it each frame shows
        self._catch_up_left = 0
        self.detections_run = 0

    def close(self) -> None:
        """Release the detector this tracker made (one passed in stays its owner's)."""
        if self._own_detector:
            close = getattr(self.detector, "close", None)
            if close is not None:
                close()

    def update(self, image: np.ndarray) -> FaceState | None:
        i = self._frame_index
        self._frame_index += 1
        self._predict()
        if i % self.config.detect_every_frames != 0:
            return self._age()
        dets = self.detector.detect(image)
        self.detections_run += 1
        if not dets:
            return self._age()
        if self.state is not None:
            cx, cy = self.state.center
            det = min(dets, key=lambda d: ((d.box[0] + d.box[2]) / 2 - cx) ** 2 + ((d.box[1] + d.box[3]) / 2 - cy) ** 2)
        else:
            det = _select(dets, self.config.select, image.shape[1])
        self._frames_since_seen = 0
        self._correct(self._measure(det))
        return self.state

    def _age(self) -> FaceState | None:
        self._frames_since_seen += 1
        # the first miss can only happen detect_every_frames after the face was last seen
        if self._frames_since_seen > self.config.lost_after_frames + self.config.detect_every_frames - 1:
            self.state = None
            self._x = self._v = None
            self._catch_up_left = 0
        return self.state

    def _measure(self, det: FaceDetection) -> np.ndarray:
        kp = det.keypoints
        x0, y0, x1, y1 = det.box
        eye_dx, eye_dy = kp[LEFT_EYE] - kp[RIGHT_EYE]
        angle = math.atan2(float(eye_dy), float(eye_dx))
        side = max(x1 - x0, y1 - y0) * self.config.crop_scale
        # centre between the box centre and the mouth, so the mouth sits below the middle
        bc = np.array([(x0 + x1) / 2, (y0 + y1) / 2], np.float32)
        center = bc + 0.25 * (kp[MOUTH] - bc)
        return np.concatenate([center, [side, angle], kp.reshape(-1)]).astype(np.float64)

    def _predict(self) -> None:
        if self._x is None or self._v is None:
            return
        self._x = self._x + self._v
        self._since_update += 1
        self._catch_up_left = max(0, self._catch_up_left - 1)
        self.state = self._state()

    def _shown(self) -> np.ndarray:
        assert self._x is not None
        if self._catch_up_left == 0 or self._catch_up is None:
            return self._x
        return self._x - self._catch_up * self._catch_up_left

    def _correct(self, z: np.ndarray) -> None:
        a = 1.0 - self.config.smoothing
        if self._x is None or self._v is None or math.dist(self._x[:2], z[:2]) > 0.5 * self._x[2]:
            self._x, self._v = z, np.zeros_like(z)  # new track, or a jump: start over
            self._catch_up_left = 0
        else:
            beta = a * a / (2.0 - a)
            r = z - self._x
            shown = self._shown()
            self._x = self._x + a * r
            self._v = self._v + beta * r / max(1, self._since_update)
            n = self.config.detect_every_frames
            if n > 1:
                # keep showing where the face was, and catch up one n-th per frame from this one
                self._catch_up = (self._x - shown) / n
                self._catch_up_left = n - 1
        self._since_update = 0
        self.state = self._state()

    def _state(self) -> FaceState:
        x = self._shown()
        return FaceState((float(x[0]), float(x[1])), float(x[2]), float(x[3]), x[4:].reshape(-1, 2).astype(np.float32))


class FaceCropper:
    """Crops the model's input square, builds the mouth mask, and pastes results back."""

    def __init__(
        self,
        config: FaceConfig,
        size_px: int,
        mask_scale: tuple[float, float] = (1.0, 1.0),
        zoom: float = 1.0,
        paste_gain: float = 1.0,
    ) -> None:
        if not zoom >= 1.0:
            raise ValueError(f"crop zoom {zoom}: must be >= 1 (1 is the whole-face crop)")
        self.config = config
        self.size_px = size_px
        # the model's crop_zoom: 1 crops the tracked face square; above it the crop closes in
        # on the lower face (``affine``)
        self.zoom = float(zoom)
        # (height, width): the model's own mask geometry (``SayAnythingConfig.mask_scale``),
        # multiplied by the user's ``mask_height_scale`` / ``mask_width_scale``
        self.mask_scale = (float(mask_scale[0]), float(mask_scale[1]))
        # the model's own paste gain (``SayAnythingConfig.paste_gain``), multiplied by the user's
        # ``mask_paste_gain``: the paste's weight is min(1, both x the feathered mask)
        self.paste_gain = float(paste_gain) * float(config.mask_paste_gain)

    def affine(self, face: FaceState) -> np.ndarray:
        """2x3 map from frame pixels to this cropper's crop pixels. At zoom 1 it is the tracked
        face square. Above 1 the square shrinks by the zoom and its centre moves down the face by
        ``LOWER_FACE_DROP * (1 - 1/zoom)`` of the face square's side: the mask's centre sits
        about 0.18 of that side below the face square's centre, so at zoom 2 the mask is centred
        and at 1.7 nearly so, with room for the chin and the nose."""
        if self.zoom == 1.0:
            return face.affine(self.size_px)
        drop = LOWER_FACE_DROP * (1.0 - 1.0 / self.zoom) * face.side_px
        c, s = math.cos(face.angle_rad), math.sin(face.angle_rad)
        center = (face.center[0] - s * drop, face.center[1] + c * drop)  # down the face, across the roll
        return replace(face, center=center, side_px=face.side_px / self.zoom).affine(self.size_px)

    def crop(self, image: np.ndarray, face: FaceState) -> np.ndarray:
        m = self.affine(face)
        return cv2.warpAffine(
            image, m, (self.size_px, self.size_px), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )

    def keypoints(self, face: FaceState) -> np.ndarray:
        """``face``'s keypoints in this cropper's crop pixels."""
        m = self.affine(face)
        return face.keypoints @ m[:, :2].T + m[:, 2]

    def mouth_darkness(self, crop: np.ndarray, mask: np.ndarray, face: FaceState) -> float:
        """How open the mouth in ``crop`` looks, from its pixels alone: the share of a box around
        the mouth (0.8 x 0.6 eye distances) darker than half the median brightness of the
        lower-face ``mask``. An open mouth shows its dark inside, a closed one only the line
        between the lips. For comparing frames of one face, not faces with each other."""
        n = self.size_px
        kp = self.keypoints(face)
        eye = float(np.linalg.norm(kp[LEFT_EYE] - kp[RIGHT_EYE]))
        cx, cy = (float(v) for v in kp[MOUTH])
        x0, x1 = max(0, round(cx - 0.4 * eye)), min(n, round(cx + 0.4 * eye) + 1)
        y0, y1 = max(0, round(cy - 0.25 * eye)), min(n, round(cy + 0.35 * eye) + 1)
        region = mask >= 0.5
        if x1 <= x0 or y1 <= y0 or not region.any():
            return 0.0
        luma = crop.astype(np.float32) @ LUMA
        return float((luma[y0:y1, x0:x1] < 0.5 * float(np.median(luma[region]))).mean())

    def mouth_mask(self, face: FaceState) -> np.ndarray:
        """Feathered lower-face mask in crop pixels, float32 in [0, 1].

        An ellipse that adapts to the face: its top halfway between nose and mouth, its bottom
        one eye distance below the mouth and its half width 0.85 eye distances, so it holds the
        lips and the jaw and chin, which drop when the mouth opens (a mask around the lips only
        would leave the original speaker's jaw moving; measured on rendered characters, where
        the jaw moves with the opening: ``model/README.md``).
        """
        n = self.size_px
        kp = self.keypoints(face)
        eye_dist = float(np.linalg.norm(kp[LEFT_EYE] - kp[RIGHT_EYE]))
        nose, mouth = kp[NOSE], kp[MOUTH]
        nm = max(float(np.linalg.norm(mouth - nose)), 1.0)
        top = mouth[1] - 0.55 * nm
        bottom = mouth[1] + 1.0 * eye_dist
        cy = (top + bottom) / 2
        ax = 0.85 * eye_dist * self.config.mask_width_scale * self.mask_scale[1]
        ay = (bottom - top) / 2 * self.config.mask_height_scale * self.mask_scale[0]
        mask = np.zeros((n, n), np.float32)
        cv2.ellipse(
            mask, (round(float(mouth[0])), round(cy)), (max(1, round(ax)), max(1, round(ay))), 0, 0, 360, 1.0, -1
        )
        f = self.config.mask_feather_px * n / 256 * self.zoom  # of a 256 px whole-face crop
        if f > 0:
            k = 2 * math.ceil(2 * f) + 1
            mask = np.asarray(cv2.GaussianBlur(mask, (k, k), f), np.float32)
            mask[mask < 1 / 255] = 0.0
            np.minimum(mask, 1.0, out=mask)  # the blur's rounding can leave 1 + 1e-7
        return mask

    def _roi(
        self, shape: tuple[int, ...], mask: np.ndarray, face: FaceState
    ) -> tuple[int, int, int, int, np.ndarray] | None:
        """The box the mask touches in a frame of ``shape``, and the 2x3 map from that box's
        pixels to crop pixels."""
        h, w = shape[:2]
        ys, xs = np.nonzero(mask)
        if xs.size == 0:
            return None
        # only the mask's bounding box (in frame pixels) is touched
        inv = cv2.invertAffineTransform(self.affine(face))
        bx = np.array(
            [[xs.min(), ys.min()], [xs.max() + 1, ys.min()], [xs.min(), ys.max() + 1], [xs.max() + 1, ys.max() + 1]],
            np.float32,
        )
        corners = bx @ inv[:, :2].T + inv[:, 2]
        x0, y0 = np.floor(corners.min(0)).astype(int) - 1
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            return None
        roi_inv = inv.copy()
        roi_inv[:, 2] -= (x0, y0)
        return x0, y0, x1, y1, cv2.invertAffineTransform(roi_inv)

    def paste(
        self,
        image: np.ndarray,
        crop: np.ndarray,
        mask: np.ndarray,
        face: FaceState,
        refine: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> np.ndarray:
        """Blend ``crop`` into a copy of ``image`` where ``mask`` > 0. Pixels whose pasted mask
        is 0 are returned bit-exact. ``refine`` (e.g. an enrolled ``DetailNet``) takes the crop
        warped to the frame's pixels over the mask's box, (H, W, 3) float, and returns what to
        blend instead."""

        def source(roi_m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
            gen = self._warp(crop, roi_m, size).astype(np.float32)
            return gen if refine is None else np.asarray(refine(gen), np.float32)

        return self._blend(image, mask, face, source)

    def scale(self, face: FaceState) -> float:
        """Frame pixels per crop pixel for ``face``."""
        return face.side_px / self.zoom / self.size_px

    def paste_relative(
        self,
        image: np.ndarray,
        delta: np.ndarray,
        mask: np.ndarray,
        face: FaceState,
        ref_image: np.ndarray,
        ref_face: FaceState,
    ) -> np.ndarray:
        """Like :meth:`paste`, but what is blended in is the reference frame at full resolution
        (mapped onto this frame through both faces' crops) plus ``delta`` (signed crop pixels: the
        model's change from its rendering of the reference), so the mask keeps the person's own
        colours and texture and takes the mouth's motion from the model."""
        to_ref = cv2.invertAffineTransform(self.affine(ref_face))

        def source(roi_m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
            # ROI pixels -> crop pixels (roi_m) -> reference frame pixels (to_ref)
            m = to_ref[:, :2] @ roi_m
            m[:, 2] += to_ref[:, 2]
            ref = self._warp(ref_image, m, size).astype(np.float32)
            return ref + self._warp(delta.astype(np.float32), roi_m, size)

        return self._blend(image, mask, face, source)

    def warped(
        self, shape: tuple[int, ...], crop: np.ndarray, mask: np.ndarray, face: FaceState
    ) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray] | None:
        """What :meth:`paste` blends into a frame of ``shape``, before blending: the frame box
        ``(x0, y0, x1, y1)`` the mask touches, ``crop`` warped to that box's pixels (float32) and
        the mask warped the same way (the blend's weight, for :func:`blend`); None when the mask
        touches no pixel of the frame."""
        box = self._roi(shape, mask, face)
        if box is None:
            return None
        x0, y0, x1, y1, roi_m = box
        size = (x1 - x0, y1 - y0)
        alpha = self._alpha(self.paste_weight(mask, face), roi_m, size)
        return (x0, y0, x1, y1), self._warp(crop, roi_m, size).astype(np.float32), alpha

    def paste_weight(self, mask: np.ndarray, face: FaceState) -> np.ndarray:
        """The paste's weight in crop pixels: ``mask`` times the paste gain, at most 1, so the
        pixels it touches are the mask's. With ``mask_paste_radius`` the gain falls off with the
        distance from the mouth point (a Gaussian of that many eye distances): the lips' feather
        takes the model's pixels, the jaw's and cheeks' keep the input's blend."""
        if self.paste_gain == 1.0:
            return mask
        gain: float | np.ndarray = self.paste_gain
        r = float(self.config.mask_paste_radius)
        if r > 0:
            kp = self.keypoints(face)
            eye = max(float(np.linalg.norm(kp[LEFT_EYE] - kp[RIGHT_EYE])), 1.0)
            ys, xs = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]].astype(np.float32)
            d2 = ((xs - kp[MOUTH][0]) ** 2 + (ys - kp[MOUTH][1]) ** 2) / (r * eye) ** 2
            gain = 1.0 + (self.paste_gain - 1.0) * np.exp(-d2)
        return np.minimum(mask * gain, 1.0).astype(np.float32)

    @staticmethod
    def _alpha(mask: np.ndarray, roi_m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        return np.asarray(cv2.warpAffine(mask, roi_m, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0))

    @staticmethod
    def _warp(src: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        return np.asarray(cv2.warpAffine(src, m, size, flags=flags, borderMode=cv2.BORDER_REPLICATE))

    def _blend(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        face: FaceState,
        source: Callable[[np.ndarray, tuple[int, int]], np.ndarray],
    ) -> np.ndarray:
        out = image.copy()
        box = self._roi(image.shape, mask, face)
        if box is None:
            return out
        x0, y0, x1, y1, roi_m = box
        size = (x1 - x0, y1 - y0)
        alpha = self._alpha(self.paste_weight(mask, face), roi_m, size)
        out[y0:y1, x0:x1] = blend(out[y0:y1, x0:x1], source(roi_m, size), alpha)
        return out


def blend(roi: np.ndarray, gen: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``gen`` (float pixels) blended into the uint8 pixels ``roi`` with weight ``alpha`` (H, W),
    rounded to uint8; where ``alpha`` is 0, ``roi`` bit-exact."""
    a = alpha[..., None]
    mixed = roi.astype(np.float32) + a * (gen - roi.astype(np.float32))
    return np.where(a > 0, np.clip(np.rint(mixed), 0, 255), roi).astype(np.uint8)
