"""Faces: the real MediaPipe detector on the bundled portrait, tracking schedule and selection,
crop, mouth mask and feathered paste-back."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import numpy as np
import pytest
from fakes import FixedFaceDetector

import stream
from stream.config import FaceConfig
from stream.face import MOUTH, NOSE, FaceCropper, FaceDetection, FaceState, FaceTracker, MediaPipeFaceDetector
from stream.sources.file import decode_video

SAMPLE_FACE = os.path.join(os.path.dirname(stream.__file__), "assets", "sample_face.mp4")
R = 128


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return list(itertools.islice(decode_video(SAMPLE_FACE), 7))


@pytest.fixture(scope="module")
def detector() -> Iterator[MediaPipeFaceDetector]:
    d = MediaPipeFaceDetector()
    yield d
    d.close()


@pytest.fixture(scope="module")
def face(frames: list[np.ndarray], detector: MediaPipeFaceDetector) -> FaceState:
    state = FaceTracker(FaceConfig(), detector).update(frames[0])
    assert state is not None
    return state


class CountingDetector:
    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        self.calls += 1
        return self.inner.detect(image)  # type: ignore[attr-defined]


class ScriptedDetector:
    """Returns the fixed face on calls where ``script[call]`` is True, nothing otherwise."""

    def __init__(self, script: list[bool], box: tuple[float, float, float, float] = (200, 100, 400, 300)) -> None:
        self.script = script
        self.face = FixedFaceDetector([box])
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        present = self.script[self.calls] if self.calls < len(self.script) else False
        self.calls += 1
        return self.face.detect(image) if present else []


def to_crop(face: FaceState, points: np.ndarray, size: int = R) -> np.ndarray:
    m = face.affine(size)
    return points @ m[:, :2].T + m[:, 2]


# -- real detector ----------------------------------------------------------------------------
def test_real_detector_finds_one_face_with_the_mouth_inside(
    frames: list[np.ndarray], detector: MediaPipeFaceDetector
) -> None:
    h, w = frames[0].shape[:2]
    for img in frames[:3]:
        dets = detector.detect(img)
        assert len(dets) == 1
        d = dets[0]
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert d.score > 0.5
        assert d.keypoints.shape == (6, 2)
        mx, my = d.keypoints[MOUTH]
        assert x0 < mx < x1 and y0 < my < y1
        # upright portrait: eyes above the nose above the mouth, mouth in the lower half of the box
        eyes_y = d.keypoints[:2, 1].max()
        assert eyes_y < d.keypoints[NOSE, 1] < my
        assert my > (y0 + y1) / 2


def test_real_detector_finds_nothing_in_a_blank_frame(detector: MediaPipeFaceDetector) -> None:
    assert detector.detect(np.full((480, 640, 3), 128, np.uint8)) == []


def test_tracker_runs_the_real_detector_every_n_frames(
    frames: list[np.ndarray], detector: MediaPipeFaceDetector
) -> None:
    counting = CountingDetector(detector)
    tracker = FaceTracker(FaceConfig(detect_every_frames=3), counting)
    states = [tracker.update(img) for img in frames]  # 7 frames: detections on 0, 3, 6
    assert counting.calls == tracker.detections_run == 3
    assert all(s is not None for s in states)
    # after the first detection the velocity is zero: the prediction stays put until the next
    assert states[1].center == states[0].center and states[2].center == states[0].center
    assert states[3].center != states[0].center


class MovingFaceDetector:
    """A face box moving at a constant velocity (px per call of update, via a frame counter)."""

    def __init__(self, vx: float, vy: float) -> None:
        self.vx, self.vy = vx, vy
        self.frame = 0

    def box(self, frame: int) -> tuple[float, float, float, float]:
        x0, y0 = 100 + self.vx * frame, 100 + self.vy * frame
        return (x0, y0, x0 + 200, y0 + 200)

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        return FixedFaceDetector([self.box(self.frame)]).detect(image)


def test_tracker_predicts_motion_between_detections() -> None:
    det = MovingFaceDetector(4.0, -2.0)
    still = FixedFaceDetector([det.box(0)])
    tracker = FaceTracker(FaceConfig(detect_every_frames=3, smoothing=0.3), det)
    img = np.zeros((480, 640, 3), np.uint8)
    errors = []
    for frame in range(60):
        det.frame = frame
        state = tracker.update(img)
        assert state is not None
        truth = still.detect(img)[0].keypoints[MOUTH] + np.array([det.vx * frame, det.vy * frame])
        errors.append(float(np.linalg.norm(state.keypoints[MOUTH] - truth)))
    # a tracker that only held the last detection would lag by up to 2 frames (about 9 px)
    assert max(errors[30:]) < 1.0


class JitteryFaceDetector(MovingFaceDetector):
    """A still face whose detected box is off by up to 3 px, differently at every detection."""

    def __init__(self) -> None:
        super().__init__(0.0, 0.0)
        self.rng = np.random.default_rng(7)

    def box(self, frame: int) -> tuple[float, float, float, float]:
        dx, dy = self.rng.uniform(-3, 3, 2)
        return (100 + dx, 100 + dy, 300 + dx, 300 + dy)


def test_tracker_spreads_each_correction_over_the_frames_to_the_next_detection() -> None:
    # the mouth pasted back on the face must not jump on every detection frame (a flicker at
    # fps / N): the frames into a detection frame move no more than the frames between
    every = 3
    tracker = FaceTracker(FaceConfig(detect_every_frames=every, smoothing=0.3), JitteryFaceDetector())
    img = np.zeros((480, 640, 3), np.uint8)
    pos = []
    for _ in range(90):
        state = tracker.update(img)
        assert state is not None
        pos.append(state.keypoints[MOUTH].astype(np.float64))
    step = np.linalg.norm(np.diff(np.array(pos), axis=0), axis=1)[every:]  # step[i]: into frame i + 1 + every
    into_det = np.array([(i + 1 + every) % every == 0 for i in range(len(step))])
    assert step[~into_det].mean() > 0.1  # the corrections are shown, between detections too
    assert step[into_det].mean() < 1.3 * step[~into_det].mean()


@pytest.mark.parametrize(("every", "n", "calls"), [(1, 10, 10), (4, 10, 3), (5, 5, 1), (3, 12, 4)])
def test_tracker_detection_schedule(every: int, n: int, calls: int) -> None:
    det = FixedFaceDetector([(200, 100, 400, 300)])
    tracker = FaceTracker(FaceConfig(detect_every_frames=every), det)
    img = np.zeros((480, 640, 3), np.uint8)
    for _ in range(n):
        assert tracker.update(img) is not None
    assert det.calls == calls


# -- crop, mask, paste ------------------------------------------------------------------------
@pytest.mark.parametrize("size", [64, 96, 128, 256])
def test_crop_is_square_rgb_of_the_model_size(frames: list[np.ndarray], face: FaceState, size: int) -> None:
    crop = FaceCropper(FaceConfig(), size).crop(frames[0], face)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    assert crop.std() > 10  # a face, not a flat border


def test_crop_is_centred_on_the_face_and_level(face: FaceState) -> None:
    kp = to_crop(face, face.keypoints)
    # eyes level after the roll is taken out, mouth below centre, everything inside the crop
    assert abs(kp[0, 1] - kp[1, 1]) < 1.0
    assert np.all((kp[:4] > 0) & (kp[:4] < R))
    assert R / 2 < kp[MOUTH, 1] < R
    assert abs(kp[MOUTH, 0] - R / 2) < R / 8


def test_mouth_mask_covers_the_mouth_only(face: FaceState) -> None:
    mask = FaceCropper(FaceConfig(), R).mouth_mask(face)
    assert mask.shape == (R, R) and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    assert mask.max() == 1.0
    kp = to_crop(face, face.keypoints)
    mx, my = np.round(kp[MOUTH]).astype(int)
    assert mask[my, mx] > 0.9
    assert np.all(mask[my - 3 : my + 4, mx - 3 : mx + 4] > 0.5)
    for x, y in np.round(kp[:2]).astype(int):  # the eyes are outside it
        assert mask[y, x] == 0.0
    for y, x in [(0, 0), (0, R - 1), (R - 1, 0), (R - 1, R - 1)]:
        assert mask[y, x] == 0.0
    # feathered: values strictly between 0 and 1 exist
    assert np.any((mask > 0.05) & (mask < 0.95))


def test_mask_scales_with_config(face: FaceState) -> None:
    base = FaceCropper(FaceConfig(), R).mouth_mask(face)
    wide = FaceCropper(FaceConfig(mask_width_scale=1.5), R).mouth_mask(face)
    sharp = FaceCropper(FaceConfig(mask_feather_px=0), R).mouth_mask(face)
    assert (wide > 0).sum() > (base > 0).sum()
    assert set(np.unique(sharp).tolist()) == {0.0, 1.0}


def test_a_models_mask_scale_multiplies_the_users(face: FaceState) -> None:
    # the model's trained mask geometry and the user's face.mask_*_scale compose
    model = FaceCropper(FaceConfig(), R, mask_scale=(1.2, 1.3)).mouth_mask(face)
    user = FaceCropper(FaceConfig(mask_height_scale=1.2, mask_width_scale=1.3), R).mouth_mask(face)
    assert np.array_equal(model, user)
    both = FaceCropper(FaceConfig(mask_width_scale=1.5), R, mask_scale=(1.0, 1.2)).mouth_mask(face)
    assert np.array_equal(both, FaceCropper(FaceConfig(mask_width_scale=1.8), R).mouth_mask(face))
    assert (model > 0).sum() > (FaceCropper(FaceConfig(), R).mouth_mask(face) > 0).sum()


def test_a_zoomed_crop_closes_in_on_the_lower_face(frames: list[np.ndarray], face: FaceState) -> None:
    # SayAnythingConfig.crop_zoom: the same face, the mouth mask larger in the crop by about the
    # zoom squared, still whole inside it, the eyes out of it; pasting back stays bit-exact
    # outside the mask; zoom 1 is the whole-face crop
    whole, near = FaceCropper(FaceConfig(), R), FaceCropper(FaceConfig(), R, zoom=1.5)
    assert np.array_equal(whole.affine(face), face.affine(R))
    m1, m2 = whole.mouth_mask(face), near.mouth_mask(face)
    assert 1.8 < (m2 > 0).sum() / (m1 > 0).sum() < 2.7
    assert m2[0].max() == m2[-1].max() == m2[:, 0].max() == m2[:, -1].max() == 0.0
    eyes = to_crop(face, face.keypoints[:2]) * 1.0  # whole-face crop pixels
    m = near.affine(face)
    eyes_near = face.keypoints[:2] @ m[:, :2].T + m[:, 2]
    assert (eyes_near[:, 1] < 0.15 * R).all() and (eyes[:, 1] > 0.2 * R).all()
    img = frames[0]
    crop = np.random.default_rng(2).integers(0, 256, (R, R, 3), dtype=np.uint8)
    out = near.paste(img, crop, m2, face)
    pasted = whole.paste(np.zeros_like(img), np.full((R, R, 3), 255, np.uint8), m1, face) == 0
    far = pasted.all(-1) & (near.paste(np.zeros_like(img), np.full((R, R, 3), 255, np.uint8), m2, face) == 0).all(-1)
    assert np.array_equal(out[far], img[far]) and not np.array_equal(out, img)
    with pytest.raises(ValueError, match="crop zoom"):
        FaceCropper(FaceConfig(), R, zoom=0.5)


def test_training_masks_redrawn_for_a_larger_scale_match_the_engines(
    frames: list[np.ndarray], detector: MediaPipeFaceDetector
) -> None:
    # fewstep.rescaled_mask derives a larger mask's training data from cached {0, 1} masks
    from model.train.fewstep import rescaled_mask

    n, feather = 64, FaceConfig().mask_feather_px * 64 / 256
    tracker = FaceTracker(FaceConfig(), detector)
    base, big = FaceCropper(FaceConfig(), n), FaceCropper(FaceConfig(), n, mask_scale=(1.2, 1.2))
    ious = []
    for img in frames:
        st = tracker.update(img)
        assert st is not None
        m1 = (base.mouth_mask(st) > 0.02).astype(np.uint8)
        assert np.array_equal(rescaled_mask(m1, (1.0, 1.0), feather), m1)
        want = big.mouth_mask(st) > 0.02
        got = rescaled_mask(m1, (1.2, 1.2), feather).astype(bool)
        ious.append((want & got).sum() / (want | got).sum())
    assert min(ious) > 0.9, ious


def test_paste_leaves_pixels_outside_the_mask_bit_exact(frames: list[np.ndarray], face: FaceState) -> None:
    img = frames[0]
    h, w = img.shape[:2]
    cropper = FaceCropper(FaceConfig(), R)
    mask = cropper.mouth_mask(face)
    rng = np.random.default_rng(1)
    crop = rng.integers(0, 256, (R, R, 3), dtype=np.uint8)
    before = img.copy()
    out = cropper.paste(img, crop, mask, face)
    assert np.array_equal(img, before)  # the input is not modified
    # where the pasted mask is: paste a white crop onto a black frame
    alpha = cropper.paste(np.zeros_like(img), np.full((R, R, 3), 255, np.uint8), mask, face)[..., 0]
    zero = alpha == 0
    assert zero.sum() > 0.9 * h * w
    assert np.array_equal(out[zero], img[zero])
    changed = np.any(out != img, axis=2)
    assert changed.sum() > 100
    assert np.all(alpha[changed] > 0)
    # full-mask pixels hold the crop (up to the warp's interpolation of a random crop)
    assert (alpha == 255).sum() > 100


def test_a_paste_gain_pastes_the_feather_more_fully_and_touches_no_other_pixel(
    frames: list[np.ndarray], face: FaceState
) -> None:
    # face.mask_paste_gain: the weight is min(1, gain x mask), so the same pixels are touched,
    # the feather takes more of the crop, and where the mask is at least 1 / gain the crop alone
    img, crop = frames[0], np.full((R, R, 3), 255, np.uint8)
    mask = FaceCropper(FaceConfig(), R).mouth_mask(face)
    got = [FaceCropper(FaceConfig(mask_paste_gain=g), R).warped(img.shape, crop, mask, face) for g in (1.0, 2.0)]
    assert got[0] is not None and got[1] is not None and got[0][0] == got[1][0]
    a1, a2 = got[0][2], got[1][2]
    assert np.array_equal(a1 > 0, a2 > 0) and np.all(a2 >= a1 - 1e-6)
    gained = FaceCropper(FaceConfig(mask_paste_gain=2.0), R)
    assert np.array_equal(gained.paste_weight(mask, face), np.minimum(2 * mask, 1.0))
    assert ((a1 > 0.05) & (a1 < 0.45)).sum() > 20 and (a2 == 1).sum() > (a1 == 1).sum()
    # and the paste blends with it: pixels the weight leaves at 0 are bit-exact
    black = np.zeros_like(img)
    out = FaceCropper(FaceConfig(mask_paste_gain=2.0), R).paste(black, crop, mask, face)[..., 0]
    x0, y0, x1, y1 = got[1][0]
    assert np.array_equal(out[y0:y1, x0:x1], np.rint(255 * a2).astype(np.uint8))
    outside = np.ones(out.shape, bool)
    outside[y0:y1, x0:x1] = False
    assert not out[outside].any()


def test_a_paste_radius_keeps_the_gain_near_the_lips(face: FaceState) -> None:
    # face.mask_paste_radius: the gain falls off from the mouth point, so the feather at the lips
    # takes the crop more fully and the feather at the chin keeps the mask's own blend
    mask = FaceCropper(FaceConfig(), R).mouth_mask(face)
    w = FaceCropper(FaceConfig(mask_paste_gain=3.0, mask_paste_radius=0.5), R).paste_weight(mask, face)
    assert np.array_equal(w > 0, mask > 0) and np.all(w >= mask) and np.all(w <= np.minimum(3 * mask, 1) + 1e-6)
    kp = to_crop(face, face.keypoints)
    mx, my = np.round(kp[MOUTH]).astype(int)
    row = np.nonzero((mask[:, mx] > 0.05) & (mask[:, mx] < 0.5))[0]
    top, bottom = row.min(), row.max()  # the feather above the lips, and at the chin
    assert top < my < bottom
    assert w[top, mx] > 1.5 * mask[top, mx] and w[bottom, mx] < 1.05 * mask[bottom, mx]


def test_paste_of_the_frames_own_crop_changes_almost_nothing(frames: list[np.ndarray], face: FaceState) -> None:
    img = frames[0]
    cropper = FaceCropper(FaceConfig(), 256)
    mask = cropper.mouth_mask(face)
    same = cropper.paste(img, cropper.crop(img, face), mask, face)
    diff = np.abs(same.astype(int) - img.astype(int))
    assert diff.mean() < 0.2 and np.percentile(diff[diff > 0], 50) <= 3
    # the same mask with a different face's crop changes the mouth a lot: the round trip is real
    other = cropper.paste(img, cropper.crop(img[::-1].copy(), face), mask, face)
    assert np.abs(other.astype(int) - img.astype(int)).mean() > 5 * diff.mean()


def test_paste_with_an_empty_mask_is_a_copy(frames: list[np.ndarray], face: FaceState) -> None:
    cropper = FaceCropper(FaceConfig(), R)
    out = cropper.paste(frames[0], np.zeros((R, R, 3), np.uint8), np.zeros((R, R), np.float32), face)
    assert out is not frames[0] and np.array_equal(out, frames[0])


def test_paste_relative_keeps_the_reference_at_full_resolution_and_adds_the_delta(
    frames: list[np.ndarray], face: FaceState
) -> None:
    """model.texture = "reference": with a zero delta, pasting relative to this same frame gives
    the frame back (no pass through the low-resolution crop: the 64 px round trip of ``paste``
    loses far more); a delta shifts the mask region by it and leaves the rest bit-exact; a
    reference whose face sits elsewhere is mapped through both faces' crops."""
    img = frames[0]
    cropper = FaceCropper(FaceConfig(), 64)
    mask = cropper.mouth_mask(face)
    zero = np.zeros((64, 64, 3), np.float32)
    same = cropper.paste_relative(img, zero, mask, face, img, face)
    assert np.abs(same.astype(int) - img.astype(int)).max() <= 1
    low = cropper.paste(img, cropper.crop(img, face), mask, face)
    assert np.abs(low.astype(int) - img.astype(int)).mean() > 10 * max(
        np.abs(same.astype(int) - img.astype(int)).mean(), 1e-3
    )
    dark = cropper.paste_relative(img, zero - 40.0, mask, face, img, face)
    alpha = cropper.paste(np.zeros_like(img), np.full((64, 64, 3), 255, np.uint8), mask, face)[..., 0]
    core, outside = alpha == 255, alpha == 0
    assert np.array_equal(dark[outside], img[outside])
    lowered = img[core].astype(int) - dark[core].astype(int)
    assert np.median(lowered) == 40
    # the same face 30 px to the right in a shifted reference frame maps back onto this frame
    shifted = np.roll(img, 30, axis=1)
    moved = FaceState((face.center[0] + 30, face.center[1]), face.side_px, face.angle_rad, face.keypoints + (30, 0))
    back = cropper.paste_relative(img, zero, mask, face, shifted, moved)
    assert np.abs(back[core].astype(int) - img[core].astype(int)).max() <= 1


# -- selection and loss ------------------------------------------------------------------------
BOXES = [(20.0, 200.0, 100.0, 280.0), (250.0, 100.0, 450.0, 300.0), (480.0, 50.0, 620.0, 190.0)]


def expected_center(box: tuple[float, float, float, float]) -> tuple[float, float]:
    x0, y0, x1, y1 = box
    return (x0 + x1) / 2, y0 + 0.5625 * (y1 - y0)  # a quarter of the way from box centre to mouth


@pytest.mark.parametrize(("select", "chosen"), [("largest", 1), ("leftmost", 0), ("rightmost", 2), ("center", 1)])
def test_tracker_selects_the_configured_face(select: str, chosen: int) -> None:
    tracker = FaceTracker(FaceConfig(select=select, smoothing=0.0), FixedFaceDetector(BOXES))  # type: ignore[arg-type]
    state = tracker.update(np.zeros((480, 640, 3), np.uint8))
    assert state is not None
    assert state.center == pytest.approx(expected_center(BOXES[chosen]), abs=1e-3)
    x0, y0, x1, y1 = BOXES[chosen]
    assert state.side_px == pytest.approx(max(x1 - x0, y1 - y0) * 1.8)


def test_default_selection_is_largest() -> None:
    assert FaceConfig().select == "largest"
    tracker = FaceTracker(FaceConfig(), FixedFaceDetector(BOXES))
    state = tracker.update(np.zeros((480, 640, 3), np.uint8))
    assert state is not None and state.center == pytest.approx(expected_center(BOXES[1]), abs=1e-3)


def test_tracked_face_is_not_stolen_by_a_larger_newcomer() -> None:
    det = FixedFaceDetector([BOXES[0]])
    tracker = FaceTracker(FaceConfig(detect_every_frames=1, smoothing=0.0), det)
    img = np.zeros((480, 640, 3), np.uint8)
    tracker.update(img)
    det.boxes = [BOXES[1], (22.0, 202.0, 102.0, 282.0)]  # a bigger face appears; ours moved 2 px
    state = tracker.update(img)
    assert state is not None and state.center == pytest.approx(expected_center(det.boxes[1]), abs=1e-3)


@pytest.mark.parametrize("lost_after", [0, 1, 4, 10])
def test_tracker_drops_the_face_after_lost_after_frames_without_detections(lost_after: int) -> None:
    det = ScriptedDetector([True] * 3 + [False] * 30 + [True])
    tracker = FaceTracker(FaceConfig(detect_every_frames=1, lost_after_frames=lost_after), det)
    img = np.zeros((480, 640, 3), np.uint8)
    states = [tracker.update(img) for _ in range(3 + 30 + 1)]
    assert all(s is not None for s in states[:3])
    missing = states[3:33]
    assert all(s is not None for s in missing[:lost_after])  # held through lost_after misses
    assert all(s is None for s in missing[lost_after:])  # dropped on the next
    assert states[33] is not None  # found again


@pytest.mark.parametrize(("every", "lost_after"), [(3, 4), (5, 2), (5, 0)])
def test_tracker_with_sparse_detection(every: int, lost_after: int) -> None:
    img = np.zeros((480, 640, 3), np.uint8)
    # always present: never dropped between detections, even when lost_after < every
    cfg = FaceConfig(detect_every_frames=every, lost_after_frames=lost_after)
    tracker = FaceTracker(cfg, ScriptedDetector([True] * 99))
    assert all(tracker.update(img) is not None for _ in range(4 * every + 1))
    # seen once, then missed: held for lost_after frames from the first miss (frame `every`)
    tracker = FaceTracker(cfg, ScriptedDetector([True]))
    states = [tracker.update(img) for _ in range(every + lost_after + 3)]
    held = every + lost_after
    assert all(s is not None for s in states[:held])
    assert all(s is None for s in states[held:])
