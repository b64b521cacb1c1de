"""Procedural talking characters for lip-sync training: frontal, semi-realistic cartoon faces whose
mouth shape is known exactly in every frame.

``render_frame(style, pose, mouth, blink)`` draws one RGB frame and returns it with the six
BlazeFace keypoints of the drawn face (the same rows ``stream.face`` uses: right eye, left eye,
nose tip, mouth centre, right ear tragion, left ear tragion; the character's right is the image
left). The faces are drawn so MediaPipe's short-range detector finds them, which lets the engine's
own face tracking and cropping run on rendered clips unchanged.

Geometry: the head is laid out in canonical units in which the face is 2 wide (ellipse half-width
1), x to the image right, y down, origin at the face centre (the eye line). One similarity transform
(``_head_matrix``) takes canonical units to output pixels; ``HeadPose`` adds its translation, scale
and roll to it, so every drawn point and every keypoint moves exactly with the pose. The shoulders
follow the pose's translation and scale but not its roll. The background never moves.

Drawing is numpy + cv2 only: anti-aliased polygons with sub-pixel coordinates, a half-resolution
blurred shading map for soft shadows, and no randomness (``random_style`` is where the randomness
lives), so a frame is a pure function of its arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

RGB = tuple[int, int, int]

HAIR_STYLES = ("bald", "buzz", "short", "side_part", "bob", "long", "afro", "bun", "curly")
BACKGROUND_STYLES = ("flat", "gradient", "stripes", "blobs", "room")
NOSE_STYLES = ("button", "straight", "wide")

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = float(1 << _SHIFT)
_AA = cv2.LINE_AA

# Layout, canonical units (face half-width 1, origin at the face centre on the eye line, y down)
FACE_CENTER_Y = 0.45  # face centre at this fraction of the frame height (nominal pose)
EYE_X, EYE_Y = 0.43, 0.0
NOSE_TIP_Y = 0.43  # drawn tip; the keypoint sits a little lower, where BlazeFace puts it
NOSE_KP_Y = 0.46
EAR_KP_X = 0.9  # BlazeFace's tragion points sit just inside the drawn face edge
MOUTH_Y = 0.78  # the closed lip line
EAR_Y = 0.2
MAX_DARK = 0.36  # height of the dark inside of the mouth at open=1
TEETH_H = 0.11  # upper teeth showing when open
TONGUE_H = 0.08  # tongue showing when wide open

_T = np.linspace(0.0, 2.0 * math.pi, 48, endpoint=False)
_COS, _SIN = np.cos(_T), np.sin(_T)
_U = np.linspace(-1.0, 1.0, 21)  # parameter across mouth / eye / brow curves


@dataclass(frozen=True)
class CharacterStyle:
    """Everything that makes one character look like itself (colours are RGB 0-255)."""

    face_width: float = 0.48  # face width as a fraction of the frame width at scale 1
    face_aspect: float = 1.3  # face half-height below the eyes / half-width
    jaw_width: float = 0.8  # 0.6 pointed chin .. 1.0 square jaw
    skin_rgb: RGB = (224, 172, 138)
    lip_rgb: RGB = (190, 110, 105)
    lip_fullness: float = 1.0  # lip thickness multiplier
    mouth_width: float = 1.0  # mouth width multiplier
    eye_rgb: RGB = (90, 60, 35)  # iris
    eye_size: float = 1.0
    eye_spacing: float = 1.0
    eyebrow_rgb: RGB = (60, 40, 30)
    eyebrow_thickness: float = 1.0
    eyebrow_arch: float = 0.5  # 0 flat .. 1 strongly arched
    nose_style: int = 1  # index into NOSE_STYLES
    nose_width: float = 1.0
    teeth_rgb: RGB = (240, 236, 225)
    tongue_rgb: RGB = (200, 90, 95)
    ear_size: float = 1.0
    hair_style: int = 2  # index into HAIR_STYLES
    hair_rgb: RGB = (60, 40, 30)
    hair_fringe: int = 0  # hairline: 0 rounded, 1 side-swept, 2 straight bangs (styles with a fringe)
    shirt_rgb: RGB = (60, 90, 150)
    v_neck: bool = False
    blush: float = 0.15  # cheek redness 0..1
    glasses: bool = False
    glasses_rgb: RGB = (30, 30, 30)
    earrings: bool = False
    earring_rgb: RGB = (230, 190, 80)
    background_style: int = 0  # index into BACKGROUND_STYLES
    background_rgb1: RGB = (180, 190, 200)
    background_rgb2: RGB = (120, 130, 150)
    background_seed: int = 0  # layout of stripes / blobs / room


@dataclass(frozen=True)
class HeadPose:
    dx: float = 0.0  # offset in pixels of the output frame
    dy: float = 0.0
    scale: float = 1.0  # 1.0 = nominal
    roll_deg: float = 0.0  # in-plane rotation, counter-clockwise on screen (cv2's convention)


@dataclass(frozen=True)
class MouthShape:
    open: float  # 0 closed .. 1 wide open (jaw/lip opening)
    width: float  # 0 narrow .. 1 wide (spread lips, e.g. "ee")
    round: float  # 0 spread .. 1 rounded/protruded (e.g. "oo", "w")
    lip_bite: float = 0.0  # 0..1: lower lip under upper teeth ("f", "v")


# -- random styles ----------------------------------------------------------------------------
_SKIN = np.array(
    [
        (255, 228, 206),
        (246, 208, 180),
        (234, 186, 152),
        (219, 166, 126),
        (196, 138, 100),
        (170, 112, 78),
        (138, 88, 60),
        (108, 68, 46),
        (84, 54, 38),
        (64, 42, 31),
    ],
    np.float64,
)
_HAIR = [
    (25, 20, 18),
    (45, 32, 25),
    (70, 48, 32),
    (105, 72, 45),
    (150, 100, 60),
    (200, 160, 100),
    (225, 200, 140),
    (140, 60, 30),
    (170, 170, 170),
    (235, 235, 230),
    (60, 60, 150),
    (190, 80, 140),
]
_HAIR_P = np.array([14, 16, 14, 10, 6, 6, 5, 6, 5, 2, 1.5, 1.5])
_IRIS = [(70, 45, 25), (100, 65, 35), (40, 28, 20), (110, 100, 50), (70, 110, 60), (70, 110, 160), (110, 120, 130)]
_IRIS_P = np.array([25, 20, 15, 10, 8, 14, 8])
_HAIR_STYLE_P = np.array([5, 10, 18, 14, 12, 16, 8, 8, 9])  # in HAIR_STYLES order
_LIPSTICK = [(180, 30, 50), (200, 80, 110), (120, 40, 70), (215, 110, 110), (150, 60, 60)]


def _rgb(c: np.ndarray | tuple[float, ...]) -> RGB:
    a = np.clip(np.round(np.asarray(c, np.float64)), 0, 255).astype(int)
    return (int(a[0]), int(a[1]), int(a[2]))


def _jitter(rng: np.random.Generator, c: tuple[float, ...] | np.ndarray, amount: float) -> RGB:
    return _rgb(np.asarray(c, np.float64) + rng.normal(0.0, amount, 3))


def random_style(rng: np.random.Generator) -> CharacterStyle:
    """A random character: skin tones light to dark, varied lips, eyes, hair, clothes, accessories
    and backgrounds. Deterministic for a given generator state."""
    t = rng.uniform(0.0, len(_SKIN) - 1)
    i = min(int(t), len(_SKIN) - 2)
    skin_base = _SKIN[i] * (1 - (t - i)) + _SKIN[i + 1] * (t - i)
    skin = _jitter(rng, skin_base * np.array([1.0, rng.uniform(0.96, 1.03), rng.uniform(0.95, 1.05)]), 4)
    darkness = t / (len(_SKIN) - 1)
    if rng.random() < 0.15:  # lipstick
        lip = _jitter(rng, _LIPSTICK[rng.integers(len(_LIPSTICK))], 10)
    else:  # natural: redder and darker than the skin
        tint = np.array([0.82, 0.55, 0.58]) * rng.uniform(0.85, 1.05)
        lip = _jitter(rng, np.asarray(skin, np.float64) * tint + np.array([25, 5, 10]) * (1 - darkness), 6)
    hair = _HAIR[rng.choice(len(_HAIR), p=_HAIR_P / _HAIR_P.sum())]
    hair_rgb = _jitter(rng, hair, 6)
    brow = _rgb(np.asarray(hair_rgb, np.float64) * 0.6) if sum(hair_rgb) < 450 else _jitter(rng, (90, 70, 55), 8)
    iris = _jitter(rng, _IRIS[rng.choice(len(_IRIS), p=_IRIS_P / _IRIS_P.sum())], 6)
    shirt = _rgb(rng.uniform(20, 235, 3))
    bg_style = int(rng.integers(len(BACKGROUND_STYLES)))
    bg1 = _rgb(rng.uniform(30, 240, 3))
    bg2 = _rgb(np.asarray(bg1, np.float64) * rng.uniform(0.4, 0.8) + rng.uniform(-40, 40, 3))
    if rng.random() < 0.3:  # a contrasting second colour
        bg2 = _rgb(rng.uniform(30, 240, 3))
    return CharacterStyle(
        face_width=float(rng.uniform(0.45, 0.52)),
        face_aspect=float(rng.uniform(1.2, 1.42)),
        jaw_width=float(rng.uniform(0.62, 0.98)),
        skin_rgb=skin,
        lip_rgb=lip,
        lip_fullness=float(rng.uniform(0.75, 1.35)),
        mouth_width=float(rng.uniform(0.88, 1.12)),
        eye_rgb=iris,
        eye_size=float(rng.uniform(0.88, 1.12)),
        eye_spacing=float(rng.uniform(0.94, 1.06)),
        eyebrow_rgb=brow,
        eyebrow_thickness=float(rng.uniform(0.6, 1.5)),
        eyebrow_arch=float(rng.uniform(0.0, 1.0)),
        nose_style=int(rng.integers(len(NOSE_STYLES))),
        nose_width=float(rng.uniform(0.85, 1.2)),
        teeth_rgb=_jitter(rng, (238, 232, 215), 6),
        tongue_rgb=_jitter(rng, (195, 85, 95), 8),
        ear_size=float(rng.uniform(0.85, 1.15)),
        hair_style=int(rng.choice(len(HAIR_STYLES), p=_HAIR_STYLE_P / _HAIR_STYLE_P.sum())),
        hair_rgb=hair_rgb,
        hair_fringe=int(rng.integers(3)),
        shirt_rgb=shirt,
        v_neck=bool(rng.random() < 0.4),
        blush=float(rng.uniform(0.0, 0.5) * (1 - 0.6 * darkness)),
        glasses=bool(rng.random() < 0.2),
        glasses_rgb=_rgb(rng.choice([20, 60, 110, 160], 3) if rng.random() < 0.5 else (25, 25, 25)),
        earrings=bool(rng.random() < 0.25),
        earring_rgb=_jitter(rng, (225, 190, 80) if rng.random() < 0.6 else (210, 210, 215), 8),
        background_style=bg_style,
        background_rgb1=bg1,
        background_rgb2=bg2,
        background_seed=int(rng.integers(1 << 30)),
    )


# -- geometry ---------------------------------------------------------------------------------
def _head_matrix(style: CharacterStyle, pose: HeadPose, size: int) -> np.ndarray:
    """2x3 matrix from canonical head units to output pixels."""
    s = style.face_width * size / 2.0 * pose.scale
    r = math.radians(pose.roll_deg)
    c, si = math.cos(r) * s, math.sin(r) * s
    cx, cy = size / 2.0 + pose.dx, FACE_CENTER_Y * size + pose.dy
    return np.array([[c, si, cx], [-si, c, cy]], np.float64)


def _body_matrix(style: CharacterStyle, pose: HeadPose, size: int) -> np.ndarray:
    s = style.face_width * size / 2.0 * pose.scale
    return np.array([[s, 0.0, size / 2.0 + pose.dx], [0.0, s, FACE_CENTER_Y * size + pose.dy]], np.float64)


def pose_matrix(pose: HeadPose, size: int = 256) -> np.ndarray:
    """2x3 similarity taking points of the head drawn at the nominal pose to the same points drawn
    at ``pose`` (output pixels): scale and roll about the nominal face centre, then the offset."""
    r = math.radians(pose.roll_deg)
    c, si = math.cos(r) * pose.scale, math.sin(r) * pose.scale
    cx, cy = size / 2.0, FACE_CENTER_Y * size
    return np.array(
        [[c, si, cx + pose.dx - (c * cx + si * cy)], [-si, c, cy + pose.dy - (-si * cx + c * cy)]], np.float64
    )


def _ramp(x: float, a: float, b: float) -> float:
    t = min(1.0, max(0.0, (x - a) / (b - a)))
    return t * t * (3 - 2 * t)


def _darker(c: RGB, f: float) -> RGB:
    return (int(c[0] * f), int(c[1] * f), int(c[2] * f))


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return (
        int(round(a[0] + (b[0] - a[0]) * t)),
        int(round(a[1] + (b[1] - a[1]) * t)),
        int(round(a[2] + (b[2] - a[2]) * t)),
    )


@dataclass(frozen=True)
class _Mouth:
    """The mouth's curves in canonical units, sampled at x = ``xs``."""

    xs: np.ndarray
    upper_outer: np.ndarray
    upper_inner: np.ndarray
    lower_inner: np.ndarray
    lower_outer: np.ndarray
    teeth_bottom: np.ndarray
    tongue_top: np.ndarray
    center: tuple[float, float]
    chin_drop: float


def _mouth_geometry(style: CharacterStyle, m: MouthShape) -> _Mouth:
    op = min(1.0, max(0.0, m.open))
    wd = min(1.0, max(0.0, m.width))
    rd = min(1.0, max(0.0, m.round))
    bite = min(1.0, max(0.0, m.lip_bite))
    w = style.mouth_width * (0.33 + 0.12 * wd - 0.12 * rd)  # half width
    xs = _U * w
    # The dark inside is the controlled quantity: its height grows with `open` (a little faster
    # at first), and the lips part further to show the upper teeth (from open ~0.15) and the
    # tongue (from ~0.4) on top of it, so the visible opening always grows with `open`.
    teeth_h = TEETH_H * _ramp(op, 0.12, 0.25) * (1 - 0.6 * rd)  # rounded lips cover the teeth more
    tongue_h = TONGUE_H * _ramp(op, 0.35, 0.6)
    h = MAX_DARK * op**0.8 + teeth_h + tongue_h  # lip gap at the centre
    up, down = 0.22 * h, 0.78 * h
    wi = w * (0.84 - 0.22 * rd)  # half width of the opening
    e = 0.75 - 0.25 * rd  # opening profile: 0.5 is an ellipse
    c = np.clip(1.0 - (xs / wi) ** 2, 0.0, 1.0) ** e
    lift = 0.035 * bite  # the upper lip rises to bare the teeth for f / v
    yu = MOUTH_Y - (up + lift) * c
    yl_open = MOUTH_Y + down * c
    # biting: the lower lip rolls up behind the upper teeth' lower half
    yl = (1 - bite) * yl_open + bite * (yu + 0.045 * c)
    th = ((1 - bite) * teeth_h + bite * 0.09) * c
    teeth_bottom = yu + np.minimum(th, (yl - yu) + bite)
    ct = np.clip(1.0 - (xs / (0.8 * wi)) ** 2, 0.0, 1.0) ** 0.5
    tongue_top = np.maximum(yl - tongue_h * ct, teeth_bottom)
    full = style.lip_fullness * (1 + 0.35 * rd)
    prof = np.clip(1.0 - (xs / w) ** 2, 0.0, 1.0)
    bow = 1.0 - 0.3 * np.exp(-((xs / (0.14 * w)) ** 2))  # cupid's bow
    upper_outer = yu - 0.1 * full * prof**0.6 * bow
    lower_outer = yl + 0.13 * full * (1 - 0.35 * bite) * prof**0.55
    mid = len(xs) // 2
    center = (0.0, float(0.5 * (upper_outer[mid] + lower_outer[mid])))  # the middle of the lips
    chin_drop = float(yl[mid] - MOUTH_Y)
    return _Mouth(xs, upper_outer, yu, yl, lower_outer, teeth_bottom, tongue_top, center, chin_drop)


def _face_outline(style: CharacterStyle, chin_drop: float) -> np.ndarray:
    """Face contour (N, 2) canonical: an ellipse above the eyes, a jaw narrowing to the chin below."""
    b_top, b_low = 1.28, style.face_aspect
    x = _COS.copy()
    y = np.where(_SIN < 0, b_top * _SIN, b_low * _SIN)
    s = np.clip(_SIN, 0.0, 1.0)
    x = x * (1 - (1 - style.jaw_width) * s**1.6)
    y = np.where(y > 0, y * (1 - 0.08 * s**6), y)  # flatter chin
    y = y + chin_drop * np.clip((y - 0.1) / (b_low - 0.1), 0.0, 1.0)
    return np.stack([x, y], 1)


def keypoints_canonical(style: CharacterStyle, mouth: MouthShape) -> np.ndarray:
    """The six BlazeFace keypoints in canonical head units (see the module docstring)."""
    return _keypoints(style, _mouth_geometry(style, mouth))


def _keypoints(style: CharacterStyle, mg: _Mouth) -> np.ndarray:
    ex = EYE_X * style.eye_spacing
    return np.array(
        [[-ex, EYE_Y], [ex, EYE_Y], [0.0, NOSE_KP_Y], mg.center, [-EAR_KP_X, EAR_Y], [EAR_KP_X, EAR_Y]], np.float64
    )


# -- drawing helpers --------------------------------------------------------------------------
class _Painter:
    def __init__(self, img: np.ndarray, m: np.ndarray) -> None:
        self.img = img
        self.m = m
        self.unit = math.hypot(m[0, 0], m[0, 1])  # pixels per canonical unit

    def pts(self, q: np.ndarray) -> np.ndarray:
        p = q @ self.m[:, :2].T + self.m[:, 2]
        return np.round(p * _ONE).astype(np.int32).reshape(-1, 1, 2)

    def poly(self, q: np.ndarray | list[np.ndarray], color: RGB | int) -> None:
        """Fill each polygon (one call each: cv2 fills several at once even-odd, so overlaps would be holes)."""
        for a in q if isinstance(q, list) else [q]:
            if len(a):
                cv2.fillPoly(self.img, [self.pts(a)], color, _AA, _SHIFT)  # type: ignore[arg-type]

    def line(self, q: np.ndarray, color: RGB | int, width: float, closed: bool = False) -> None:
        t = max(1, int(round(width * self.unit)))
        cv2.polylines(self.img, [self.pts(q)], closed, color, t, _AA, _SHIFT)  # type: ignore[arg-type]

    def circle(self, c: tuple[float, float], r: float, color: RGB | int, width: float = -1) -> None:
        p = self.pts(np.array([c], np.float64))[0, 0]
        rr = int(round(r * self.unit * _ONE))
        t = -1 if width < 0 else max(1, int(round(width * self.unit)))
        cv2.circle(self.img, (int(p[0]), int(p[1])), rr, color, t, _AA, _SHIFT)  # type: ignore[arg-type]


def _ellipse(cx: float, cy: float, ax: float, ay: float, angle_deg: float = 0.0) -> np.ndarray:
    x, y = ax * _COS, ay * _SIN
    if angle_deg:
        a = math.radians(angle_deg)
        x, y = x * math.cos(a) - y * math.sin(a), x * math.sin(a) + y * math.cos(a)
    return np.stack([x + cx, y + cy], 1)


def _band(xs: np.ndarray, top: np.ndarray, bottom: np.ndarray, min_height: float = 0.0) -> np.ndarray:
    """Polygon between two curves sampled at the same xs. With ``min_height`` it keeps only the span
    where the band is at least that high: cv2's anti-aliased fill draws a sliver thinner than a pixel
    as a whole pixel's line. Empty (0, 2) when nothing is left."""
    if min_height > 0:
        idx = np.flatnonzero(bottom - top >= min_height)
        if idx.size == 0:
            return np.zeros((0, 2))
        sl = slice(idx[0], idx[-1] + 1)
        xs, top, bottom = xs[sl], top[sl], bottom[sl]
    return np.concatenate([np.stack([xs, top], 1), np.stack([xs[::-1], bottom[::-1]], 1)])


# -- background -------------------------------------------------------------------------------
def _background(style: CharacterStyle, size: int) -> np.ndarray:
    c1 = np.array(style.background_rgb1, np.uint8)
    c2 = np.array(style.background_rgb2, np.uint8)
    kind = BACKGROUND_STYLES[style.background_style % len(BACKGROUND_STYLES)]
    seed = style.background_seed
    if kind == "gradient":
        tiny = np.stack([c1, c2]).reshape(2, 1, 3) if seed % 2 else np.stack([c1, c2, c1, c1]).reshape(2, 2, 3)
        return cv2.resize(tiny, (size, size), interpolation=cv2.INTER_LINEAR)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = c1
    if kind == "stripes":
        n = 4 + seed % 7
        ang = math.radians((seed // 7) % 4 * 45)
        d = np.array([math.cos(ang), math.sin(ang)])
        nrm = np.array([-d[1], d[0]])
        w = 1.5 * size / n
        quads = []
        for k in range(-n, n + 1, 2):
            o = size / 2 + nrm * (k * w / 2)
            q = np.array([o - d * size, o + d * size, o + d * size + nrm * w / 2, o - d * size + nrm * w / 2])
            quads.append(np.round(q * _ONE).astype(np.int32).reshape(-1, 1, 2))
        cv2.fillPoly(img, quads, style.background_rgb2, _AA, _SHIFT)  # type: ignore[arg-type]
    elif kind == "blobs":
        g = 32  # soft blobs: drawn small, blurred, scaled up
        tiny = np.empty((g, g, 3), np.uint8)
        tiny[:] = c1
        s = seed
        for _ in range(6):
            s = (s * 1103515245 + 12345) & 0x7FFFFFFF
            x, y, r = s % g, (s >> 8) % g, 3 + (s >> 16) % 7
            cv2.circle(tiny, (x, y), r, style.background_rgb2, -1, _AA)
        cv2.GaussianBlur(tiny, (0, 0), 2.0, dst=tiny)
        return cv2.resize(tiny, (size, size), interpolation=cv2.INTER_LINEAR)
    elif kind == "room":
        # a door on one side, a framed picture on the other, a skirting band at the bottom
        x0 = (0.02 + 0.12 * (seed % 5) / 4) * size
        door = np.array([[x0, 0.12 * size], [x0 + 0.22 * size, 0.12 * size], [x0 + 0.22 * size, size], [x0, size]])
        x1 = (0.8 - 0.1 * ((seed >> 4) % 3) / 2) * size
        y1 = (0.08 + 0.1 * ((seed >> 6) % 3) / 2) * size
        pic = np.array([[x1, y1], [x1 + 0.16 * size, y1], [x1 + 0.16 * size, y1 + 0.2 * size], [x1, y1 + 0.2 * size]])
        if seed % 2:
            door[:, 0] = size - door[:, 0]
            pic[:, 0] = size - pic[:, 0]
        frame = _darker(style.background_rgb2, 0.6)
        for q, fill in ((door, style.background_rgb2), (pic, _mix(style.background_rgb1, style.background_rgb2, 0.5))):
            qi = np.round(q * _ONE).astype(np.int32)
            cv2.fillPoly(img, [qi], fill, _AA, _SHIFT)
            cv2.polylines(img, [qi], True, frame, max(1, size // 80), _AA, _SHIFT)
        floor = (0.82 + 0.08 * ((seed >> 3) % 3) / 2) * size
        cv2.rectangle(img, (0, int(floor)), (size, size), _darker(style.background_rgb1, 0.75), -1)
    return img


# -- the character ----------------------------------------------------------------------------
def _back_hair(p: _Painter, style: CharacterStyle, kind: str) -> None:
    col = style.hair_rgb
    if kind == "long":
        top = _ellipse(0.0, -0.05, 1.17, 1.45)
        n = len(top) // 2
        # over the top from the left to the right, down the right side, back up the left
        p.poly(np.concatenate([top[n:], top[:1], [[1.28, 1.0], [1.32, 2.2], [-1.32, 2.2], [-1.28, 1.0]]]), col)
    elif kind == "bob":
        p.poly(_ellipse(0.0, 0.05, 1.22, 1.42), col)
        p.poly(np.array([[-1.22, 0.05], [1.22, 0.05], [1.2, 1.05], [-1.2, 1.05]]), col)
    elif kind == "afro":
        p.poly(_ellipse(0.0, -0.45, 1.5, 1.3), col)
        for a in np.linspace(0.0, 2 * math.pi, 12, endpoint=False):
            p.circle((1.47 * math.cos(a), -0.45 + 1.27 * math.sin(a)), 0.26, col)
    elif kind == "bun":
        p.circle((0.0, -1.5), 0.36, col)
        p.circle((0.0, -1.5), 0.36, _darker(col, 0.75), 0.03)


def _front_hair(p: _Painter, style: CharacterStyle, kind: str) -> None:
    col = style.hair_rgb
    if kind == "bald":
        p.line(_ellipse(-0.3, -0.95, 0.25, 0.12)[28:40], _mix(style.skin_rgb, (255, 255, 255), 0.35), 0.05)
        return
    vol = {"buzz": 0.015, "short": 0.07, "side_part": 0.08, "bob": 0.1, "afro": 0.04, "bun": 0.05, "curly": 0.09}
    v = vol.get(kind, 0.08)
    b_top = 1.28
    temple_y = -0.05 if kind != "buzz" else -0.15
    t0 = math.asin(min(0.99, -temple_y / (b_top + v)))
    t = np.linspace(t0, math.pi - t0, 40)
    outer = np.stack([(1.0 + v) * np.cos(t), -(b_top + v) * np.sin(t)], 1)
    hx = np.linspace(-1.0, 1.0, 25)
    ax = np.abs(hx)
    if kind in ("bob", "long") and style.hair_fringe == 2:
        hy = -0.42 + 0.1 * ax**4  # straight bangs
    elif kind == "side_part" or (kind in ("long", "bob", "short") and style.hair_fringe == 1):
        hy = -0.62 + 0.22 * (hx + 1) / 2 + 0.45 * ax**6
        hy = np.minimum(hy, -0.35 + 0.3 * ax**4)
    elif kind == "buzz":
        hy = -0.78 + 0.65 * ax**2.5
    else:
        hy = -0.66 + 0.6 * ax**3
    hy = np.minimum(hy, temple_y)
    hair_line = np.stack([hx * 1.0, hy], 1)
    cap = np.concatenate([outer, hair_line])  # over the top right to left, then the hairline left to right
    if kind == "afro":
        p.poly(cap, col)
        return
    if kind == "curly":
        p.poly(cap, col)
        for a in np.linspace(0.12, math.pi - 0.12, 15):
            p.circle(((1.0 + v) * math.cos(a), -(b_top + v) * math.sin(a)), 0.13, col)
        for x in np.linspace(-0.6, 0.6, 4):
            p.circle((float(x), float(-0.66 + 0.6 * abs(x) ** 3) - 0.06), 0.12, col)
        return
    p.poly(cap, col)
    if kind in ("short", "side_part", "bob", "long", "bun"):
        # sideburns down to the ears
        for sgn in (-1.0, 1.0):
            p.poly(
                np.array(
                    [
                        [sgn * 1.02, temple_y - 0.08],
                        [sgn * 0.9, temple_y - 0.08],
                        [sgn * 0.97, 0.12],
                        [sgn * 1.01, 0.12],
                    ]
                ),
                col,
            )
    hi = _mix(col, (255, 255, 255), 0.22)
    for k, r in enumerate((0.8, 0.92)):
        a = np.linspace(math.pi * (0.55 + 0.05 * k), math.pi * (0.8 + 0.04 * k), 8)
        p.line(np.stack([r * np.cos(a) * (1.0 + v), -r * np.sin(a) * (b_top + v)], 1), hi, 0.025)


def _eye(p: _Painter, style: CharacterStyle, cx: float, blink: float, side: float) -> tuple[np.ndarray, np.ndarray]:
    """Draws the eye's pre-shading parts; returns the lid curve and the crease curve (canonical)."""
    sk = style.eye_size
    ew, eh = 0.2 * sk, 0.085 * sk
    xs = cx + _U * ew
    u = _U * side  # +1 at the outer corner
    upper = EYE_Y - eh * (1 - _U**2) ** 0.7 * (1 + 0.15 * u) - 0.01 * u
    lower = EYE_Y + 0.75 * eh * (1 - _U**2) ** 0.9 * (1 - 0.1 * u) - 0.01 * u
    closed = lower - 0.25 * eh * (1 - _U**2)
    b = min(1.0, max(0.0, blink))
    lid = upper + (closed - upper) * b
    p.poly(_band(xs, upper, lower), (238, 236, 232))
    ri = 0.082 * sk
    p.circle((cx, EYE_Y), ri, _darker(style.eye_rgb, 0.55))
    p.circle((cx, EYE_Y), ri * 0.84, style.eye_rgb)
    p.circle((cx, EYE_Y), ri * 0.42, (15, 12, 12))
    skin = style.skin_rgb
    top = np.full_like(xs, EYE_Y - 0.2 * sk)
    p.poly(_band(xs, top, upper), skin)
    bottom = np.full_like(xs, EYE_Y + 0.17 * sk)
    p.poly(_band(xs, lower, bottom), skin)
    if b > 0:  # the lid, once it is a visible sliver
        p.poly(_band(xs, upper - 0.005, lid, 0.5 / p.unit), _darker(skin, 0.93))
    lid_line = np.stack([xs, lid], 1)
    crease = np.stack([xs[3:-2], (upper - 0.045 * sk - 0.02 * b)[3:-2]], 1)
    return lid_line, crease


def _shading(
    style: CharacterStyle, m: np.ndarray, size: int, face: np.ndarray, skin: list[np.ndarray], mg: _Mouth
) -> np.ndarray:
    """Half-resolution darkness map (uint8, 0 none .. 255 full): soft shadows, kept to the ``skin``
    polygons (face, neck, ears) so they never darken hair, clothes or the background."""
    n = (size + 1) // 2
    shade = np.zeros((n, n), np.uint8)
    mask = np.zeros((n, n), np.uint8)
    half = m * 0.5
    half[:, 2] -= 0.25  # cv2.resize's pixel-centre convention for the 2x upscale
    p = _Painter(shade, half)
    _Painter(mask, half).poly(skin, 255)
    neck_shadow = face.copy()
    neck_shadow[:, 1] += 0.22
    p.poly(neck_shadow, 200)
    p.poly(face, 170)
    inner = face * np.array([0.86, 0.84]) + np.array([-0.04, -0.12])
    p.poly(inner, 0)
    ex = EYE_X * style.eye_spacing
    for sgn in (-1.0, 1.0):
        p.poly(_ellipse(sgn * ex, EYE_Y - 0.03, 0.24 * style.eye_size, 0.13 * style.eye_size), 110)
    nw = style.nose_width
    # nose: shadowed side of the bridge, under the tip
    p.line(np.array([[0.1 * nw, -0.1], [0.13 * nw, 0.2], [0.17 * nw, 0.38]]), 120, 0.07)
    p.poly(_ellipse(0.0, NOSE_TIP_Y + 0.1, 0.17 * nw, 0.05), 150)
    # under the lower lip and beside the mouth
    lo = mg.lower_outer
    p.poly(_ellipse(0.0, float(lo[len(lo) // 2]) + 0.07, 0.2, 0.055), 90)
    cv2.GaussianBlur(shade, (0, 0), max(1.0, 0.035 * p.unit * 2), dst=shade)
    return cv2.multiply(shade, mask, scale=1 / 255)


def render_frame(
    style: CharacterStyle, pose: HeadPose, mouth: MouthShape, blink: float, size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one frame of ``style`` at ``pose`` with ``mouth`` and eyelids ``blink`` (0 open .. 1
    closed). Returns (image (size, size, 3) uint8 RGB, keypoints (6, 2) float32 in image pixels in
    BlazeFace order: right eye (image left), left eye, nose tip, mouth centre, right ear tragion,
    left ear tragion)."""
    if size < 32:
        raise ValueError(f"render_frame: size {size} is too small (32 px at least)")
    img = _background(style, size)
    m = _head_matrix(style, pose, size)
    p = _Painter(img, m)
    body = _Painter(img, _body_matrix(style, pose, size))
    kind = HAIR_STYLES[style.hair_style % len(HAIR_STYLES)]
    mg = _mouth_geometry(style, mouth)
    skin = style.skin_rgb

    _back_hair(p, style, kind)
    # neck (moves with the head), then the shirt (translation and scale only) over its base
    neck = np.array([[-0.46, 0.5], [0.46, 0.5], [0.5, 1.9], [0.6, 2.6], [-0.6, 2.6], [-0.5, 1.9]])
    p.poly(neck, _darker(skin, 0.9))
    sx = np.linspace(-0.55, 0.55, 15)
    neckline = 1.72 + (0.45 if style.v_neck else 0.22) * (1 - np.abs(sx) / 0.55) ** (1.0 if style.v_neck else 0.5)
    shoulder = np.array([[-3.3, 3.6], [-3.1, 2.6], [-2.7, 2.15], [-2.1, 1.92], [-1.4, 1.8], [-0.85, 1.7]])
    flip = shoulder[::-1] * np.array([-1.0, 1.0])
    shirt = np.concatenate([shoulder, np.stack([sx, neckline], 1), flip])
    body.poly(shirt, style.shirt_rgb)
    body.line(np.stack([sx, neckline], 1), _darker(style.shirt_rgb, 0.7), 0.04)
    # ears
    es = style.ear_size
    ears = [_ellipse(sgn * 0.97, EAR_Y, 0.15 * es, 0.3 * es, sgn * 8) for sgn in (-1.0, 1.0)]
    for sgn, ear in zip((-1.0, 1.0), ears, strict=True):
        p.poly(ear, _darker(skin, 0.94))
        p.poly(_ellipse(sgn * 1.0, EAR_Y + 0.02, 0.07 * es, 0.19 * es, sgn * 8), _darker(skin, 0.72))
    face = _face_outline(style, mg.chin_drop)
    p.poly(face, skin)
    if style.blush > 0:  # soft-edged: three nested ellipses, each a little redder
        for k in range(3):
            cheek = _mix(skin, (235, 110, 120), 0.1 * style.blush * (k + 1))
            for sgn in (-1.0, 1.0):
                p.poly(_ellipse(sgn * 0.5, 0.42, 0.22 - 0.05 * k, 0.13 - 0.03 * k), cheek)
    ex = EYE_X * style.eye_spacing
    eyes = [_eye(p, style, sgn * ex, blink, sgn) for sgn in (-1.0, 1.0)]

    shade = _shading(style, m, size, face, [face, neck, *ears], mg)
    n2 = 2 * shade.shape[0]
    shade = cv2.resize(shade, (n2, n2), interpolation=cv2.INTER_LINEAR)[:size, :size]
    keep = cv2.convertScaleAbs(shade, alpha=-0.42, beta=255)
    img[:] = cv2.multiply(img, cv2.merge([keep, keep, keep]), scale=1 / 255)

    # eyes: lash line, crease, catchlight
    for (lid, crease), sgn in zip(eyes, (-1.0, 1.0), strict=True):
        p.line(crease, _darker(skin, 0.72), 0.018)
        p.line(lid, (25, 18, 16), 0.035)
        p.line(lid[:4] if sgn < 0 else lid[-4:], (25, 18, 16), 0.045)  # outer corner flick
        r = 0.022 * style.eye_size
        if float(np.interp(sgn * ex + 0.03, lid[:, 0], lid[:, 1])) < EYE_Y - 0.03 - r:  # not under the lid
            p.circle((sgn * ex + 0.03, EYE_Y - 0.03), r, (250, 250, 250))
    # eyebrows
    bt = 0.055 * style.eyebrow_thickness
    for sgn in (-1.0, 1.0):
        bx = sgn * (ex + 0.02 + 0.27 * _U)
        arch = (0.05 + 0.07 * style.eyebrow_arch) * (1 - (_U - 0.15 * sgn) ** 2)
        y0 = -0.3 - arch + 0.03 * _U * sgn
        thick = bt * (1.1 - 0.55 * np.clip(_U * sgn, 0, 1)) * (1 - 0.3 * np.clip(-_U * sgn, 0, 1))
        p.poly(_band(bx, y0 - thick / 2, y0 + thick / 2), style.eyebrow_rgb)
    # nose
    nw = style.nose_width * (1.25 if NOSE_STYLES[style.nose_style % 3] == "wide" else 1.0)
    tip = NOSE_TIP_Y
    ns = _darker(skin, 0.62)
    if NOSE_STYLES[style.nose_style % 3] == "straight":
        p.line(np.array([[0.07 * nw, -0.05], [0.09 * nw, 0.2], [0.11 * nw, tip - 0.03]]), _darker(skin, 0.85), 0.02)
    for sgn in (-1.0, 1.0):
        p.poly(_ellipse(sgn * 0.075 * nw, tip + 0.06, 0.045 * nw, 0.022, -sgn * 20), ns)
        a = np.linspace(-0.6, 1.9, 9) if sgn > 0 else np.linspace(math.pi - 1.9, math.pi + 0.6, 9)
        p.line(
            np.stack([0.13 * nw * np.cos(a) + sgn * 0.06 * nw, tip + 0.06 * np.sin(a)], 1),
            _darker(skin, 0.78),
            0.018,
        )
    p.poly(_ellipse(0.0, tip - 0.03, 0.035 * nw, 0.05), _mix(skin, (255, 255, 255), 0.1))
    # mouth
    xs = mg.xs
    px = 1.0 / p.unit  # a pixel, in canonical units
    inner = _mix((10, 3, 4), style.lip_rgb, 0.05)
    if float(np.max(mg.lower_inner - mg.upper_inner)) > 1e-3:
        p.poly(_band(xs, mg.upper_inner, mg.lower_inner), inner)
        tongue = float(np.max(mg.lower_inner - mg.tongue_top))
        if tongue > 0.5 * px:  # coming out of the shadow as it grows past a couple of pixels
            shown = _mix(inner, style.tongue_rgb, min(1.0, tongue / (3 * px)))
            p.poly(_band(xs, mg.tongue_top, mg.lower_inner + 0.02 * (mg.lower_inner > mg.tongue_top), 0.5 * px), shown)
    lip = style.lip_rgb
    p.poly(_band(xs, mg.lower_inner, mg.lower_outer), lip)
    hl = _mix(lip, (255, 205, 200), 0.16)
    mid = slice(6, 15)
    p.line(np.stack([xs[mid] * 0.9, (0.4 * mg.lower_inner + 0.6 * mg.lower_outer)[mid]], 1), hl, 0.025)
    teeth = float(np.max(mg.teeth_bottom - mg.upper_inner))
    if teeth > 0.5 * px:  # as the tongue, out of the shadow; then tucked a little under the upper lip
        shown = _mix(inner, style.teeth_rgb, min(1.0, teeth / (3 * px)))
        over = np.minimum(0.01, 0.5 * (mg.teeth_bottom - mg.upper_inner))
        p.poly(_band(xs, mg.upper_inner - over, mg.teeth_bottom, 0.5 * px), shown)
        top, bottom = float(mg.upper_inner[len(xs) // 2]), float(mg.teeth_bottom[len(xs) // 2])
        if bottom - top > 0.03:  # the gap between the front incisors
            p.line(np.array([[0.0, top], [0.0, bottom - 0.01]]), _darker(style.teeth_rgb, 0.8), 0.01)
    p.poly(_band(xs, mg.upper_outer, mg.upper_inner), _darker(lip, 0.88))
    seam = _mix(_darker(lip, 0.45), inner, _ramp(mouth.open, 0.0, 0.1))  # lips touching, or the opening's edge
    p.line(np.stack([xs, mg.upper_inner], 1), seam, 0.018)
    for sgn in (-1.0, 1.0):
        p.circle((sgn * float(xs[-1]), MOUTH_Y), 0.015, _darker(lip, 0.65))
    # hair and accessories
    _front_hair(p, style, kind)
    if style.earrings:
        for sgn in (-1.0, 1.0):
            p.circle((sgn * 1.0, EAR_Y + 0.36 * es), 0.045, style.earring_rgb)
    if style.glasses:
        g = style.glasses_rgb
        for sgn in (-1.0, 1.0):
            p.line(_ellipse(sgn * ex, EYE_Y + 0.01, 0.29, 0.2), g, 0.035, closed=True)
            p.line(np.array([[sgn * (ex + 0.29), EYE_Y - 0.02], [sgn * 0.98, EYE_Y + 0.02]]), g, 0.03)
        p.line(np.array([[-ex + 0.27, EYE_Y - 0.04], [0.0, EYE_Y - 0.07], [ex - 0.27, EYE_Y - 0.04]]), g, 0.03)

    kp_px = _keypoints(style, mg) @ m[:, :2].T + m[:, 2]
    return img, kp_px.astype(np.float32)
