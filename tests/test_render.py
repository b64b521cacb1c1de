"""Procedural characters for lip-sync training (model/train/render.py): output format,
determinism, style variety, mouth opening, blinks, pose-exact keypoints and MediaPipe detection."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from model.train.render import (
    BACKGROUND_STYLES,
    HAIR_STYLES,
    CharacterStyle,
    HeadPose,
    MouthShape,
    pose_matrix,
    random_style,
    render_frame,
)
from stream.face import MOUTH, MediaPipeFaceDetector

NEUTRAL = MouthShape(0.0, 0.5, 0.0)
LUMA = np.array([0.299, 0.587, 0.114])


def luma(rgb: np.ndarray | tuple[int, int, int]) -> np.ndarray:
    return np.asarray(rgb, np.float64) @ LUMA


def style(seed: int) -> CharacterStyle:
    return random_style(np.random.default_rng(seed))


@pytest.fixture(scope="module")
def detector() -> Iterator[MediaPipeFaceDetector]:
    d = MediaPipeFaceDetector()
    yield d
    d.close()


# -- format and determinism -------------------------------------------------------------------
@pytest.mark.parametrize("size", [256, 128, 201])
def test_output_shape_dtype_and_keypoint_layout(size: int) -> None:
    img, kp = render_frame(style(0), HeadPose(), MouthShape(0.4, 0.5, 0.2), 0.0, size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert kp.shape == (6, 2) and kp.dtype == np.float32
    assert np.all(kp >= 0) and np.all(kp < size)
    r_eye, l_eye, nose, mouth, r_ear, l_ear = kp
    # BlazeFace order: the character's right (image left) first
    assert r_ear[0] < r_eye[0] < nose[0] < l_eye[0] < l_ear[0]
    assert r_eye[1] < nose[1] < mouth[1] and l_eye[1] < nose[1]
    assert abs(mouth[0] - nose[0]) < 1e-3 * size
    # face centred slightly above the middle, about half the frame wide
    assert 0.45 * size < (r_ear[0] + l_ear[0]) / 2 < 0.55 * size
    assert 0.35 * size < kp[:4, 1].mean() < 0.55 * size
    assert 0.38 * size < l_ear[0] - r_ear[0] < 0.55 * size


def test_too_small_a_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        render_frame(style(0), HeadPose(), NEUTRAL, 0.0, 16)


def test_same_inputs_give_identical_frames() -> None:
    st, pose, mouth = style(3), HeadPose(4.5, -3.25, 1.07, 5.5), MouthShape(0.63, 0.3, 0.7, 0.2)
    a, ka = render_frame(st, pose, mouth, 0.3)
    b, kb = render_frame(st, pose, mouth, 0.3)
    assert np.array_equal(a, b) and np.array_equal(ka, kb)
    assert style(3) == st  # same seed, same character
    c, _ = render_frame(st, pose, dataclasses.replace(mouth, open=0.6), 0.3)
    assert not np.array_equal(a, c)


def test_random_styles_vary() -> None:
    styles = [style(s) for s in range(120)]
    skins = {s.skin_rgb for s in styles}
    backgrounds = {s.background_rgb1 for s in styles}
    assert len(skins) > 110 and len(backgrounds) > 110
    skin_luma = [float(luma(s.skin_rgb)) for s in styles]
    assert min(skin_luma) < 70 and max(skin_luma) > 200  # dark to light
    assert len({s.lip_rgb for s in styles}) > 110
    assert {s.hair_style for s in styles} == set(range(len(HAIR_STYLES)))
    assert {s.background_style for s in styles} == set(range(len(BACKGROUND_STYLES)))
    assert any(s.glasses for s in styles) and not all(s.glasses for s in styles)
    assert len({s.hair_rgb for s in styles}) > 100 and len({s.eye_rgb for s in styles}) > 100
    # and they render differently
    a, _ = render_frame(styles[0], HeadPose(), NEUTRAL, 0.0)
    b, _ = render_frame(styles[1], HeadPose(), NEUTRAL, 0.0)
    assert np.mean(np.abs(a.astype(np.int16) - b)) > 20


# -- mouth and eyes ---------------------------------------------------------------------------
def dark_mouth_pixels(st: CharacterStyle, mouth: MouthShape, anchor: np.ndarray, size: int = 256) -> int:
    """Pixels darker than half the lips and skin, in a box from just above the closed lip line
    (``anchor``) to below the lowest the lower lip goes."""
    img, _ = render_frame(st, HeadPose(), mouth, 0.0, size)
    x, y = np.round(anchor).astype(int)
    box = img[y - size // 25 : y + size // 10, x - size // 8 : x + size // 8 + 1]
    threshold = 0.5 * min(luma(st.lip_rgb), luma(st.skin_rgb))
    return int((luma(box) < threshold).sum())


@pytest.mark.parametrize("seed", [0, 4, 11, 29, 41])  # light to dark skin, lipstick
@pytest.mark.parametrize(("width", "rnd"), [(0.5, 0.0), (1.0, 0.0), (0.2, 1.0)])
def test_visible_mouth_opening_grows_with_open(seed: int, width: float, rnd: float) -> None:
    st = style(seed)
    _, kp = render_frame(st, HeadPose(), MouthShape(0.0, width, rnd), 0.0)
    counts = [dark_mouth_pixels(st, MouthShape(o, width, rnd), kp[MOUTH]) for o in np.linspace(0.0, 1.0, 6)]
    assert all(b > a for a, b in zip(counts, counts[1:], strict=False)), counts
    assert counts[-1] > 150  # wide open is a big dark hole at 256 px
    # in steps of 0.1 the count can stall by a few anti-aliased pixels where the teeth come in
    fine = [dark_mouth_pixels(st, MouthShape(o, width, rnd), kp[MOUTH]) for o in np.linspace(0.0, 1.0, 11)]
    assert all(b >= 0.95 * a for a, b in zip(fine, fine[1:], strict=False)), fine
    assert fine[1] > fine[0] + 20  # dark from open 0.1


def test_teeth_and_tongue_show_as_the_mouth_opens() -> None:
    st = CharacterStyle()  # light teeth, red tongue, mid skin

    def count(mouth: MouthShape, rgb: tuple[int, int, int], tol: int = 12) -> int:
        img, kp = render_frame(st, HeadPose(), mouth, 0.0)
        x, y = np.round(kp[MOUTH]).astype(int)
        box = img[y - 30 : y + 30, x - 35 : x + 36].astype(np.int16)
        return int((np.abs(box - np.array(rgb)).max(axis=2) <= tol).sum())

    teeth = [count(MouthShape(o, 0.5, 0.0), st.teeth_rgb) for o in (0.0, 0.1, 0.2, 0.3, 0.6)]
    assert teeth[0] == 0 and teeth[1] == 0 and teeth[2] > 20 and teeth[3] > 60 and teeth[4] > 60, teeth
    tongue = [count(MouthShape(o, 0.5, 0.0), st.tongue_rgb) for o in (0.3, 0.5, 1.0)]
    assert tongue[0] == 0 and 0 < tongue[1] < tongue[2], tongue
    # f / v: a nearly closed mouth with the lower lip under the upper teeth
    assert count(MouthShape(0.05, 0.5, 0.0, lip_bite=1.0), st.teeth_rgb) > 40
    assert count(MouthShape(0.05, 0.5, 0.0), st.teeth_rgb) == 0


def iris_pixels(st: CharacterStyle, blink: float) -> int:
    """Blue pixels around both eyes: the visible irises of a blue-eyed character (no skin, hair or
    lash line is blue)."""
    img, kp = render_frame(st, HeadPose(), NEUTRAL, blink)
    n = 0
    for x, y in np.round(kp[:2]).astype(int):
        box = img[y - 10 : y + 11, x - 14 : x + 15].astype(np.int16)
        n += int((box[..., 2] - box[..., 0] > 40).sum())
    return n


@pytest.mark.parametrize("seed", [0, 3, 12, 41])
def test_blink_closes_the_eyes(seed: int) -> None:
    st = dataclasses.replace(style(seed), eye_rgb=(60, 120, 170))
    counts = [iris_pixels(st, b) for b in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert counts[0] > 40, counts
    assert all(b <= a for a, b in zip(counts, counts[1:], strict=False)) and counts[2] < 0.8 * counts[0], counts
    assert counts[-1] == 0  # closed: only the lid and the lash line


# -- pose -------------------------------------------------------------------------------------
POSES = [HeadPose(12.0, -7.5, 1.0, 0.0), HeadPose(0.0, 0.0, 1.15, 0.0), HeadPose(0.0, 0.0, 1.0, 8.0),
         HeadPose(-9.3, 6.1, 0.87, -6.5)]  # fmt: skip


@pytest.mark.parametrize("pose", POSES)
def test_keypoints_move_exactly_with_the_pose(pose: HeadPose) -> None:
    st, mouth = style(5), MouthShape(0.5, 0.4, 0.3)
    _, k0 = render_frame(st, HeadPose(), mouth, 0.0)
    _, k = render_frame(st, pose, mouth, 0.0)
    m = pose_matrix(pose, 256)
    np.testing.assert_allclose(k, k0 @ m[:, :2].T + m[:, 2], atol=1e-3)
    # the map is the pose's similarity: its scale and roll (counter-clockwise on screen)
    fit, _ = cv2.estimateAffinePartial2D(k0, k)
    assert fit is not None
    np.testing.assert_allclose(np.hypot(fit[0, 0], fit[1, 0]), pose.scale, atol=1e-4)
    np.testing.assert_allclose(np.degrees(np.arctan2(fit[0, 1], fit[0, 0])), pose.roll_deg, atol=1e-2)
    # at the same size, a rendered frame's keypoints are in pixels: the mouth moves by the offset exactly
    if pose.scale == 1.0 and pose.roll_deg == 0.0:
        np.testing.assert_allclose(k - k0, np.tile([pose.dx, pose.dy], (6, 1)), atol=1e-3)


@pytest.mark.parametrize("pose", POSES)
def test_the_drawn_head_moves_with_the_keypoints(pose: HeadPose) -> None:
    """The nominal frame warped by the pose matrix matches the posed frame over the face."""
    st = dataclasses.replace(style(7), background_style=0, glasses=False)
    mouth = MouthShape(0.5, 0.4, 0.3)
    a, k0 = render_frame(st, HeadPose(), mouth, 0.0)
    b, k = render_frame(st, pose, mouth, 0.0)
    warped = cv2.warpAffine(a, pose_matrix(pose, 256), (256, 256), flags=cv2.INTER_LINEAR)
    # compare inside the face: a box spanning the eyes to below the mouth
    x0, x1 = int(k[:2, 0].min()) - 5, int(k[:2, 0].max()) + 6
    y0, y1 = int(k[:2, 1].min()) - 10, int(k[MOUTH, 1]) + 12
    moved = np.abs(warped[y0:y1, x0:x1].astype(np.int16) - b[y0:y1, x0:x1]).mean()
    unmoved = np.abs(a[y0:y1, x0:x1].astype(np.int16) - b[y0:y1, x0:x1]).mean()
    # what is left is resampling blur at edges (the warp interpolates; the renderer draws sharp)
    assert moved < 4.0 and moved < 0.2 * unmoved, (moved, unmoved)


def test_a_whole_pixel_offset_moves_the_head_pixel_for_pixel() -> None:
    st = dataclasses.replace(style(7), background_style=0)
    a, _ = render_frame(st, HeadPose(), NEUTRAL, 0.0)
    b, k = render_frame(st, HeadPose(12.0, -7.0), NEUTRAL, 0.0)
    x0, x1 = int(k[4, 0]), int(k[5, 0])  # ear to ear, brows to chin
    y0, y1 = int(k[0, 1]) - 25, int(k[MOUTH, 1]) + 25
    diff = np.abs(a[y0 + 7 : y1 + 7, x0 - 12 : x1 - 12].astype(np.int16) - b[y0:y1, x0:x1])
    assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 8


# -- MediaPipe --------------------------------------------------------------------------------
def test_mediapipe_finds_the_rendered_faces(detector: MediaPipeFaceDetector) -> None:
    size, n, found = 256, 20, 0
    errors = []
    for seed in range(n):
        rng = np.random.default_rng(100 + seed)
        st = random_style(rng)
        pose = HeadPose(
            float(rng.uniform(-10, 10)),
            float(rng.uniform(-8, 8)),
            float(rng.uniform(0.85, 1.15)),
            float(rng.uniform(-8, 8)),
        )
        mouth = MouthShape(*(float(v) for v in rng.uniform(0, 1, 3)))
        img, kp = render_frame(st, pose, mouth, float(rng.uniform(0, 1) < 0.2), size)
        dets = detector.detect(img)
        if len(dets) != 1:
            continue
        err = float(np.linalg.norm(dets[0].keypoints[MOUTH] - kp[MOUTH])) / size
        errors.append(err)
        if err < 0.08:
            found += 1
    assert found >= 0.9 * n, (found, errors)
    assert np.median(errors) < 0.03
