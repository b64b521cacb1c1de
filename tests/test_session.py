"""LipSyncSession end to end on a virtual clock: fixed-delay playout, fallbacks, silence, seams,
compositing, failures, no face, the degrade ladder and offline mode.

Everything runs on :class:`~stream.clock.VirtualClock` (or a manual clock in offline mode) with
fake faces, a fake model and a scripted VAD, so every timing below is exact and no test depends
on the wall clock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

import cv2
import numpy as np
import pytest
from fakes import (
    FixedFaceDetector,
    MarkerModel,
    NoFaceDetector,
    ScriptedVad,
    audio_frames,
    make_face_image,
    tone,
    video_frames,
)

from stream.clock import VirtualClock
from stream.config import Config, load
from stream.drive import run_offline, run_paced
from stream.face import FaceTracker
from stream.frames import AudioFrame, FrameKind, OutputAudio, OutputFrame, VideoFrame
from stream.session import LipSyncSession
from stream.worker import ModelChunk

FPS = 25
W, H = 320, 240
BOX = (110.0, 60.0, 210.0, 170.0)
RATE = 48000
BLOCK = 960  # 20 ms at 48 kHz: every video frame time is also an audio block time
FADE_S = 0.1  # vad.crossfade_ms default
FALLBACKS = {FrameKind.HOLD, FrameKind.REST}


# -- helpers ------------------------------------------------------------------------------
def config(*overrides: str) -> Config:
    """The defaults with the model's own pixels pasted: the marker model paints the mask grey,
    which ``model.texture = "auto"`` would (rightly) replace by the reference frame's mouth."""
    return load(None, ["model.texture=model", *overrides])


def moving_frames(n: int, first_pts: int = 0) -> list[VideoFrame]:
    """Frames whose every pixel (the mouth included) changes from frame to frame."""
    return [VideoFrame(make_face_image(W, H, seed=i), first_pts + i, Fraction(1, FPS)) for i in range(n)]


def still_frames(n: int) -> list[VideoFrame]:
    return list(video_frames(n, FPS, W, H))


def ramp_audio(duration_s: float, lo: float = 0.02, hi: float = 0.3, first_pts: int = 0) -> list[AudioFrame]:
    """A tone whose amplitude ramps linearly: MarkerModel's level then changes smoothly."""
    x = tone(duration_s, RATE, 2, amp_fn=lambda t: lo + (hi - lo) * t / duration_s)
    return [AudioFrame(f.samples, RATE, f.pts + first_pts, f.time_base) for f in audio_frames(x, RATE, BLOCK)]


def loud_audio(duration_s: float) -> list[AudioFrame]:
    return list(audio_frames(tone(duration_s, RATE, 2), RATE, BLOCK))


def interleave(video: list[VideoFrame], audio: list[AudioFrame]) -> list[VideoFrame | AudioFrame]:
    return sorted([*video, *audio], key=lambda m: m.time_s)  # stable: audio after video on ties


def in_speech(t: float, segments: list[tuple[float, float]]) -> bool:
    """Whether the speech weight at t is above 0: inside a segment widened by half the fade."""
    return any(a - FADE_S / 2 < t < b + FADE_S / 2 for a, b in segments)


@dataclass
class Run:
    session: LipSyncSession
    model: MarkerModel
    clock: Any
    video: list[VideoFrame]
    audio: list[AudioFrame]
    batches: list[tuple[list[OutputFrame], list[OutputAudio], float]] = field(default_factory=list)

    @property
    def frames(self) -> list[OutputFrame]:
        return [f for fs, _, _ in self.batches for f in fs]

    @property
    def out_audio(self) -> list[OutputAudio]:
        return [a for _, aus, _ in self.batches for a in aus]

    def speech_calls(self) -> list[ModelChunk]:
        """Model calls for chunks (the session's one-off rest-mouth call has no speech frame)."""
        return [c for c in self.model.calls if c.speech.any()]


def run_live(
    model: MarkerModel,
    clock: VirtualClock,
    video: list[VideoFrame],
    audio: list[AudioFrame],
    segments: list[tuple[float, float]],
    cfg: Config | None = None,
    detector: Any = None,
    quiet: list[float] | None = None,
) -> Run:
    cfg = cfg if cfg is not None else config()
    tracker = FaceTracker(cfg.face, detector if detector is not None else FixedFaceDetector([BOX]))
    session = LipSyncSession(cfg, model, clock, tracker=tracker, vad=ScriptedVad(segments, quiet))
    run = Run(session, model, clock, video, audio)
    try:
        asyncio.run(
            run_paced(session, clock, interleave(video, audio), lambda f, a: run.batches.append((f, a, clock.now())))
        )
    finally:
        # jobs still sleeping in virtual time must finish before the worker can shut down
        clock.advance_to(clock.now() + 3600)
        session.close()
    return run


def mouth_regions(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(core, support) boolean HxW masks: where the pasted mouth mask is 1, and where it can be > 0
    (the mask warped to the frame, dilated by 2 px against interpolation differences)."""
    s = run.session
    face = s.tracker.state
    assert face is not None
    mask = s.cropper.mouth_mask(face)
    r = s.cropper.size_px
    probe = s.cropper.paste(np.zeros((H, W, 3), np.uint8), np.full((r, r, 3), 255, np.uint8), mask, face)[..., 0]
    warped = cv2.warpAffine(mask, face.affine(r), (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=0)
    support = cv2.dilate((warped > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    core = probe == 255
    assert core.sum() > 50 and support.sum() > core.sum()
    return core, support


def frame_index(t: float) -> int:
    return round(t * FPS)


class TimedMarkerModel(MarkerModel):
    """MarkerModel that records, per call, the virtual time at which it finished."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.finished_s: list[float] = []

    def generate(self, chunk: ModelChunk, reference: Any, steps: int) -> np.ndarray:
        try:
            return super().generate(chunk, reference, steps)
        finally:
            self.finished_s.append(self.clock.now())


# -- (1) order, pts, exactly once ----------------------------------------------------------
def test_every_frame_leaves_once_in_order_with_its_pts() -> None:
    clock = VirtualClock()
    video, audio = moving_frames(60), loud_audio(60 / FPS)
    run = run_live(MarkerModel(clock=clock), clock, video, audio, [(0.5, 1.5)])

    frames = run.frames
    assert [o.frame.pts for o in frames] == [v.pts for v in video]
    assert all(o.frame.time_base == v.time_base for o, v in zip(frames, video, strict=True))
    assert [a.frame.pts for a in run.out_audio] == [a.pts for a in audio]
    st = run.session.stats
    assert (st.frames_in, st.frames_out, st.audio_in, st.audio_out) == (60, 60, len(audio), len(audio))
    assert run.session.pending_frames == 0
    # every input frame made it: the frame-id corner of each output is its input's corner
    for o, v in zip(frames, video, strict=True):
        assert np.array_equal(o.frame.image[:4, :4], v.image[:4, :4])


# -- (2) fixed delay, exactly --------------------------------------------------------------
@pytest.mark.parametrize(("clock_start", "first_pts"), [(0.0, 0), (7.25, 0), (0.0, 50)])
def test_each_frame_and_audio_block_leaves_at_capture_plus_delay(clock_start: float, first_pts: int) -> None:
    clock = VirtualClock(clock_start)
    n = 50
    video = moving_frames(n, first_pts)
    audio = ramp_audio(n / FPS, first_pts=first_pts * RATE // FPS)
    cfg = config("playout.delay_ms=600")
    d = 0.6
    first_media = first_pts / FPS
    anchor = clock_start - first_media  # clock time of media time 0
    run = run_live(MarkerModel(clock=clock, latency_s=0.05), clock, video, audio, [(0.3, 1.2)], cfg)

    assert len(run.frames) == n
    for o in run.frames:
        capture = anchor + o.frame.time_s
        assert o.deadline_s == capture + d
        assert o.emitted_at_s == capture + d
    assert len(run.out_audio) == len(audio)
    for a, src in zip(run.out_audio, audio, strict=True):
        capture = anchor + a.frame.time_s
        assert a.deadline_s == capture + d
        assert a.emitted_at_s == capture + d
        assert np.array_equal(a.frame.samples, src.samples)  # audio is delayed, not altered
    # the emit callback ran exactly at those times on the clock
    for fs, aus, now in run.batches:
        assert all(o.emitted_at_s == now for o in fs) and all(a.emitted_at_s == now for a in aus)


# -- (3) slow model: fallbacks, not stalls -------------------------------------------------
SEGS3 = [(0.5, 1.5), (2.5, 3.3)]
NO_DEGRADE = "playout.degrade_late_frames=1000"  # never reachable in a 25-frame window


def _check_no_stall(run: Run) -> None:
    assert [o.frame.pts for o in run.frames] == [v.pts for v in run.video]
    for o in run.frames:
        assert o.emitted_at_s == o.deadline_s == o.frame.time_s + 0.8


def _check_late_is_fallback(run: Run) -> None:
    frames = run.frames
    st = run.session.stats
    fallback = [o for o in frames if o.speech and o.kind is not FrameKind.GENERATED]
    assert all(o.kind in FALLBACKS for o in fallback)
    assert [o.frame.pts for o in frames if o.late] == [o.frame.pts for o in fallback]
    assert st.late == len(fallback)
    counts = {k: sum(o.kind is k for o in frames) for k in FrameKind}
    assert (st.generated, st.rest, st.hold, st.passthrough) == (
        counts[FrameKind.GENERATED],
        counts[FrameKind.REST],
        counts[FrameKind.HOLD],
        counts[FrameKind.PASSTHROUGH],
    )


def test_fast_model_has_no_late_frames() -> None:
    clock = VirtualClock()
    n = 90
    run = run_live(MarkerModel(clock=clock), clock, moving_frames(n), loud_audio(n / FPS), SEGS3)
    _check_no_stall(run)
    _check_late_is_fallback(run)
    speech = [in_speech(v.time_s, SEGS3) for v in run.video]
    assert [o.speech for o in run.frames] == speech
    assert run.session.stats.late == 0
    assert [o.kind for o in run.frames] == [FrameKind.GENERATED if s else FrameKind.REST for s in speech]


def test_model_slower_than_delay_makes_every_speech_frame_late() -> None:
    clock = VirtualClock()
    n = 90
    model = MarkerModel(clock=clock, latency_s=1.0)  # > D = 0.8 s: nothing can be on time
    run = run_live(model, clock, moving_frames(n), loud_audio(n / FPS), SEGS3, config(NO_DEGRADE))
    _check_no_stall(run)
    _check_late_is_fallback(run)
    expected_late = [v.pts for v in run.video if in_speech(v.time_s, SEGS3)]
    assert len(expected_late) == 27 + 22
    assert [o.frame.pts for o in run.frames if o.late] == expected_late
    assert run.session.stats.late == len(expected_late)
    assert run.session.stats.generated == 0
    assert len(model.calls) >= 2  # the model was called; its results just came too late


@pytest.mark.parametrize("latency_s", [0.3, 0.5])
def test_late_frames_are_exactly_those_without_a_result_by_their_deadline(latency_s: float) -> None:
    # latency above the 240 ms chunk stride (6 frames at 25 fps) but below D: the model falls
    # behind, some chunks are refused, some results arrive in time
    clock = VirtualClock()
    n = 90
    model = TimedMarkerModel(clock=clock, latency_s=latency_s)
    run = run_live(model, clock, moving_frames(n), loud_audio(n / FPS), SEGS3, config(NO_DEGRADE))
    _check_no_stall(run)
    _check_late_is_fallback(run)

    ready_by: dict[int, float] = {}  # frame index -> earliest finish of a chunk covering it
    for chunk, done in zip(model.calls, model.finished_s, strict=True):
        if chunk.speech.any():
            for t in chunk.times_s:
                i = frame_index(t)
                ready_by[i] = min(ready_by.get(i, np.inf), done)
    expected_late = [
        v.pts for v in run.video if in_speech(v.time_s, SEGS3) and ready_by.get(v.pts, np.inf) > v.time_s + 0.8
    ]
    late = [o.frame.pts for o in run.frames if o.late]
    assert late == expected_late
    assert 0 < len(late) < sum(in_speech(v.time_s, SEGS3) for v in run.video)
    assert run.session.stats.generated > 0
    # held frames are within hold_max_frames of a generated one
    last_gen = None
    for o in run.frames:
        if o.kind is FrameKind.GENERATED:
            last_gen = o.frame.pts
        if o.kind is FrameKind.HOLD:
            assert last_gen is not None and o.frame.pts - last_gen <= 12


# -- (4) silence: no model, still mouth -----------------------------------------------------
def test_silence_gets_no_model_calls_and_a_still_mouth() -> None:
    clock = VirtualClock()
    n = 80  # 3.2 s
    segs = [(0.2, 0.8), (2.4, 3.0)]
    model = MarkerModel(clock=clock)
    video = moving_frames(n)
    run = run_live(model, clock, video, loud_audio(n / FPS), segs)

    calls = run.speech_calls()
    assert len(calls) == len(model.calls) - 1  # besides these, only the one rest-mouth call
    assert not model.calls[0].speech.any()
    for c in calls:
        # a chunk reaches the model only if one of its frames has speech weight > 0
        assert any(in_speech(t, segs) for t in c.times_s)
        # the deep silence 1.2 .. 2.0 s is never part of a model call
        assert not any(1.2 <= t <= 2.0 for t in c.times_s)
    assert run.session.stats.chunks_silent > 0
    assert run.session.stats.chunks_silent + len(calls) == run.session.stats.chunks_planned

    core, _ = mouth_regions(run)
    deep = [o for o in run.frames if 1.0 <= o.frame.time_s <= 2.2]
    assert len(deep) == 31
    assert all(o.kind is FrameKind.REST and not o.late for o in deep)
    first = deep[0].frame.image[core]
    for o in deep[1:]:
        assert np.array_equal(o.frame.image[core], first)
    # ... while the filmed mouth kept moving underneath
    assert not np.array_equal(video[frame_index(1.0)].image[core], video[frame_index(1.04)].image[core])


@pytest.mark.parametrize("tail_ms", [40, 250])
def test_the_silence_that_ends_speech_shows_the_mouth_at_rest_after_the_stop_tail(tail_ms: int) -> None:
    """The VAD ends speech ``speech_stop_ms`` (250) after its silence began; once that stop is
    heard, the frames from ``vad.stop_tail_ms`` after the silence began show the mouth at rest
    (with the usual cross-fade), although the model was run for them (the chunks were planned
    before the stop was heard). A tail as long as the wait changes nothing."""
    clock = VirtualClock()
    n = 60
    segs, quiet = [(0.2, 1.4)], [1.15]  # the silence began at 1.15 s; the VAD ended speech at 1.4
    model = MarkerModel(clock=clock)
    run = run_live(model, clock, moving_frames(n), loud_audio(n / FPS), segs, config(f"vad.stop_tail_ms={tail_ms}"),
                   quiet=quiet)  # fmt: skip
    stop = min(1.4, quiet[0] + tail_ms / 1000)
    kinds = {round(o.frame.time_s * FPS): o.kind for o in run.frames}
    assert len(kinds) == n and not any(o.late for o in run.frames)
    for i, kind in kinds.items():
        t = i / FPS
        want = FrameKind.GENERATED if in_speech(t, [(0.2, stop)]) else FrameKind.REST
        assert kind is want, (t, kind)
    # the model was run for the same chunks either way: up to the VAD's own stop
    assert max(t for c in run.speech_calls() for t in c.times_s) > 1.4


def test_a_held_pause_mouth_is_the_models_drawing_at_the_pause_start_held_still() -> None:
    """``vad.pause_mouth = "held"``: into a pause the model draws on without a fade (the frames
    stay GENERATED), and its drawing at the pause's first frame is the mouth at rest, unchanged,
    until speech resumes; the speech after it fades in from that drawing. Before any speech the
    rest mouth is the model's rendering of the reference."""
    clock = VirtualClock()
    n = 75
    segs = [(0.4, 1.0), (2.2, 2.8)]
    spoken = lambda t: ((t >= 0.4) & (t < 1.0)) | ((t >= 2.2) & (t < 2.8))  # noqa: E731
    audio = list(audio_frames(tone(n / FPS, RATE, 2, amp_fn=lambda t: 0.5 * spoken(t)), RATE, BLOCK))
    runs = {}
    for how in ("reference", "held"):
        runs[how] = run_live(
            MarkerModel(clock=clock), clock, still_frames(n), audio, segs, config(f"vad.pause_mouth={how}")
        )
        clock = VirtualClock()
    core, _ = mouth_regions(runs["held"])
    ref, held = ({round(o.frame.time_s * FPS): o for o in runs[k].frames} for k in ("reference", "held"))
    # before any speech, the same rest mouth either way
    assert all(np.array_equal(ref[i].frame.image[core], held[i].frame.image[core]) for i in range(0, 8))
    # closing into the pause (1.0 +- 0.05 s): drawn in full, not faded
    assert held[25].kind is FrameKind.GENERATED and ref[25].kind is FrameKind.GENERATED
    assert not np.array_equal(held[25].frame.image[core], ref[25].frame.image[core])
    # the pause (frame 27, 1.08 s, on): one still image, the model's drawing at its first frame,
    # which heard the end of the speech in its audio window, so it is not the reference's rest
    pause = range(27, 53)
    assert all(held[i].kind is FrameKind.REST for i in pause)
    first = held[27].frame.image[core]
    assert all(np.array_equal(held[i].frame.image[core], first) for i in pause)
    assert not np.array_equal(first, ref[27].frame.image[core])
    # the next speech fades in from it: at 2.16 s a tenth of the model's drawing over it
    onset = held[54].frame.image[core].astype(int)
    assert held[54].kind is FrameKind.GENERATED and 0 < np.abs(onset - first).max() <= 0.1 * 255 + 1


def test_texture_reference_shows_the_reference_frame_at_rest_and_the_models_brightness_change_in_speech() -> None:
    """model.texture = "reference": in silence the mouth is the reference frame's own pixels, at
    full resolution; in speech it is those pixels plus the model's change from its rest rendering,
    in brightness only (the same in every colour channel)."""
    clock = VirtualClock()
    n = 80
    segs = [(0.2, 0.8), (2.4, 3.0)]

    class RedMarker(MarkerModel):  # the marker's level in the red channel only
        def generate(self, chunk: ModelChunk, reference: Any, steps: int) -> np.ndarray:
            out = super().generate(chunk, reference, steps)
            out[..., 1:][chunk.masks > 0] = 40
            return out

    model = RedMarker(clock=clock)
    video = moving_frames(n)
    cfg = config("model.texture=reference")
    run = run_live(model, clock, video, ramp_audio(n / FPS, 0.15, 0.15), segs, cfg)  # the marker at ~125 in speech
    core, _ = mouth_regions(run)
    ref = video[0].image[core].astype(int)
    deep = [o for o in run.frames if 1.0 <= o.frame.time_s <= 2.2]
    assert deep and all(o.kind is FrameKind.REST for o in deep)
    for o in deep:
        assert np.abs(o.frame.image[core].astype(int) - ref).max() <= 1
    spoken = [o for o in run.frames if o.kind is FrameKind.GENERATED and 0.4 <= o.frame.time_s <= 0.6]
    assert spoken
    for o in spoken:
        out = o.frame.image[core].astype(int)
        d = out - ref
        unclipped = (out < 255).all(1)
        assert unclipped.sum() > 20
        # red up by (level - 40) in the model's crop: every channel up by its luma share, 0.299 of it
        level = MarkerModel.level(np.full(4480, 0.15 / np.sqrt(2), np.float32))
        assert abs(np.median(d[unclipped]) - 0.299 * (level - 40)) <= 3
        assert np.abs(d[unclipped] - d[unclipped].mean(axis=1, keepdims=True)).max() <= 2


class DrawsTheFace(MarkerModel):
    """Draws the face it is given at rest (the crop as it is), the marker in speech."""

    def generate(self, chunk: ModelChunk, reference: Any, steps: int) -> np.ndarray:
        out = super().generate(chunk, reference, steps)
        return out if chunk.speech.any() else chunk.frames.copy()


class BreathingBox(FixedFaceDetector):
    """A still face whose detected box grows and shrinks by up to 6 % from one detection to the
    next, as a real detector's box does with the filmed speaker's jaw."""

    def detect(self, image: np.ndarray) -> list:
        x0, y0, x1, y1 = BOX
        g = 0.06 * np.sin(1.7 * self.calls) * (x1 - x0) / 2
        self.boxes = [(x0 - g, y0 - g, x1 + g, y1 + g)]
        return super().detect(image)


def test_the_mouth_at_rest_is_pasted_through_a_steady_crop_window() -> None:
    """In silence the rest mouth is pasted through the crop window averaged over
    ``face.steady_rest_frames`` frames either side, so it does not bob with a box that breathes
    with the filmed jaw; the mask still comes from each frame's own keypoints, and frames in
    speech are pasted through their own window, as before."""
    n = 90
    segs = [(0.2, 0.8), (2.8, 3.4)]
    video = still_frames(n)
    runs = {}
    for k, how in ((0, "own"), (8, "own"), (8, "union")):
        clock = VirtualClock()
        # the reference's rest rendering (a held pause mouth is the marker's flat grey here)
        cfg = config(f"face.steady_rest_frames={k}", f"face.steady_rest_mask={how}", "vad.pause_mouth=reference")
        run = run_live(DrawsTheFace(clock=clock), clock, video, loud_audio(n / FPS), segs, cfg, BreathingBox([BOX]))
        runs[k if how == "own" else how] = run
    core, support = mouth_regions(runs[0])

    def motion(run: Run, region: np.ndarray = core) -> float:
        deep = [o.frame.image[region].astype(np.float32) for o in run.frames if 1.2 <= o.frame.time_s <= 2.4]
        assert len(deep) == 31 and all(o.kind is FrameKind.REST for o in run.frames if 1.2 <= o.frame.time_s <= 2.4)
        return float(np.mean([np.abs(b - a).mean() for a, b in zip(deep, deep[1:], strict=False)]))

    assert motion(runs[8]) < 0.5 * motion(runs[0])
    # with face.steady_rest_mask = "union" the mask is the largest over the window: where the mask
    # can reach (its feathered edge included) the rest frames change 1.1 per frame, against 2.0
    # with each frame's own mask (measured)
    assert motion(runs["union"], support) < 0.8 * motion(runs[8], support)
    spoken = [i for i, o in enumerate(runs[0].frames) if 0.35 <= o.frame.time_s <= 0.65]
    assert spoken and all(runs[0].frames[i].kind is FrameKind.GENERATED for i in spoken)
    for i in spoken:  # full speech weight: pasted exactly as without the steady window
        assert np.array_equal(runs[0].frames[i].frame.image, runs[8].frames[i].frame.image)


class BreathingJaw(FixedFaceDetector):
    """A still face filmed talking, as a real detector sees it: the box's bottom and the mouth
    keypoint drop by up to 8 % of the box with the jaw, and the eyes stay where they are."""

    def detect(self, image: np.ndarray) -> list:
        (det,) = super().detect(image)
        x0, y0, x1, y1 = BOX
        g = 0.08 * (y1 - y0) * (0.5 + 0.5 * np.sin(1.7 * self.calls))
        kp = det.keypoints.copy()
        kp[3, 1] += g  # the mouth keypoint
        return [replace(det, box=(x0, y0, x1, y1 + g), keypoints=kp)]


class JitteryEyes(FixedFaceDetector):
    """A still face whose detected eyes jump up and down by 3 px from one detection to the next
    (a real detector's landmarks jitter): the steady window, placed from the eyes averaged over
    the frames around, is then not the frame's own."""

    def detect(self, image: np.ndarray) -> list:
        (det,) = super().detect(image)
        kp = det.keypoints.copy()
        kp[:2, 1] += 3.0 * (1 if self.calls % 2 else -1)  # both eyes
        return [replace(det, keypoints=kp)]


class StripedSpeech(MarkerModel):
    """Draws the face it is given, with dark stripes across the mask in speech: a drawing with
    texture, so a move of the window it is pasted through shows."""

    def generate(self, chunk: ModelChunk, reference: Any, steps: int) -> np.ndarray:
        super().generate(chunk, reference, steps)
        out = chunk.frames.copy()
        if chunk.speech.any():
            stripes = np.zeros(out.shape[1:3], bool)
            stripes[::5] = True
            out[:, stripes & (chunk.masks[0] > 0.5)] = 30
        return out


def test_a_held_pause_glides_to_its_steady_window_instead_of_jumping() -> None:
    """``face.rest_glide_frames``: the drawing before a held pause was pasted through each frame's
    own window and mask, the pause's through the steady window (the eyes averaged over the frames
    around) and the pause's grown mask. At once (0) the mouth moves in the pause's first frame; by
    default the first frame is pasted through its own window, as the frames before it were (with
    the pause's mask), and the window glides to the steady one over the next frames, where both
    runs then agree."""
    n = 75
    segs = [(0.4, 1.0), (2.2, 2.8)]
    spoken = lambda t: ((t >= 0.4) & (t < 1.0)) | ((t >= 2.2) & (t < 2.8))  # noqa: E731
    audio = list(audio_frames(tone(n / FPS, RATE, 2, amp_fn=lambda t: 0.5 * spoken(t)), RATE, BLOCK))
    runs = {}
    for key, how in (("jump", "face.rest_glide_frames=0"), ("glide", "face.rest_glide_frames=6"),
                     ("own", "face.steady_rest_frames=0")):  # fmt: skip
        clock = VirtualClock()
        cfg = config("vad.pause_mouth=held", how)
        runs[key] = run_live(StripedSpeech(clock=clock), clock, still_frames(n), audio, segs, cfg, JitteryEyes([BOX]))
    assert load(None, []).face.rest_glide_frames == 6
    jump, glide, own = ([o.frame.image.astype(int) for o in runs[k].frames] for k in ("jump", "glide", "own"))
    kinds = [o.kind for o in runs["glide"].frames]
    first = next(i for i in range(1, n) if kinds[i] is FrameKind.REST and kinds[i - 1] is FrameKind.GENERATED)
    assert [o.kind for o in runs["jump"].frames] == kinds

    def moved(frames: list[np.ndarray], i: int) -> float:  # the change into frame i
        return float(np.abs(frames[i] - frames[i - 1]).mean())

    # the first frame: through its own window, as the frame before it was (and as without the
    # steady window), the pause's mask aside
    off = {k: float(np.abs(frames[first] - own[first]).mean()) for k, frames in (("jump", jump), ("glide", glide))}
    assert off["glide"] < 0.5 * off["jump"]
    assert moved(jump, first) > 2 * max(moved(glide, i) for i in range(first, first + 7))
    for i in range(first + 6, first + 12):  # then the steady window and mask, as without the glide
        assert kinds[i] is FrameKind.REST and np.array_equal(glide[i], jump[i])


def test_the_rest_window_placed_by_the_eyes_stands_still_when_only_the_jaw_moves() -> None:
    """``face.steady_rest_anchor = "eyes"``: the rest mouth's window is placed from the eyes,
    averaged over the steady window, at the size and offset from them of the window the rest
    mouth was drawn in. The detector's box and mouth keypoint follow the filmed jaw and the eyes
    do not, so where the box-placed window still drifts with the jaw's average over 17 frames,
    this one stands. ``face.steady_rest_mask = "pause"``: the union mask only grows through a
    pause, so its feathered edge stops moving too."""
    n = 90
    segs = [(0.2, 0.8), (2.8, 3.4)]
    video = still_frames(n)
    runs = {}
    for anchor, how in (("box", "union"), ("eyes", "union"), ("eyes", "pause")):
        clock = VirtualClock()
        cfg = config(f"face.steady_rest_anchor={anchor}", f"face.steady_rest_mask={how}", "vad.pause_mouth=reference")
        detector = BreathingJaw([BOX])
        runs[anchor, how] = run_live(DrawsTheFace(clock=clock), clock, video, loud_audio(n / FPS), segs, cfg, detector)
    core, support = mouth_regions(runs["box", "union"])

    def motion(run: Run, region: np.ndarray) -> float:
        deep = [o.frame.image[region].astype(np.float32) for o in run.frames if 1.2 <= o.frame.time_s <= 2.4]
        assert len(deep) == 31 and all(o.kind is FrameKind.REST for o in run.frames if 1.2 <= o.frame.time_s <= 2.4)
        return float(np.mean([np.abs(b - a).mean() for a, b in zip(deep, deep[1:], strict=False)]))

    # measured: 2.1 per frame where the mask is whole with the box, 0.0 with the eyes; where the
    # mask reaches, 0.09 with the eyes and the union, 0.05 with the mask grown over the pause
    assert motion(runs["box", "union"], core) > 0.5  # the case is real: the box-placed window moves
    assert motion(runs["eyes", "union"], core) < 0.1 * motion(runs["box", "union"], core)
    assert motion(runs["eyes", "pause"], support) < 0.7 * motion(runs["eyes", "union"], support)
    box = runs["box", "union"].frames
    spoken = [i for i, o in enumerate(box) if 0.35 <= o.frame.time_s <= 0.65]
    assert spoken and all(box[i].kind is FrameKind.GENERATED for i in spoken)
    for i in spoken:  # speech is pasted through each frame's own window whatever places the rest's
        assert np.array_equal(box[i].frame.image, runs["eyes", "pause"].frames[i].frame.image)


def test_the_last_frame_at_rest_keeps_the_steady_window_of_the_frame_before() -> None:
    """The steady window spans as many frames after as before, and the stream's last frame has
    none after it: it keeps the window of the frame before rather than jumping to its own (with
    a box that breathes with the filmed jaw, that jump was one frame of visible motion at the end
    of every file)."""
    n = 60
    clock = VirtualClock()
    # the box-placed window, which moves with the filmed jaw (the eyes-placed one would not show it)
    cfg = config("vad.pause_mouth=reference", "face.steady_rest_anchor=box", "face.steady_rest_mask=union")
    run = run_live(
        DrawsTheFace(clock=clock), clock, still_frames(n), loud_audio(n / FPS), [(0.2, 0.8)], cfg, BreathingJaw([BOX])
    )
    last, before = run.frames[-1], run.frames[-2]
    assert len(run.frames) == n and last.kind is before.kind is FrameKind.REST
    core, _ = mouth_regions(run)
    assert np.array_equal(last.frame.image[core], before.frame.image[core])
    # the case is real: the frames before it, in the same stretch at rest, do move
    moved = [
        np.abs(b.frame.image[core].astype(int) - a.frame.image[core].astype(int)).max()
        for a, b in zip(run.frames[-10:-2], run.frames[-9:-1], strict=True)
    ]
    assert max(moved) > 0


def test_texture_auto_takes_the_reference_only_when_the_model_cannot_draw_the_face() -> None:
    """model.texture = "auto" (the default): the model's rendering of the reference at rest is
    compared with the reference crop (mean CIELAB delta-E over the mask). A model that draws the
    face keeps its own pixels; one that paints it in other colours (the tiny model on a
    photograph) gets the "reference" texture, so the mouth at rest is the person's own."""
    n = 80
    segs = [(0.2, 0.8), (2.4, 3.0)]

    cfg = load(None, [])
    assert cfg.model.texture == "auto"
    video = moving_frames(n)
    got = {}
    for name, model_cls in (("draws", DrawsTheFace), ("repaints", MarkerModel)):
        clock = VirtualClock()
        run = run_live(model_cls(clock=clock), clock, video, ramp_audio(n / FPS, 0.15, 0.15), segs, cfg)
        got[name] = run
    draws, repaints = got["draws"].session.stats, got["repaints"].session.stats
    assert draws.texture == "model" and draws.rest_delta_e < 1.0
    assert repaints.texture == "reference" and repaints.rest_delta_e > cfg.model.texture_auto_delta_e
    core, _ = mouth_regions(got["repaints"])
    ref = video[0].image[core].astype(int)
    deep = [o for o in got["repaints"].frames if 1.0 <= o.frame.time_s <= 2.2]
    assert deep and all(o.kind is FrameKind.REST for o in deep)
    for o in deep:  # the reference frame's own mouth, not the marker's grey
        assert np.abs(o.frame.image[core].astype(int) - ref).max() <= 1
    spoken = [o for o in got["draws"].frames if o.kind is FrameKind.GENERATED and 0.4 <= o.frame.time_s <= 0.6]
    level = round(MarkerModel.level(np.full(4480, 0.15 / np.sqrt(2), np.float32)))
    assert spoken and all(np.abs(np.median(o.frame.image[core]) - level) <= 2 for o in spoken)  # the model's pixels


class CopiesTheReference(MarkerModel):
    """Like a model with a context head on a face it cannot draw: the reference rendered with the
    head comes out exact (the head adds the reference's own error back), without it the marker's
    grey; ``probe_reference`` gives the reference without the head."""

    def probe_reference(self, reference: Any) -> Any:
        return ("plain", reference)

    def generate(self, chunk: ModelChunk, reference: Any, steps: int) -> np.ndarray:
        out = super().generate(chunk, reference, steps)
        plain = isinstance(reference, tuple)
        return out if plain or chunk.speech.any() else chunk.frames.copy()


def test_texture_auto_judges_a_head_model_by_its_rendering_without_the_head() -> None:
    # a context head draws the reference itself almost exactly, whether or not the model can draw
    # the face: "auto" decides on the probe rendered without it, and the rest mouth is still the
    # rendering with it
    n = 60
    clock = VirtualClock()
    model = CopiesTheReference(clock=clock)
    run = run_live(model, clock, moving_frames(n), ramp_audio(n / FPS, 0.15, 0.15), [(0.2, 0.8)], load(None, []))
    stats = run.session.stats
    assert stats.texture == "reference" and stats.rest_delta_e > load(None, []).model.texture_auto_delta_e
    assert np.array_equal(run.session._rest_render, model.calls[0].frames[0])  # the rendering with the head
    assert not model.calls[1].speech.any() and np.array_equal(model.calls[1].frames, model.calls[0].frames)
    # a model without a probe is judged by its rest rendering, as before
    clock = VirtualClock()
    audio = ramp_audio(n / FPS, 0.15, 0.15)
    run = run_live(DrawsTheFace(clock=clock), clock, moving_frames(n), audio, [], load(None, []))
    assert run.session.stats.texture == "model"


def test_texture_reference_rests_on_the_most_closed_mouth_of_the_first_seconds() -> None:
    """Texture "reference" shows the reference frame's mouth at rest, and so does
    ``vad.pause_mouth = "frame"`` with the model's own texture. A clip that starts mid-word (here:
    the first 10 frames with a dark open mouth) must not keep that mouth open in silence: within
    model.reference_window_s the reference moves to a closed-looking mouth."""
    n = 80
    segs = [(0.2, 0.8), (2.4, 3.0)]

    video = mid_word_video(n, 10, open_axes=(14, 8))
    got = {}
    # the same rest with the model's own texture and vad.pause_mouth = "frame"
    for key, how in (
        ("2.0", "model.texture=reference"),
        ("0", "model.texture=reference"),
        ("frame", "vad.pause_mouth=frame"),
    ):
        clock = VirtualClock()
        window = "2.0" if key == "frame" else key
        cfg = load(None, [how, f"model.reference_window_s={window}"])
        audio = ramp_audio(n / FPS, 0.15, 0.15)
        # a box that breathes with the jaw: the reference's mouth must still land where it was
        got[key] = run_live(DrawsTheFace(clock=clock), clock, video, audio, segs, cfg, BreathingJaw([BOX]))
    assert got["2.0"].session.stats.reference_frame >= 10 and got["0"].session.stats.reference_frame == 0
    assert got["frame"].session.stats.reference_frame >= 10 and got["frame"].session.stats.texture == "model"
    core, _ = mouth_regions(got["2.0"])
    for window, ref in (("2.0", video[40].image), ("0", video[0].image), ("frame", video[40].image)):
        deep = [o for o in got[window].frames if 1.0 <= o.frame.time_s <= 2.2]
        assert deep and all(o.kind is FrameKind.REST for o in deep)
        for o in deep:  # at rest: the chosen frame's own mouth
            assert np.abs(o.frame.image[core].astype(int) - ref[core].astype(int)).max() <= 1
    rest = [o for o in got["2.0"].frames if 1.0 <= o.frame.time_s <= 2.2][0].frame.image[core].astype(float)
    assert rest.mean() > 150  # not the dark open mouth of the first frames


class DrawsItClosed(MarkerModel):
    """Draws the face it is given at rest with the mouth closed (the dark inside of an open
    mouth, and the line between the lips, painted over with the skin's median colour), the
    marker in speech: a model that can draw this face, shown a first frame caught mid-word."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.drawn_at_rest: list[np.ndarray] = []

    def generate(self, chunk: ModelChunk, reference: Any, steps: int) -> np.ndarray:
        out = super().generate(chunk, reference, steps)
        if chunk.speech.any():
            return out
        frames = chunk.frames.copy()
        dark = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) < 110
        frames[dark] = np.median(frames.reshape(-1, 3), axis=0).astype(np.uint8)
        self.drawn_at_rest.append(frames)
        return frames


def mid_word_video(n: int, open_frames: int, open_axes: tuple[int, int] = (18, 13)) -> list[VideoFrame]:
    """A still face whose mouth is open (its dark inside, an ellipse of ``open_axes`` half-axes;
    by default wide open, most of the mask) for the first ``open_frames`` frames, then closed (the
    line between the lips)."""
    x0, y0, x1, y1 = BOX
    mouth = (round((x0 + x1) / 2), round(y0 + 0.75 * (y1 - y0)))
    skin = np.zeros((H, W, 3), np.uint8)
    skin[...] = (190, 150, 130)
    video = []
    for i in range(n):
        img = skin.copy()
        if i < open_frames:
            cv2.ellipse(img, mouth, open_axes, 0, 0, 360, (40, 20, 25), -1)
        else:
            cv2.line(img, (mouth[0] - 14, mouth[1]), (mouth[0] + 14, mouth[1]), (120, 60, 60), 1)
        video.append(VideoFrame(img, i, Fraction(1, FPS)))
    return video


def test_texture_auto_decides_again_on_the_most_closed_mouth_when_the_stream_starts_mid_word() -> None:
    """A model that draws the face is judged on a closed mouth. The first face of a stream that
    starts mid-word shows an open one, which the model's closed drawing at rest is far from, so
    the first decision takes the reference. Once model.reference_window_s is over, the model
    draws the most closed-looking mouth of the window at rest too, and "auto" decides again on
    that: the model's own pixels. Offline the decision is made once, before any frame leaves;
    live it takes effect when that drawing is back."""
    n = 90
    segs = [(0.2, 0.8), (2.6, 3.2)]
    cfg = load(None, [])
    assert cfg.model.texture == "auto" and cfg.model.reference_window_s == 2.0
    audio = ramp_audio(n / FPS, 0.15, 0.15)
    level = round(MarkerModel.level(np.full(4480, 0.15 / np.sqrt(2), np.float32)))

    def marker_shown(run: Run, a: float, b: float) -> bool:  # the model's own pixels in speech
        core, _ = mouth_regions(run)
        spoken = [o for o in run.frames if o.kind is FrameKind.GENERATED and a <= o.frame.time_s <= b]
        assert spoken
        return all(abs(np.median(o.frame.image[core]) - level) <= 2 for o in spoken)

    clock = VirtualClock()
    live = run_live(DrawsItClosed(clock=clock), clock, mid_word_video(n, 10), audio, segs, cfg)
    st = live.session.stats
    assert st.reference_frame >= 10 and st.texture == "model" and st.rest_delta_e < 5.0
    rest_calls = [c for c in live.model.calls if not c.speech.any()]
    assert len(rest_calls) == 2  # the first face at rest, then the window's closed one
    assert not marker_shown(live, 0.3, 0.7)  # live: the first decision (the reference) until then
    assert marker_shown(live, 2.7, 3.1)

    clock = VirtualClock()
    model = DrawsItClosed(clock=clock)
    tracker = FaceTracker(cfg.face, FixedFaceDetector([BOX]))
    session = LipSyncSession(cfg, model, clock, tracker=tracker, vad=ScriptedVad(segs, None))
    offline = Run(session, model, clock, mid_word_video(n, 10), audio)
    try:
        run_offline(session, interleave(offline.video, audio), lambda f, a: offline.batches.append((f, a, 0.0)))
    finally:
        session.close()
    st = session.stats
    assert st.texture == "model" and st.chunks_refused == 0 and len(offline.frames) == n
    assert marker_shown(offline, 0.3, 0.7) and marker_shown(offline, 2.7, 3.1)  # decided once
    # the closed mouth's drawing is the mouth at rest from then on, placed by that frame's window
    assert len(model.drawn_at_rest) == 2 and np.array_equal(session._rest_render, model.drawn_at_rest[1][0])
    assert session._ref_frame is not None and np.allclose(session._ref_shape, session._ref_frame[1].shape())

    # a stream that starts at rest: one drawing at rest, one decision
    clock = VirtualClock()
    still = run_live(DrawsItClosed(clock=clock), clock, mid_word_video(n, 0), audio, segs, cfg)
    assert still.session.stats.texture == "model" and still.session.stats.reference_frame == 0
    assert sum(not c.speech.any() for c in still.model.calls) == 1
    assert marker_shown(still, 0.3, 0.7)


def test_a_drawing_at_rest_is_queued_even_when_the_model_queue_is_full() -> None:
    """ModelWorker refuses a chunk beyond ``max_pending`` (its frames fall back), but a one-off
    job the stream needs (the session's drawings at rest, ``always=True``) is queued anyway: the
    second texture decision of a stream cut mid-word must not depend on the queue at that moment."""
    import threading

    from stream.clock import MonotonicClock
    from stream.worker import ModelWorker

    gate = threading.Event()

    class Blocked(MarkerModel):
        def generate(self, chunk: ModelChunk, reference: Any, steps: int) -> np.ndarray:
            gate.wait(10)
            return super().generate(chunk, reference, steps)

    worker = ModelWorker(Blocked(), MonotonicClock(), max_pending=1)
    crop = np.zeros((64, 64, 3), np.uint8)
    chunk = ModelChunk(crop[None], np.ones((1, 64, 64), np.float32), np.zeros((1, 4480), np.float32),
                       np.zeros(1, bool), np.zeros(1))  # fmt: skip
    try:
        first = worker.submit(chunk, crop, 1)
        assert first is not None and worker.submit(chunk, crop, 1) is None  # a chunk: refused
        rest = worker.submit(chunk, crop, 1, always=True)
        assert rest is not None and worker.pending == 2
        gate.set()
        assert rest.result(10).frames.shape == crop[None].shape and first.result(10) is not None
    finally:
        gate.set()
        worker.close()


def test_match_colour_takes_the_models_colour_cast_off_its_pixels() -> None:
    """model.match_colour: a model that draws the face with a colour cast (here 30 levels too
    blue) has its pixels shifted back by the median difference between the reference crop and its
    rendering of it at rest. Texture "auto" judges the face after that shift, so the cast alone
    does not make it take the reference: the face stays the model's own (texture "model")."""
    n = 80
    segs = [(0.2, 0.8), (2.4, 3.0)]

    class BlueCast(MarkerModel):  # the crop, 30 levels bluer, at rest and in speech
        def generate(self, chunk: ModelChunk, reference: Any, steps: int) -> np.ndarray:
            self.calls.append(chunk)
            out = chunk.frames.astype(np.int16)
            out[..., 2] += 30
            return np.clip(out, 0, 255).astype(np.uint8)

    video = still_frames(n)
    got = {}
    for match in ("true", "false"):
        clock = VirtualClock()
        cfg = load(None, [f"model.match_colour={match}"])
        got[match] = run_live(BlueCast(clock=clock), clock, video, ramp_audio(n / FPS, 0.15, 0.15), segs, cfg)
    for match in ("true", "false"):  # the cast is measured either way, and nothing else is amiss
        stats = got[match].session.stats
        assert stats.texture == "model" and np.allclose(stats.colour_offset, [0, 0, -30], atol=1)
        assert stats.rest_delta_e < 1.0 < 5.0 < stats.rest_delta_e_raw  # the cast, raw
    core, _ = mouth_regions(got["true"])
    src = video[0].image[core].astype(float).mean(axis=0)
    pairs = list(zip(got["true"].frames, got["false"].frames, strict=True))
    spoken = [(a, b) for a, b in pairs if a.kind is b.kind is FrameKind.GENERATED]
    assert len(spoken) > 10
    for a, b in spoken:
        with_match = a.frame.image[core].astype(float).mean(axis=0)
        assert np.abs(with_match - b.frame.image[core].astype(float).mean(axis=0) - [0, 0, -30]).max() < 1
        assert np.abs(with_match - src).max() < 5  # the face's own colour (the crop's resampling aside)


# -- (5) seams ------------------------------------------------------------------------------
def _seam_steps(run: Run) -> tuple[list[float], list[float]]:
    """Frame-to-frame mouth steps at chunk boundaries and strictly inside single chunks.

    The audio runs on past the last frame, so every frame's window holds real audio."""
    core, _ = mouth_regions(run)
    level = np.array([o.frame.image[core].astype(np.float64).mean() for o in run.frames])
    step = np.abs(np.diff(level))  # step[i] is frame i -> i + 1
    cover = np.zeros(len(level), int)
    edges: set[int] = set()
    for c in run.speech_calls():
        idx = sorted({frame_index(t) for t in c.times_s})
        cover[idx] += 1
        edges.update({idx[0] - 1, idx[-1]})  # the pairs (start - 1, start) and (end, end + 1)
    boundary = [step[i] for i in sorted(edges) if 0 <= i < len(step)]
    interior = [step[i] for i in range(len(step)) if i not in edges and cover[i] == cover[i + 1] == 1]
    assert len(boundary) > 10 and len(interior) > 10
    return boundary, interior


def test_no_seam_when_the_model_only_follows_continuous_audio() -> None:
    clock = VirtualClock()
    n = 100
    run = run_live(MarkerModel(clock=clock), clock, still_frames(n), ramp_audio(n / FPS + 0.2), [(-10.0, 100.0)])
    assert all(o.kind is FrameKind.GENERATED for o in run.frames)
    boundary, interior = _seam_steps(run)
    assert max(interior) > 0  # the mouth does follow the audio
    assert max(boundary) <= max(interior)


@pytest.mark.parametrize("overlap", [2, 3])
def test_overlap_crossfade_spreads_a_per_chunk_bias(overlap: int) -> None:
    clock = VirtualClock()
    n = 100
    bias = 30.0
    cfg = config(f"chunk.overlap_frames={overlap}")
    model = MarkerModel(clock=clock, chunk_bias=bias)
    run = run_live(model, clock, still_frames(n), ramp_audio(n / FPS + 0.2), [(-10.0, 100.0)], cfg)
    assert all(o.kind is FrameKind.GENERATED for o in run.frames)
    boundary, interior = _seam_steps(run)
    # neighbouring chunks differ by 2B; the linear cross-fade over O frames cuts each step to 2B/(O+1)
    assert max(boundary) <= 2 * bias / (overlap + 1) + max(interior) + 1
    assert max(boundary) >= 2 * bias / (overlap + 1) - max(interior) - 1  # the bias is really there


# -- (6) A/V offset 0 -----------------------------------------------------------------------
def test_audio_and_video_leaving_together_have_the_same_media_time() -> None:
    clock = VirtualClock()
    n = 50
    d = 0.8
    run = run_live(MarkerModel(clock=clock, latency_s=0.1), clock, moving_frames(n), ramp_audio(n / FPS), [(0.4, 1.4)])
    paired = 0
    for fs, aus, now in run.batches:
        for o in fs:
            assert now - o.frame.time_s == pytest.approx(d, abs=1e-9)
        for a in aus:
            assert now - a.frame.time_s == pytest.approx(d, abs=1e-9)
        if fs and aus:
            assert {o.frame.time_s for o in fs} <= {a.frame.time_s for a in aus}
            paired += len(fs)
    assert paired == n  # every video frame left in the same instant as the audio block at its time


# -- (7) untouched outside the mask --------------------------------------------------------
def test_pixels_outside_the_mouth_mask_are_bit_identical() -> None:
    clock = VirtualClock()
    n = 40
    video = moving_frames(n)
    run = run_live(MarkerModel(clock=clock), clock, video, loud_audio(n / FPS), [(0.3, 1.0)])
    core, support = mouth_regions(run)
    outside = ~support
    changed_inside = 0
    for o, v in zip(run.frames, video, strict=True):
        assert o.kind is not FrameKind.PASSTHROUGH
        assert np.array_equal(o.frame.image[outside], v.image[outside])
        changed_inside += not np.array_equal(o.frame.image[core], v.image[core])
    assert changed_inside == n  # the mouth was replaced in every frame (generated or at rest)


def mask_sizes(attr: str, value: object, n: int = 20) -> tuple[int, int]:
    """A live run of a model with ``attr`` = ``value``: the last chunk's mask pixels (crop) and
    the pasted region's (frame)."""
    clock = VirtualClock()
    model = MarkerModel(clock=clock)
    setattr(model, attr, value)
    run = run_live(model, clock, moving_frames(n), loud_audio(n / FPS), [(0.2, 0.7)])
    core, _ = mouth_regions(run)
    return int(model.calls[-1].masks.sum()), int(core.sum())


def test_the_engine_builds_the_mask_the_model_was_trained_with() -> None:
    # a model's own mask geometry (SayAnythingConfig.mask_scale) sizes the editing region the
    # chunks carry and the region pasted back
    sizes = [mask_sizes("mask_scale", scale) for scale in [(1.0, 1.0), (1.25, 1.25)]]
    assert sizes[1][0] > 1.3 * sizes[0][0] and sizes[1][1] > 1.3 * sizes[0][1]


def test_the_engine_pastes_with_the_models_paste_gain() -> None:
    # a model's paste gain (SayAnythingConfig.paste_gain), times the user's face.mask_paste_gain:
    # the region the model is given is the same, the pasted mouth is whole over more of the frame
    plain, gained = (mask_sizes("paste_gain", g) for g in (1.0, 2.0))
    assert gained[0] == plain[0] and gained[1] > 1.2 * plain[1]
    clock = VirtualClock()
    model = MarkerModel(clock=clock)
    model.paste_gain = 2.0
    run = run_live(model, clock, moving_frames(10), loud_audio(10 / FPS), [], config("face.mask_paste_gain=1.5"))
    assert run.session.cropper.paste_gain == 3.0


def test_the_engine_crops_as_close_as_the_model_was_trained_to() -> None:
    # a model's crop zoom (SayAnythingConfig.crop_zoom): the chunks' masks fill more of the crop,
    # and the region pasted back into the frame stays the same size
    sizes = [mask_sizes("crop_zoom", zoom) for zoom in (1.0, 1.5)]
    assert sizes[1][0] > 1.8 * sizes[0][0]
    assert 0.8 < sizes[1][1] / sizes[0][1] < 1.25


# -- (8) model errors -----------------------------------------------------------------------
def test_failing_model_calls_only_affect_their_own_frames() -> None:
    clock = VirtualClock()
    n = 60
    fail = {2, 5}  # call 0 is the rest mouth; 1.. are chunks
    model = MarkerModel(clock=clock, fail_calls=fail)
    # two sampler steps: the ladder's first rung down (one step) keeps the chunking, so the
    # late frames are exactly those of the failed chunks
    cfg = config("model.steps=2")
    run = run_live(model, clock, moving_frames(n), loud_audio(n / FPS), [(-10.0, 100.0)], cfg)

    st = run.session.stats
    assert st.model_errors == len(fail) == run.session.worker.errors
    assert st.frames_out == n
    ok: set[int] = set()
    for k, c in enumerate(model.calls):
        if c.speech.any() and k not in fail:
            ok.update(frame_index(t) for t in c.times_s)
    expected_late = [i for i in range(n) if i not in ok]
    assert len(expected_late) == 8  # the 4 frames of each failed chunk not shared with a good one
    assert [o.frame.pts for o in run.frames if o.late] == expected_late
    assert st.late == len(expected_late)
    assert all(o.kind is FrameKind.HOLD for o in run.frames if o.late)  # last good mouth, recent
    assert all(o.kind is FrameKind.GENERATED for o in run.frames if not o.late)
    assert run.frames[-1].kind is FrameKind.GENERATED  # the stream kept going


# -- (9) no face ----------------------------------------------------------------------------
def test_no_face_passes_every_frame_through_without_model_calls() -> None:
    clock = VirtualClock()
    n = 40
    video = moving_frames(n)
    model = MarkerModel(clock=clock)
    run = run_live(model, clock, video, loud_audio(n / FPS), [(-10.0, 100.0)], detector=NoFaceDetector())
    assert model.calls == []
    assert [o.kind for o in run.frames] == [FrameKind.PASSTHROUGH] * n
    for o, v in zip(run.frames, video, strict=True):
        assert np.array_equal(o.frame.image, v.image)
        assert o.emitted_at_s == v.time_s + 0.8 and not o.late
    st = run.session.stats
    assert (st.no_face, st.passthrough, st.late, st.audio_out) == (n, n, 0, len(run.audio))


# -- (10) degrade ladder --------------------------------------------------------------------
def test_persistently_slow_model_degrades_to_passthrough_without_stalling() -> None:
    clock = VirtualClock()
    n = 100
    model = MarkerModel(clock=clock, latency_s=2.0)
    levels: list[int] = []
    cfg = config()
    tracker = FaceTracker(cfg.face, FixedFaceDetector([BOX]))
    session = LipSyncSession(cfg, model, clock, tracker=tracker, vad=ScriptedVad([(-10.0, 100.0)]))
    video = moving_frames(n)
    frames: list[OutputFrame] = []

    def emit(fs: list[OutputFrame], aus: list[OutputAudio]) -> None:
        frames.extend(fs)
        levels.extend([session.stats.degrade_level] * len(fs))

    try:
        asyncio.run(run_paced(session, clock, interleave(video, loud_audio(n / FPS)), emit))
    finally:
        clock.advance_to(clock.now() + 3600)
        session.close()

    top = len(session.ladder.rungs) - 1
    assert session.ladder.rungs[top].passthrough
    assert levels == sorted(levels) and levels[-1] == top == session.stats.degrade_level
    assert [o.frame.pts for o in frames] == list(range(n))
    assert all(o.emitted_at_s == o.deadline_s for o in frames)
    # each rung is left after degrade_late_frames (3) late frames: 4 steps down, 12 late frames
    late = [o.frame.pts for o in frames if o.late]
    assert late == list(range(3 * top))
    assert all(o.kind is FrameKind.PASSTHROUGH for o in frames[3 * top :])
    for o, v in zip(frames[3 * top :], video[3 * top :], strict=True):
        assert np.array_equal(o.frame.image, v.image)


def test_after_the_load_drops_the_session_climbs_back_without_late_frames_from_pass_through_chunks() -> None:
    """Frames planned on the pass-through rung have no model job: once the ladder climbs they
    still pass through on time (they used to leave late, knocking the ladder straight back
    down, so a session that had once degraded never got its mouths back)."""
    clock = VirtualClock()
    n = 600
    model = MarkerModel(clock=clock, latency_s=2.0)
    cfg = load(None, ["playout.recover_after_frames=20"])
    tracker = FaceTracker(cfg.face, FixedFaceDetector([BOX]))
    session = LipSyncSession(cfg, model, clock, tracker=tracker, vad=ScriptedVad([(-10.0, 100.0)]))
    frames: list[OutputFrame] = []
    levels: list[int] = []

    def emit(fs: list[OutputFrame], aus: list[OutputAudio]) -> None:
        frames.extend(fs)
        levels.extend([session.stats.degrade_level] * len(fs))
        if len(frames) >= 100:
            model.latency_s = 0.0  # the load drops

    try:
        asyncio.run(run_paced(session, clock, interleave(moving_frames(n), loud_audio(n / FPS)), emit))
    finally:
        clock.advance_to(clock.now() + 3600)
        session.close()
    top = len(session.ladder.rungs) - 1
    assert max(levels[:100]) == top
    first_zero = levels.index(0, 100)
    late_after = [i for i, o in enumerate(frames) if o.late and i >= 130]
    assert late_after == [], late_after
    # at most the longest wait (4x recover_after_frames) and one base wait per further rung
    assert first_zero <= 100 + 4 * 20 + (top - 1) * 20 + 5, first_zero
    assert all(o.kind is FrameKind.GENERATED for o in frames[first_zero + 40 :])


def test_the_ladder_climbs_back_when_load_drops_and_waits_longer_after_a_failed_climb() -> None:
    from stream.playout import DegradeLadder, OutputWindow

    cfg = config()
    base = cfg.playout.recover_after_frames
    ladder = DegradeLadder(cfg.playout, cfg.chunk, steps=2)
    top = len(ladder.rungs) - 1

    def feed(late: bool, n: int) -> None:
        for _ in range(n):
            ladder.record(late)

    feed(True, 3 * top)  # overloaded: all the way down
    assert ladder.level == top and ladder.rung.passthrough
    feed(False, base - 1)
    assert ladder.level == top
    feed(False, 1)  # a clean stretch: one rung up, on trial
    assert ladder.level == top - 1
    feed(True, 3)  # the load has not dropped: down again, and the next try waits twice as long
    assert ladder.level == top and ladder.recover_after == 2 * base
    feed(False, 2 * base - 1)
    assert ladder.level == top
    feed(False, 1)
    assert ladder.level == top - 1
    for _ in range(3):  # failing again and again: the wait is capped at 4x
        feed(True, 3)
        feed(False, ladder.recover_after)
    assert ladder.recover_after == 4 * base and ladder.level == top - 1
    # the load drops for good: the climb holds for the base wait, which is the wait again, and
    # every rung is climbed back
    feed(False, base)
    assert ladder.recover_after == base and ladder.level == top - 2
    feed(False, (top - 2) * base)
    assert ladder.level == 0 and ladder.recover_after == base

    w = OutputWindow()
    for i in range(250):
        w.add(i * 0.04, 0.8, "generated")
    h = w.health(10.0, 0, ladder.describe())
    assert h["keeping_up"] and h["status"] == "keeping up" and h["recent_kinds"] == {"generated": 250}
    for i in range(250, 500):
        w.add(i * 0.04, 0.8, "passthrough", late=i < 253)
    h = w.health(20.0, top, "pass-through (no model)")
    assert not h["keeping_up"] and h["recent_late"] == 3
    assert h["status"].startswith("model NOT keeping up: 3 late and 250 of 250 frames passed through")


# -- (11) offline mode ----------------------------------------------------------------------
class ManualClock:
    """A clock that only moves when the (fake) model says time has passed."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep_until(self, t: float) -> None:
        self.t = max(self.t, t)


class SlowOfflineModel(MarkerModel):
    """Each call 'takes' 2 s of clock time (more than D), without sleeping."""

    def generate(self, chunk: ModelChunk, reference: Any, steps: int) -> np.ndarray:
        self.clock.t += 2.0
        return super().generate(chunk, reference, steps)


def test_offline_mode_waits_for_a_slow_model_instead_of_falling_back() -> None:
    clock = ManualClock()
    n = 90
    segs = [(0.5, 1.5), (2.5, 3.3)]
    model = SlowOfflineModel(clock=clock)
    cfg = config()
    tracker = FaceTracker(cfg.face, FixedFaceDetector([BOX]))
    session = LipSyncSession(cfg, model, clock, tracker=tracker, vad=ScriptedVad(segs))
    video, audio = moving_frames(n), loud_audio(n / FPS)
    frames: list[OutputFrame] = []
    out_audio: list[OutputAudio] = []

    def emit(fs: list[OutputFrame], aus: list[OutputAudio]) -> None:
        frames.extend(fs)
        out_audio.extend(aus)

    try:
        run_offline(session, interleave(video, audio), emit, lookahead_frames=16)
    finally:
        session.close()

    assert [o.frame.pts for o in frames] == list(range(n))
    assert [a.frame.pts for a in out_audio] == [a.pts for a in audio]
    speech = [in_speech(v.time_s, segs) for v in video]
    assert [o.kind for o in frames] == [FrameKind.GENERATED if s else FrameKind.REST for s in speech]
    st = session.stats
    assert st.late == st.hold == st.passthrough == 0
    assert not any(o.late for o in frames)
    assert len(model.calls) > 5
    assert any(o.emitted_at_s > o.deadline_s for o in frames)  # the model really was slower than D


class WindowProbability:
    """A speech probability per 32 ms window from a function of the window's start time."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.n = fn, 0

    def __call__(self, window: np.ndarray) -> float:
        self.n += 1
        return float(self.fn((self.n - 1) * 512 / 16000))

    def reset(self) -> None:
        self.n = 0


@pytest.mark.parametrize("lookahead", [1, 40])
def test_offline_mode_waits_until_a_stop_is_heard_before_the_frames_it_moves_back_over(lookahead: int) -> None:
    """With the real VAD state machine, offline output does not depend on how far ahead the
    driver reads: a frame leaves only once any stop that could move back over it is heard."""
    from stream.vad import Vad

    clock = ManualClock()
    n = 60
    cfg = config("vad.stop_tail_ms=40")
    tracker = FaceTracker(cfg.face, FixedFaceDetector([BOX]))
    session = LipSyncSession(cfg, MarkerModel(clock=clock), clock, tracker=tracker, vad=ScriptedVad([]))
    session.vad = Vad(cfg.vad, session.ring, WindowProbability(lambda t: 0.9 if 0.2 <= t < 1.15 else 0.0))  # type: ignore[assignment]
    frames: list[OutputFrame] = []
    try:
        run_offline(session, interleave(moving_frames(n), loud_audio(n / FPS)), lambda fs, _a: frames.extend(fs),
                    lookahead_frames=lookahead)  # fmt: skip
    finally:
        session.close()
    assert [o.frame.pts for o in frames] == list(range(n))
    gen = [round(o.frame.time_s * FPS) for o in frames if o.kind is FrameKind.GENERATED]
    # speech from window 7 (0.224 s) to the quiet run's start at window 36 (1.152 s), plus 40 ms,
    # with half the 100 ms cross-fade either side: frames 5 (0.20 s) .. 31 (1.24 s)
    assert gen == list(range(5, 32))


class SlowRestModel(MarkerModel):
    """The first call (the session's rest mouth) takes 0.3 s of real time; the rest are instant."""

    def generate(self, chunk: ModelChunk, reference: Any, steps: int) -> np.ndarray:
        if not self.calls:
            import time as _time

            _time.sleep(0.3)
        return super().generate(chunk, reference, steps)


def test_offline_mode_waits_for_the_rest_mouth_so_the_output_does_not_depend_on_timing() -> None:
    clock = ManualClock()
    n = 30
    model = SlowRestModel(clock=clock)
    cfg = config()
    tracker = FaceTracker(cfg.face, FixedFaceDetector([BOX]))
    session = LipSyncSession(cfg, model, clock, tracker=tracker, vad=ScriptedVad([(0.8, 1.0)]))
    frames: list[OutputFrame] = []
    try:
        run_offline(session, interleave(moving_frames(n), loud_audio(n / FPS)), lambda fs, _a: frames.extend(fs))
        face = session.tracker.state
        assert face is not None
        r = session.cropper.size_px
        probe = session.cropper.paste(
            np.zeros((H, W, 3), np.uint8), np.full((r, r, 3), 255, np.uint8), session.cropper.mouth_mask(face), face
        )[..., 0]
    finally:
        session.close()
    core = probe == 255
    first = frames[0]
    assert first.kind is FrameKind.REST
    # the model's rest mouth (the marker's silent level, 40), not the reference crop shown until it is ready
    assert np.abs(first.frame.image[core].astype(int) - 40).max() <= 1
