"""One lip-sync stream: video and audio in, delayed lip-synced video and audio out.

Timing model: fixed-delay playout. A frame (or audio block) whose media time is t is due at
``anchor + t + D`` on the session clock, where ``anchor`` maps media time to clock time at
the first input. ``pull(now)`` returns everything due by ``now``; a frame whose mouth is not
ready then leaves with the fallback and is counted late. ``pull(wait=True)`` (offline use)
instead waits for the model and ignores deadlines.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any

import numpy as np

from stream.audio import AudioInput, AudioRing, sanitize
from stream.chunker import Chunker, ChunkPlan, audio_windows
from stream.clock import Clock
from stream.compositor import LUMA, blend_outputs, mean_delta_e, mix, mix_where_differ, shift_colour, speech_weight
from stream.config import Config
from stream.face import FaceCropper, FaceState, FaceTracker, place_by_eyes
from stream.frames import AudioFrame, FrameKind, OutputAudio, OutputFrame, VideoFrame
from stream.playout import DegradeLadder
from stream.vad import Vad
from stream.worker import JobResult, LipSyncModel, ModelChunk, ModelWorker

log = logging.getLogger(__name__)


@dataclass
class _Slot:
    index: int
    frame: VideoFrame
    deadline_s: float
    face: FaceState | None
    crop: np.ndarray | None = None
    mask: np.ndarray | None = None
    jobs: list[tuple[cf.Future[JobResult], int, float]] = field(default_factory=list)
    passthrough: bool = False  # planned on the ladder's pass-through rung: no model job will come


@dataclass
class SessionStats:
    frames_in: int = 0
    frames_out: int = 0
    audio_in: int = 0
    audio_out: int = 0
    generated: int = 0
    rest: int = 0
    hold: int = 0
    passthrough: int = 0
    no_face: int = 0
    late: int = 0
    chunks_planned: int = 0
    chunks_silent: int = 0
    chunks_refused: int = 0
    model_errors: int = 0
    nonfinite_audio_samples: int = 0
    degrade_level: int = 0
    stage_ms: dict[str, float] = field(default_factory=lambda: {"face": 0.0, "crop": 0.0, "paste": 0.0})
    ready_latency_s: list[float] = field(default_factory=list)  # capture -> mouth ready, per generated frame
    # the model's rendering of the reference crop at rest against the crop itself: its colour cast
    # taken off (the RGB offset ``model.match_colour`` adds to the model's pixels), the mean CIELAB
    # delta-E over the mask left after that, and the texture chosen by it with texture "auto"
    colour_offset: list[float] = field(default_factory=list)
    rest_delta_e: float = float("nan")
    rest_delta_e_raw: float = float("nan")  # the same with the cast left on
    texture: str = ""
    reference_frame: int = 0  # the input frame texture "reference" shows at rest (model.reference_window_s)
    detail_skipped: int = 0  # pastes without the enrolled detail net: the face was far from its trained size

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "ready_latency_s"}
        d["stage_ms"] = dict(self.stage_ms)
        return d


class LipSyncSession:
    """Wires face tracking, audio, VAD, chunking, the model worker and playout for one stream.

    Call :meth:`push_video` / :meth:`push_audio` as media arrives, :meth:`pull` to take what is
    due, :meth:`finish` at end of stream and :meth:`close` when done.
    """

    def __init__(
        self,
        config: Config,
        model: LipSyncModel,
        clock: Clock,
        *,
        worker: ModelWorker | None = None,
        tracker: FaceTracker | None = None,
        vad: Vad | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.clock = clock
        self.delay_s = config.playout.delay_ms / 1000
        self.worker = worker if worker is not None else ModelWorker(model, clock)
        self._own_worker = worker is None
        self.tracker = tracker if tracker is not None else FaceTracker(config.face)
        self._own_tracker = tracker is None
        self.cropper = FaceCropper(
            config.face, model.resolution_px, model.mask_scale, model.crop_zoom, model.paste_gain
        )
        self.ring = AudioRing(config.audio.ring_buffer_ms)
        self.audio_in = AudioInput(self.ring)
        self.vad = vad if vad is not None else Vad(config.vad, self.ring)
        self.chunker = Chunker(config.chunk)
        self.ladder = DegradeLadder(config.playout, config.chunk, config.model.steps)
        self.stats = SessionStats()
        self._anchor_s: float | None = None
        self._slots: deque[_Slot] = deque()  # frames not yet emitted, in order
        self._base = 0  # index of self._slots[0]
        self._n_frames = 0
        self._audio_out: deque[tuple[AudioFrame, float]] = deque()
        self._finished = False
        self._reference: Any = None
        self._rest_crop: np.ndarray | None = None
        # model.texture = "reference": the frame shown at rest and its face (the most closed-looking
        # mouth of the face's first model.reference_window_s), and the model's rendering at rest of
        # the first face's crop, the model's reference (what a generated crop is taken relative to)
        self._ref_frame: tuple[np.ndarray, FaceState] | None = None
        self._rest_render: np.ndarray | None = None
        # the texture in use: the configured one, or for "auto" what the rest rendering decides
        self._texture = config.model.texture
        self._ref_crop: tuple[np.ndarray, np.ndarray] | None = None  # (crop, mask) of the reference
        self._ref_dark = 0.0  # FaceCropper.mouth_darkness of _ref_frame
        self._ref_until_s = 0.0  # _ref_frame may still move to a more closed mouth until then
        self._ref_first = 0  # the frame index of the first face (the model's reference)
        # texture "auto" is decided first on the first face, whose mouth may be open (a stream that
        # starts mid-word): once model.reference_window_s is over, if the most closed-looking mouth
        # of it is another frame, the decision is made again on that frame (``_close_ref_window``)
        self._ref_window_open = False
        self._texture_job: tuple[cf.Future[JobResult], np.ndarray, np.ndarray] | None = None
        self._colour_offset: np.ndarray | None = None  # model.match_colour: RGB added to the model's pixels
        # an enrolled checkpoint's personal detail net (model.detail), applied as the model's pixels are pasted
        self._detail = getattr(model, "detail", None) if config.model.detail == "auto" else None
        self._rest_job: cf.Future[JobResult] | None = None
        # the texture probe of a model whose rest rendering is not one (``_set_reference``)
        self._probe_job: cf.Future[JobResult] | None = None
        self._last_good: tuple[int, np.ndarray] | None = None  # (frame index, crop)
        # vad.pause_mouth = "held": the model's drawing at the start of the current pause, and
        # whether the frames now leaving are closing into one (speech was drawn in full since)
        self._pause_crop: np.ndarray | None = None
        self._closing = False
        self._silenced: list[tuple[float, float]] = []  # media-time spans cut by interrupt()
        # the faces of the frames just emitted, for the steady window of the rest mouth
        self._recent_faces: deque[FaceState] = deque(maxlen=max(config.face.steady_rest_frames, 1))
        # face.steady_rest_anchor = "eyes": the windows the rest mouths were drawn in, relative to
        # the eyes (FaceState.shape): the reference frame's, and the held pause drawing's
        self._ref_shape: np.ndarray | None = None
        self._pause_shape: np.ndarray | None = None
        # face.steady_rest_mask = "pause": the rest mouth's mask so far in this pause (it only grows)
        self._rest_mask: np.ndarray | None = None
        self._last_steady: tuple[FaceState, np.ndarray] | None = None  # _steady_face's last answer
        # face.rest_glide_frames: at a held pause's first frame, its own crop window minus the
        # steady one (centre x, y, side, roll), and the pause's frames since; None: no glide
        self._glide: tuple[np.ndarray, int] | None = None

    # -- input ------------------------------------------------------------------------
    def _deadline(self, media_s: float) -> float:
        if self._anchor_s is None:
            self._anchor_s = self.clock.now() - media_s
        return self._anchor_s + media_s + self.delay_s

    def push_video(self, frame: VideoFrame) -> None:
        img = frame.image
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"video frame image must be HxWx3 uint8 RGB, got {img.shape} {img.dtype}")
        deadline = self._deadline(frame.time_s)
        t0 = time.perf_counter()
        face = self.tracker.update(img)
        t1 = time.perf_counter()
        slot = _Slot(self._n_frames, frame, deadline, face)
        if face is not None:
            slot.crop = self.cropper.crop(img, face)
            slot.mask = self.cropper.mouth_mask(face)
            if self._reference is None:
                self._set_reference(slot.crop, slot.mask)
                self._ref_frame = (img.copy(), face)
                self._ref_shape = face.shape()
                self._ref_dark = self.cropper.mouth_darkness(slot.crop, slot.mask, face)
                self._ref_until_s = frame.time_s + self.config.model.reference_window_s
                self._ref_first = self.stats.reference_frame = self._n_frames
                self._ref_window_open = True
            elif frame.time_s < self._ref_until_s and (self.config.model.texture != "model" or self._rest_is_frame):
                # texture "reference" shows this frame's mouth at rest, and "auto" decides on it:
                # take the most closed-looking mouth of the face's first seconds (a dubbed clip may
                # start mid-word); the configured "model" texture never shows it, so it is not measured
                dark = self.cropper.mouth_darkness(slot.crop, slot.mask, face)
                if dark < self._ref_dark - 0.05:
                    self._ref_frame, self._ref_dark = (img.copy(), face), dark
                    self.stats.reference_frame = self._n_frames
        if self._ref_window_open and frame.time_s >= self._ref_until_s:
            self._close_ref_window()
        t2 = time.perf_counter()
        self.stats.stage_ms["face"] += (t1 - t0) * 1000
        self.stats.stage_ms["crop"] += (t2 - t1) * 1000
        self._slots.append(slot)
        self._n_frames += 1
        self.stats.frames_in += 1
        self._plan_chunks()

    def push_audio(self, frame: AudioFrame, emit: bool = True) -> None:
        """Audio in. ``emit=False``: it drives the engine (VAD, the model's windows) but is not
        handed out again (an avatar's silence between utterances keeps the timeline moving)."""
        deadline = self._deadline(frame.time_s)
        before = self.audio_in.nonfinite_samples
        self.audio_in.push(frame)
        self.stats.nonfinite_audio_samples = self.audio_in.nonfinite_samples
        samples = frame.samples
        if self.audio_in.nonfinite_samples != before or samples.dtype != np.float32 or samples.ndim != 2:
            samples, _ = sanitize(samples)
            frame = AudioFrame(samples, frame.sample_rate_hz, frame.pts, frame.time_base)
        if emit:
            self._audio_out.append((frame, deadline))
        self.stats.audio_in += 1
        self.vad.update()
        self._plan_chunks()

    def finish(self) -> None:
        """End of input: flush the resampler and plan the last, possibly short, chunk."""
        self.audio_in.close()
        self.vad.update()
        self._finished = True
        if self._ref_window_open:
            self._close_ref_window()
        self._plan_chunks()

    # -- reference & rest mouth ------------------------------------------------------
    def _set_reference(self, crop: np.ndarray, mask: np.ndarray) -> None:
        self._reference = self.worker.run_sync(self.model.encode_reference, crop)
        self._rest_crop = crop  # until the model's rest mouth is ready: the reference, still
        self._ref_crop = (crop, mask)
        chunk = self._rest_chunk(crop, mask)
        self._rest_job = self.worker.submit(chunk, self._reference, self.ladder.rung.steps, always=True)
        # a model that corrects its pixels from the reference crop's own error (a context head)
        # draws the reference itself almost exactly, whether or not it can draw the face: with
        # texture "auto" its probe is rendered without that correction (``probe_reference``)
        probe_ref = self._probe_reference()
        if probe_ref is not None:
            self._probe_job = self.worker.submit(chunk, probe_ref, self.ladder.rung.steps, always=True)

    def _rest_chunk(self, crop: np.ndarray, mask: np.ndarray) -> ModelChunk:
        """One chunk of ``crop`` held still, in silence: the model's drawing of that face at rest."""
        L = self.chunker.chunk_frames
        n_audio = round((self.config.chunk.audio_before_ms + self.config.chunk.audio_after_ms) * 16)
        return ModelChunk(
            np.repeat(crop[None], L, 0),
            np.repeat(mask[None], L, 0),
            np.zeros((L, n_audio), np.float32),
            np.zeros(L, bool),
            np.zeros(L, np.float64),
        )

    def _probe_reference(self) -> Any:
        """The reference texture "auto" renders its probes with: the model's own, or for a model
        with a context head the one without it (``probe_reference``); None: the rest rendering is
        the probe."""
        probe = getattr(self.model, "probe_reference", None)
        if probe is None or self.config.model.texture != "auto":
            return None
        return probe(self._reference)

    def _close_ref_window(self) -> None:
        """The end of model.reference_window_s (or of the input). With texture "auto", if the most
        closed-looking mouth of the window is not the first face's, the model draws that frame's
        face at rest too, and the texture is decided again on it (``_rest``): a first face caught
        mid-word is compared with a closed drawing, so it reads as a face the model cannot draw."""
        self._ref_window_open = False
        if self.config.model.texture != "auto" or self._ref_frame is None:
            return
        if self.stats.reference_frame == self._ref_first:
            return
        img, face = self._ref_frame
        crop, mask = self.cropper.crop(img, face), self.cropper.mouth_mask(face)
        probe_ref = self._probe_reference()
        ref = self._reference if probe_ref is None else probe_ref
        job = self.worker.submit(self._rest_chunk(crop, mask), ref, self.ladder.rung.steps, always=True)
        if job is not None:  # None: the worker is shut down
            self._texture_job = (job, crop, mask)

    def _rest(self, wait: bool = False) -> np.ndarray | None:
        """The mouth at rest; ``wait`` (offline): wait for the model's rest rendering instead of
        showing the reference still until it is ready, so the output does not depend on timing."""
        job, probe = self._rest_job, self._probe_job
        if job is not None and wait:
            cf.wait([j for j in (job, probe) if j is not None])
        if job is not None and job.done() and (probe is None or probe.done()):
            self._rest_job = self._probe_job = None
            if job.exception() is None:
                self._rest_crop = self._rest_render = job.result().frames[0]
                drawn = probe.result().frames[0] if probe is not None and probe.exception() is None else None
                assert self._ref_crop is not None
                self._choose_texture(self._rest_render if drawn is None else drawn, *self._ref_crop)
        again = self._texture_job
        if again is not None and self._rest_job is None:
            if wait:
                cf.wait([again[0]])
            if again[0].done():
                self._texture_job = None
                if again[0].exception() is None and self._rest_render is not None:
                    drawn = again[0].result().frames[0]
                    self._choose_texture(drawn, again[1], again[2], cast_too=False)
                    if self._probe_reference() is None and self._ref_frame is not None:
                        # the drawing is the model's rest mouth too (a closed mouth drawn closed, not
                        # an open one), in that frame's window
                        self._rest_crop = self._rest_render = drawn
                        self._ref_shape = self._ref_frame[1].shape()
        return self._rest_crop

    def _choose_texture(self, probe: np.ndarray, crop: np.ndarray, mask: np.ndarray, cast_too: bool = True) -> None:
        """Compare the model's rendering of the reference at rest with the reference itself, over
        the mask: the per-channel median difference is the model's colour cast on this face (e.g.
        its training characters' palette), and what remains after taking it off (mean CIELAB
        delta-E) is what the model cannot draw. With ``model.match_colour`` the cast is taken off
        the model's pixels from then on. With ``model.texture = "auto"``, a face whose remainder is
        beyond ``model.texture_auto_delta_e`` (the texture of a photograph, for a model trained on
        rendered characters) takes the "reference" texture, any other face the model's pixels.
        ``probe``: the rendering that decides, of ``crop`` (with ``mask``) at rest: the rest
        rendering, or for a model with a context head the same rendering without the head
        (``_set_reference``); the colour cast is always the rest rendering's, which is what is
        pasted (``cast_too=False``: a second decision, on another frame, leaves it as it is)."""
        assert self._rest_render is not None
        region = mask >= 0.5
        if not region.any():
            return

        def cast(img: np.ndarray) -> np.ndarray:
            return np.median(crop[region].astype(np.float32) - img[region].astype(np.float32), axis=0)

        if cast_too:
            offset = cast(self._rest_render)
            self.stats.colour_offset = [float(v) for v in offset]
            if self.config.model.match_colour:
                self._colour_offset = offset
        self.stats.rest_delta_e_raw = mean_delta_e(probe, crop, region)
        de = mean_delta_e(shift_colour(probe, cast(probe)), crop, region)
        self.stats.rest_delta_e = de
        if self.config.model.texture == "auto":
            self._texture = "reference" if de > self.config.model.texture_auto_delta_e else "model"
            log.info("texture: %s (the model's rest mouth is delta-E %.1f from the reference)", self._texture, de)
        self.stats.texture = self._texture

    def _paste(self, image: np.ndarray, crop: np.ndarray, face: FaceState, mask: np.ndarray) -> np.ndarray:
        """``crop`` (the model's pixels, in ``face``'s crop window) pasted into ``image`` under
        ``mask``, with the texture in use: the model's own, or the reference frame's pixels plus
        the model's change from its rest rendering."""
        if self._texture == "reference" and self._rest_render is not None and self._ref_frame:
            delta = crop.astype(np.float32) - self._rest_render.astype(np.float32)
            # brightness only: the model's colours are its training characters', not this person's
            delta = np.repeat(delta @ LUMA[:, None], 3, axis=-1)
            return self.cropper.paste_relative(image, delta, mask, face, *self._ref_frame)
        if self._colour_offset is not None:
            crop = shift_colour(crop, self._colour_offset)
        refine = None
        if self._detail is not None:
            if self._detail.applies(self.cropper.scale(face)):
                refine = self._detail.refine
            else:
                self.stats.detail_skipped += 1  # a face far from the size it was trained at: plain paste
        return self.cropper.paste(image, crop, mask, face, refine=refine)

    @property
    def _rest_is_frame(self) -> bool:
        return self.config.vad.pause_mouth == "frame"

    def _paste_rest(self, image: np.ndarray, rest: np.ndarray, face: FaceState, mask: np.ndarray) -> np.ndarray:
        """The mouth at rest pasted into ``image``: ``rest`` as :meth:`_paste` does, or with
        ``vad.pause_mouth = "frame"`` the reference frame's own pixels (its most closed-looking
        mouth of the first ``model.reference_window_s``), still."""
        if self._rest_is_frame and self._ref_frame is not None:
            zero = np.zeros(rest.shape, np.float32)
            return self.cropper.paste_relative(image, zero, mask, face, *self._ref_frame)
        return self._paste(image, rest, face, mask)

    def _steady_face(self, slot: _Slot, shape: np.ndarray | None) -> tuple[FaceState, np.ndarray] | None:
        """``slot``'s face with its crop window (centre, side, roll) averaged over up to
        ``face.steady_rest_frames`` frames either side, as many after as before (so a head moving
        at constant speed is not lagged): the frames just emitted and those already tracked but
        not yet emitted, and the rest mouth's mask in it (``face.steady_rest_mask``). None when
        off, or when the window holds a lost face or a jump."""
        k = self.config.face.steady_rest_frames
        assert slot.face is not None and self._slots[0] is slot
        if k <= 0:
            return None
        after: list[FaceState] = []
        for s in islice(self._slots, 1, k + 1):  # slot is the first: the one being emitted
            if s.face is None:
                break
            after.append(s.face)
        n = min(len(after), len(self._recent_faces))
        if n == 0:
            # the stream's last frame (nothing after it): the last frame's window, not a jump to
            # this frame's own
            last = self._last_steady if self._recent_faces and self._finished else None
            if last is None or math.dist(last[0].center, slot.face.center) > 0.25 * slot.face.side_px:
                return None
            return last
        window = [*list(self._recent_faces)[len(self._recent_faces) - n :], slot.face, *after[:n]]
        c = np.array([f.center for f in window])
        if np.abs(c - np.array(slot.face.center)).max() > 0.25 * slot.face.side_px:
            return None  # a new track or a jump inside the window
        angle = float(np.mean([f.angle_rad for f in window]))
        if self.config.face.steady_rest_anchor == "eyes" and shape is not None:
            eyes = [f.eyes() for f in window]
            mid = np.mean([e[0] for e in eyes], axis=0)
            steady = place_by_eyes(slot.face, mid, float(np.mean([e[1] for e in eyes])), angle, shape)
        else:
            steady = replace(
                slot.face,
                center=(float(c[:, 0].mean()), float(c[:, 1].mean())),
                side_px=float(np.mean([f.side_px for f in window])),
                angle_rad=angle,
            )
        how = self.config.face.steady_rest_mask
        if how == "own":
            mask = self.cropper.mouth_mask(steady)
        else:
            mask = np.max([self.cropper.mouth_mask(replace(steady, keypoints=f.keypoints)) for f in window], axis=0)
        if how == "pause":
            if self._rest_mask is not None:
                mask = np.maximum(mask, self._rest_mask)
            self._rest_mask = mask
        self._last_steady = (steady, mask)
        return steady, mask

    def _glided(
        self, own: FaceState, steady: tuple[FaceState, np.ndarray], start: bool
    ) -> tuple[FaceState, np.ndarray]:
        """A held pause's mouth glides from the crop window of its first frame (the frame's own,
        which the drawing before it was pasted through) to the steady one (placed from the eyes
        averaged over the frames around) over ``face.rest_glide_frames`` frames, instead of
        jumping there at that frame. The mask is the steady one from the first frame: gliding it
        too would show more of the filmed mouth, which moves when dubbing, for those frames."""
        n = self.config.face.rest_glide_frames
        face, mask = steady
        if start:
            d = np.subtract((*own.center, own.side_px, own.angle_rad), (*face.center, face.side_px, face.angle_rad))
            self._glide = (d, 0)
        if n <= 0 or self._glide is None:
            return steady
        d, j = self._glide
        f = 1.0 - j / n
        if f <= 0.0:
            self._glide = None
            return steady
        self._glide = (d, j + 1)
        moved = replace(
            face,
            center=(face.center[0] + f * float(d[0]), face.center[1] + f * float(d[1])),
            side_px=face.side_px + f * float(d[2]),
            angle_rad=face.angle_rad + f * float(d[3]),
        )
        return moved, mask

    # -- chunks --------------------------------------------------------------------
    def _slot(self, index: int) -> _Slot | None:
        k = index - self._base
        return self._slots[k] if 0 <= k < len(self._slots) else None

    @property
    def _tail_settles(self) -> bool:
        return self.config.vad.stop_tail_ms < self.config.vad.speech_stop_ms

    def _speech_w(self, t: float, settled: bool = False) -> float:
        """How much of frame time ``t`` shows speech: 1, 0 or a cross-fade. ``settled``: with
        the stops moved back to where their silence began (``vad.stop_tail_ms``) where that is
        known, as the frames leave; chunks are planned without it (the stop is not heard yet)."""
        for a, b in self._silenced:
            if a <= t < b:
                return 0.0
        c = self.config.vad
        if settled and self._tail_settles and (self._finished or t < self.vad.settled_until_s):
            points = self.vad.settled_change_points(c.stop_tail_ms / 1000)
        else:
            points = self.vad.change_points()
        return speech_weight(*points, t, c.crossfade_ms / 1000)

    def interrupt(self, media_s: float) -> None:
        """Speech stops at ``media_s``: the audio from there to what has been pushed so far is
        not played, and those frames show the mouth at rest (an avatar whose user interrupted
        it). Audio pushed later plays as usual."""
        end = max(self.ring.end_s, media_s)
        oldest = self._slots[0].frame.time_s if self._slots else media_s
        self._silenced = [(a, b) for a, b in self._silenced if b > oldest] + [(media_s, end + 1e-6)]
        self._audio_out = deque((af, d) for af, d in self._audio_out if af.time_s + af.duration_s <= media_s)

    def _plan_chunks(self) -> None:
        while True:
            rung = self.ladder.rung
            if (rung.chunk_frames, rung.overlap_frames) != (self.chunker.chunk_frames, self.chunker.overlap_frames):
                self.chunker.set_length(rung.chunk_frames, rung.overlap_frames)
            self.chunker.skip_to(self._base)  # frames that already left are never planned
            start = self.chunker.next_start
            has_face = [self._slots[i - self._base].face is not None for i in range(start, self._n_frames)]
            planned = self.chunker.plan(self._n_frames, has_face, final=self._finished)
            if planned is None:
                return
            # the chunk's last frame needs its audio lookahead and a final VAD decision
            last = self._slot(planned.stop - 1)
            assert last is not None
            need = last.frame.time_s + max(self.chunker.lookahead_s, self.config.vad.crossfade_ms / 2000)
            if not self._finished and (self.ring.end_s < need or self.vad.final_until_s < need):
                return
            self.chunker.commit(planned)
            self._submit(planned, rung.steps, rung.passthrough)

    def _submit(self, plan: ChunkPlan, steps: int, passthrough: bool) -> None:
        slots = [s for s in (self._slot(i) for i in range(plan.start, plan.stop)) if s is not None]
        assert len(slots) == plan.stop - plan.start and all(s.crop is not None for s in slots)
        weights = [self._speech_w(s.frame.time_s) for s in slots]
        self.stats.chunks_planned += 1
        if passthrough:
            for s in slots:
                s.passthrough = True
            return
        if max(weights) <= 0.0:
            self.stats.chunks_silent += 1
            return
        L = self.chunker.chunk_frames
        n = plan.stop - plan.start
        pad = [slots[min(k, n - 1)] for k in range(max(L, n))]  # short chunks repeat their last frame
        times = np.array([s.frame.time_s for s in pad])
        chunk = ModelChunk(
            np.stack([s.crop for s in pad if s.crop is not None]),
            np.stack([s.mask for s in pad if s.mask is not None]),
            audio_windows(self.ring, times, self.config.chunk.audio_before_ms, self.config.chunk.audio_after_ms),
            np.array([self._speech_w(t) > 0 for t in times]),
            times,
        )
        fut = self.worker.submit(chunk, self._reference, steps)
        if fut is None:
            self.stats.chunks_refused += 1
            return
        for k, s in enumerate(slots):
            w = plan.weight(plan.start + k)
            if w < 1.0:
                # overlap: the chunks already covering this frame fade out as this one fades in,
                # so the newer chunk's share is w (linear), not w / (1 + w) after renormalising
                s.jobs = [(f, j, jw * (1.0 - w)) for f, j, jw in s.jobs]
            s.jobs.append((fut, k, w))

    # -- output ---------------------------------------------------------------------
    def _compose(self, slot: _Slot, now: float, wait: bool) -> OutputFrame:
        frame = slot.frame
        t = frame.time_s
        # planned on the pass-through rung (the ladder may have climbed since: these frames
        # never had a job, so they are passed through, not counted late), or on it now
        if slot.face is None or slot.passthrough or self.ladder.rung.passthrough:
            self.stats.no_face += slot.face is None
            self.stats.passthrough += 1
            return OutputFrame(frame, FrameKind.PASSTHROUGH, slot.deadline_s, now)
        sw = self._speech_w(t, settled=True)
        outputs: list[tuple[np.ndarray, float]] = []
        failed = False
        ready_at = 0.0
        for fut, k, w in slot.jobs:
            if wait:
                cf.wait([fut])
            if fut.done():
                if fut.exception() is None:
                    res = fut.result()
                    outputs.append((res.frames[k], w))
                    ready_at = max(ready_at, res.finished_s)
                else:
                    failed = True
        self.stats.model_errors = self.worker.errors
        rest = self._rest(wait)
        # (with the reference texture the mouth at rest is the reference's own pixels: no drawing held)
        held = self.config.vad.pause_mouth == "held" and self._texture != "reference"
        # the window the rest mouth was drawn in, relative to the eyes: the reference frame's own
        # pixels are shown through the window they were cut with; the model's rendering of the
        # reference through the first face's, which it was drawn from
        rest_shape = self._ref_shape
        if (self._texture == "reference" or self._rest_is_frame) and self._ref_frame is not None:
            rest_shape = self._ref_frame[1].shape()
        if held and rest is not None and self._pause_crop is not None:
            rest, rest_shape = self._pause_crop, self._pause_shape
        assert slot.crop is not None and slot.mask is not None
        late = False
        shown_w = sw  # how much of the model's drawing is mixed over the rest mouth
        pause_start = False
        if sw <= 0.0:
            if held and self._closing and outputs:
                # the pause's first frame: the model's drawing here (closed: the audio is silent) is
                # the mouth at rest until speech resumes
                self._pause_crop = rest = blend_outputs(outputs)
                assert slot.face is not None  # a frame with model outputs has a face
                self._pause_shape = rest_shape = slot.face.shape()
                pause_start = True
            self._closing = False
            kind, crop = FrameKind.REST, rest
        elif outputs:
            gen = blend_outputs(outputs)
            self._last_good = (slot.index, gen)
            if held:
                if sw >= 1.0:
                    self._closing = True
                elif self._closing:
                    shown_w = 1.0  # closing into a pause: the model draws on until the pause begins
            kind, crop = FrameKind.GENERATED, mix(rest, gen, shown_w) if rest is not None else gen
            self.stats.ready_latency_s.append(ready_at - (slot.deadline_s - self.delay_s))
        else:
            self._closing = False
            late = True
            fb = self.config.playout.fallback
            lg = self._last_good
            if fb == "hold" and lg is not None and slot.index - lg[0] <= self.config.playout.hold_max_frames:
                kind, crop = FrameKind.HOLD, lg[1]
            elif fb in ("hold", "rest") and rest is not None:
                kind, crop = FrameKind.REST, rest
            else:
                kind, crop = FrameKind.PASSTHROUGH, None
            if failed:
                log.debug("frame %d: model failed, fallback %s", slot.index, kind.value)
        if crop is None:
            image = frame.image
        else:
            t0 = time.perf_counter()
            assert slot.face is not None and slot.mask is not None
            # the rest mouth is one still image: it is pasted through the steady crop window, so it
            # does not bob with the filmed jaw (its mask, face.steady_rest_mask, covers the filmed
            # mouth: by default the largest over that window); what the model drew for this frame
            # is pasted through the window it was cut with, and a fade between the two is mixed in
            # the frame
            fading = kind is FrameKind.GENERATED and shown_w < 1.0
            resting = kind is FrameKind.REST or fading
            steady = self._steady_face(slot, rest_shape) if rest is not None and resting else None
            if kind is FrameKind.REST and held and steady is not None:
                steady = self._glided(slot.face, steady, pause_start)
            else:
                self._glide = None
            if steady is None:
                paste = self._paste_rest if kind is FrameKind.REST else self._paste
                image = paste(frame.image, crop, slot.face, slot.mask)
            elif fading:
                assert rest is not None  # steady is only looked for with a rest mouth
                at_rest = self._paste_rest(frame.image, rest, *steady)
                image = mix_where_differ(at_rest, self._paste(frame.image, gen, slot.face, slot.mask), shown_w)
            else:  # the rest mouth
                image = self._paste_rest(frame.image, crop, *steady)
            if steady is None:
                self._rest_mask = None  # the pause's mask starts again at the next one
            self.stats.stage_ms["paste"] += (time.perf_counter() - t0) * 1000
        setattr(self.stats, kind.value, getattr(self.stats, kind.value) + 1)
        out = OutputFrame(VideoFrame(image, frame.pts, frame.time_base), kind, slot.deadline_s, now, late, sw > 0)
        return out

    def pull(
        self, now: float | None = None, wait: bool = False, audio_lead_s: float = 0.0
    ) -> tuple[list[OutputFrame], list[OutputAudio]]:
        """Everything due by ``now`` (video, audio), in order. With ``wait``, every frame whose
        chunks are planned is returned after waiting for the model, whatever the time.
        ``audio_lead_s`` hands audio out that much before its deadline, for a sink that
        schedules it itself (an audio device plays what it is given after its own latency)."""
        if now is None:
            now = self.clock.now()
        self._plan_chunks()
        frames: list[OutputFrame] = []
        while self._slots:
            slot = self._slots[0]
            if wait:
                if slot.index >= self.chunker.next_start and not self._finished and slot.face is not None:
                    break  # its chunk is not planned yet
                if not self._finished and slot.frame.time_s >= self.vad.settled_until_s and self._tail_settles:
                    break  # a stop that would move back over it may not be heard yet
                if self._ref_window_open and self.config.model.texture == "auto":
                    # texture "auto" decides once, on the window's most closed-looking mouth: nothing
                    # leaves before the window is over, and the model's queue is drained meanwhile
                    # (offline, no chunk is refused)
                    jobs = [f for s in self._slots for f, _, _ in s.jobs]
                    cf.wait([*jobs, *(j for j in (self._rest_job, self._probe_job) if j is not None)])
                    break
            elif slot.deadline_s > now:
                break
            out = self._compose(slot, now, wait)
            if slot.face is None:  # the steady window never spans a lost face, nor a pause's mouth
                self._recent_faces.clear()
                self._pause_crop, self._closing = None, False
                self._pause_shape = self._rest_mask = self._last_steady = self._glide = None
            else:
                self._recent_faces.append(slot.face)
            self._slots.popleft()
            self._base += 1
            frames.append(out)
            self.stats.frames_out += 1
            self.stats.late += out.late
            if not wait and self.ladder.record(out.late):
                self.stats.degrade_level = self.ladder.level
        audio: list[OutputAudio] = []
        while self._audio_out and (wait or self._audio_out[0][1] <= now + audio_lead_s):
            af, deadline = self._audio_out.popleft()
            audio.append(OutputAudio(af, deadline, now))
            self.stats.audio_out += 1
        return frames, audio

    def drop_pending_audio(self) -> int:
        """Forget audio not yet handed out (its source was replaced, e.g. by a dub); returns how
        many blocks were dropped."""
        n = len(self._audio_out)
        self._audio_out.clear()
        return n

    @property
    def pending_frames(self) -> int:
        return len(self._slots)

    @property
    def audio_pending(self) -> int:
        """Audio blocks pushed and not yet handed out."""
        return len(self._audio_out)

    def next_deadline(self, audio_lead_s: float = 0.0) -> float | None:
        """When :meth:`pull` (with the same ``audio_lead_s``) next has something to hand out."""
        cands = []
        if self._slots:
            cands.append(self._slots[0].deadline_s)
        if self._audio_out:
            cands.append(self._audio_out[0][1] - audio_lead_s)
        return min(cands) if cands else None

    def close(self) -> None:
        if self._own_worker:
            self.worker.close()
        if self._own_tracker:
            self.tracker.close()  # its face detector: native state and a thread
