"""Real talking-head video -> training shards, cut exactly as the engine cuts live video.

``sayanything-live prepare VIDEO_OR_DIR... --out DATA [--preset tiny|full]``

Each clip is decoded with PyAV (any container and codec it reads; audio of any rate and
channel count goes through the engine's own 16 kHz mono input path), tracked with the engine's
face tracker, cropped with its crop and lower-face mask at the preset's resolution, and given
the engine's per-frame audio windows at the frames' own timestamps (a variable-frame-rate clip
keeps its timing). Runs of ``chunk_frames`` tracked frames become training chunks; the
reference of a chunk is a crop of the same clip from another moment. The input the model is
given is the frame itself (real video has no version with another mouth): the mask hides the
mouth, lips, jaw and chin, as at run time, with one mask per chunk (the union of the engine's
per-frame masks) so that the mask's own movement does not give the opening away.

A clip is skipped, with its reason recorded, when it is unreadable, has no audio, is too
short, holds no speech (silero-vad), has no usable face (tracked in under half its frames),
a face too small, several faces (``--faces skip``, the default; ``--faces select`` follows
``face.select``), or a large audio/video offset (estimated from the mouth region's darkness,
which rises as the mouth opens, against the audio energy; only when that estimate is clear).

Output (``DATA``):

- ``shards/CLIP-NNN.npz``: at most ``shard_chunks`` chunks each (:class:`Shard`), written as
  they are cut, so neither a long clip nor a large dataset has to fit in memory;
- ``manifest.json``: settings, and per clip either its shards, chunks and seconds or the
  reason it was skipped. It is rewritten (atomically) after every clip: run the same command
  again and finished clips are not redone. A first run writes into ``DATA.partial`` and renames
  it to ``DATA`` when every clip is done, so a half-written folder never has the requested name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import av
import numpy as np

from model.configs import PRESETS, SayAnythingConfig
from model.train.dataset import ChunkSet, NpzRecord
from stream.audio import SAMPLE_RATE_HZ, AudioInput, AudioRing
from stream.chunker import audio_windows
from stream.config import FaceConfig, VadConfig
from stream.errors import InputError
from stream.face import (
    LEFT_EYE,
    MOUTH,
    RIGHT_EYE,
    FaceCropper,
    FaceDetection,
    FaceState,
    FaceTracker,
    MediaPipeFaceDetector,
)
from stream.frames import AudioFrame
from stream.vad import Vad

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")


@dataclass
class Shard(NpzRecord):
    """Training chunks of one clip (the fields of a ChunkSet, plus where they come from)."""

    frames: np.ndarray  # (N, L, R, R, 3) uint8 face crops (the target)
    inputs: np.ndarray  # (N, L, R, R, 3) uint8 what the model is given (here: the same crops)
    masks: np.ndarray  # (N, L, R, R) uint8 {0, 1}
    audio: np.ndarray  # (N, L, n) float16 audio windows
    reference: np.ndarray  # (N, R, R, 3) uint8 a crop of the same clip from another moment
    mouth: np.ndarray  # (N, L, 4) float32: NaN (real video has no mouth-parameter truth)
    speech: np.ndarray  # (N, L) bool, silero-vad
    times: np.ndarray  # (N, L) float64 media time of each frame, seconds
    keypoints: np.ndarray  # (N, L, 6, 2) float32 the tracked face keypoints in crop pixels

    def __len__(self) -> int:
        return self.frames.shape[0]

    def chunks(self) -> ChunkSet:
        return ChunkSet(self.frames, self.inputs, self.masks, self.audio, self.reference, self.mouth, self.speech)


@dataclass(frozen=True)
class PrepareConfig:
    min_seconds: float = 4.0  # shorter clips are skipped
    min_face_px: float = 64.0  # the detector's box side, in source pixels
    min_tracked: float = 0.5  # share of frames with a tracked face
    faces: Literal["skip", "select"] = "skip"  # several faces in a clip
    several_share: float = 0.2  # share of detections with a second face that counts as "several"
    min_speech: float = 0.05  # share of speech (silero-vad) below which a clip is "silence only"
    max_offset_frames: int = 3  # larger estimated A/V offsets are skipped
    shard_chunks: int = 128


@dataclass
class ClipResult:
    status: Literal["kept", "skipped"]
    reason: str = ""
    chunks: int = 0
    seconds: float = 0.0
    shards: list[str] = field(default_factory=list)
    offset_frames: int | None = None

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        return {k: v for k, v in d.items() if v not in ("", None, [])}


class Skip(Exception):
    """A clip that cannot be used, with the reason (one line)."""


class _CountingDetector:
    """The engine's detector, counting how often more than one face is seen."""

    def __init__(self, inner: MediaPipeFaceDetector) -> None:
        self.inner = inner
        self.calls = 0
        self.several = 0
        self.sides: list[float] = []

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        dets = self.inner.detect(image)
        self.calls += 1
        if len(dets) > 1:
            self.several += 1
        if dets:
            d = max(dets, key=lambda d: d.area)
            self.sides.append(float(np.sqrt(d.area)))
        return dets


def clip_id(path: str) -> str:
    name = os.path.splitext(os.path.basename(path))[0]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]
    return f"{safe}-{hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]}"


def find_videos(paths: list[str]) -> list[str]:
    """Video files named, and those under named folders (sorted); a missing path is an error."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, files in sorted(os.walk(p)):
                out += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(VIDEO_EXTENSIONS)]
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise InputError(f"prepare: {p} does not exist: pass video files or folders of them")
    return out


def _read_audio(path: str) -> tuple[AudioRing, float, float]:
    """The clip's audio in a 16 kHz ring (the engine's input path), its start and end time."""
    with av.open(path) as c:
        if not c.streams.audio:
            raise Skip("no audio track: record the clip with its sound")
        st = c.streams.audio[0]
        blocks: list[AudioFrame] = []
        resampler = None
        t0 = None
        try:
            for fr in c.decode(st):
                if fr.time is None:
                    continue
                if resampler is None:
                    resampler = av.AudioResampler(format="flt", layout=fr.layout.name, rate=fr.sample_rate)
                if t0 is None:
                    t0 = float(fr.time)
                for o in resampler.resample(fr):
                    x = o.to_ndarray().reshape(-1, o.layout.nb_channels).astype(np.float32)
                    pts = round((float(fr.time) - t0) * o.sample_rate) if not blocks else None
                    if pts is None:
                        last = blocks[-1]
                        pts = last.pts + last.samples.shape[0]
                    blocks.append(AudioFrame(x, o.sample_rate, pts, Fraction(1, o.sample_rate)))
        except av.error.FFmpegError as e:
            if not blocks:
                raise Skip(f"audio cannot be decoded ({e})") from None
            log.warning("%s: audio decoding stopped early (%s); using what was decoded", path, e)
    if not blocks or t0 is None:
        raise Skip("the audio track is empty: record the clip with its sound")
    end = blocks[-1].time_s + blocks[-1].duration_s
    ring = AudioRing(int(end * 1000) + 2000)
    inp = AudioInput(ring)
    for b in blocks:
        inp.push(b)
    inp.close()
    return ring, t0, end


def _frames(path: str) -> Iterator[tuple[float, np.ndarray]]:
    with av.open(path) as c:
        if not c.streams.video:
            raise Skip("no video track")
        st = c.streams.video[0]
        st.thread_type = "AUTO"
        n = 0
        try:
            for fr in c.decode(st):
                if fr.time is None:
                    continue
                n += 1
                yield float(fr.time), fr.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            if n == 0:
                raise Skip(f"video cannot be decoded ({e})") from None
            log.warning("%s: video decoding stopped after %d frames (%s); using those", path, n, e)


def crop_keypoints(face: FaceState, cropper: FaceCropper) -> np.ndarray:
    return cropper.keypoints(face).astype(np.float32)


def mouth_darkness(crop: np.ndarray, kp: np.ndarray) -> float:
    """How dark the mouth is (rises as it opens): the darkest fifth of a box around the mouth
    keypoint (``kp``: crop pixels), 0.8 x 0.5 eye distances."""
    eye = float(np.linalg.norm(kp[LEFT_EYE] - kp[RIGHT_EYE]))
    cx, cy = kp[MOUTH]
    hx, hy = max(1, round(0.4 * eye)), max(1, round(0.25 * eye))
    region = crop[max(0, round(cy) - hy) : round(cy) + hy, max(0, round(cx) - hx) : round(cx) + hx]
    if region.size == 0:
        return 0.0
    return float(-np.percentile(region.astype(np.float32).mean(-1), 20))


def estimate_offset(darkness: np.ndarray, energy: np.ndarray, max_lag: int = 12) -> tuple[int, float]:
    """Lag of the mouth track against the audio energy (frames, positive: video late) and the
    correlation at that lag."""
    d = (darkness - darkness.mean()) / (darkness.std() + 1e-6)
    e = (energy - energy.mean()) / (energy.std() + 1e-6)
    best, arg = -2.0, 0
    for lag in range(-max_lag, max_lag + 1):
        x = d[max(lag, 0) : len(d) + min(lag, 0)]
        y = e[max(-lag, 0) : len(e) + min(-lag, 0)]
        if len(x) > 10:
            c = float(np.mean(x * y))
            if c > best:
                best, arg = c, lag
    return arg, best


class _ShardWriter:
    def __init__(self, folder: str, cid: str, per_shard: int) -> None:
        self.folder, self.cid, self.per_shard = folder, cid, per_shard
        self.rows: list[tuple[np.ndarray, ...]] = []
        self.names: list[str] = []
        self.count = 0

    def add(self, *row: np.ndarray) -> None:
        self.rows.append(row)
        if len(self.rows) == self.per_shard:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        cols = [np.stack(c) for c in zip(*self.rows, strict=True)]
        name = f"{self.cid}-{len(self.names):03d}.npz"
        Shard(*cols).save(os.path.join(self.folder, name))
        self.names.append(name)
        self.count += len(self.rows)
        self.rows = []

    def discard(self) -> None:
        for n in self.names:
            try:
                os.remove(os.path.join(self.folder, n))
            except FileNotFoundError:
                pass
        self.names, self.rows = [], []


def prepare_clip(
    path: str,
    shard_dir: str,
    config: SayAnythingConfig,
    face: FaceConfig,
    pc: PrepareConfig,
    detector: MediaPipeFaceDetector,
    vad: VadConfig | None = None,
) -> ClipResult:
    """Cut one clip into shards under ``shard_dir`` (removed again when the clip is skipped)."""
    try:
        with av.open(path):
            pass
    except (av.error.FFmpegError, ValueError, OSError) as e:
        return ClipResult("skipped", f"unreadable ({type(e).__name__}: {e})")
    writer = _ShardWriter(shard_dir, clip_id(path), pc.shard_chunks)
    try:
        return _prepare(path, writer, config, face, pc, detector, vad or VadConfig())
    except Skip as s:
        writer.discard()
        return ClipResult("skipped", str(s))
    except BaseException:
        writer.discard()
        raise


def _prepare(
    path: str,
    writer: _ShardWriter,
    config: SayAnythingConfig,
    face: FaceConfig,
    pc: PrepareConfig,
    detector: MediaPipeFaceDetector,
    vad_config: VadConfig,
) -> ClipResult:
    L, R = config.chunk_frames, config.resolution_px
    ring, a0, a_end = _read_audio(path)
    if a_end - a0 < pc.min_seconds:
        raise Skip(f"too short ({a_end - a0:.1f} s of audio): record at least {pc.min_seconds:.0f} s")
    vad = Vad(vad_config, ring)
    vad.update()
    counting = _CountingDetector(detector)
    tracker = FaceTracker(face, counting)  # type: ignore[arg-type]
    cropper = FaceCropper(face, R, config.mask_scale, config.crop_zoom)
    a = config.audio
    # a run of tracked frames, cut into chunks as it grows; references come from the clip's
    # first tracked crops (a fixed pool spread over the clip, filled as frames arrive)
    run: list[tuple[float, np.ndarray, np.ndarray, np.ndarray]] = []
    refs: list[tuple[float, np.ndarray]] = []
    n_frames = tracked = 0
    darkness: list[float] = []
    energy: list[float] = []
    t_first: float | None = None
    t_last = 0.0
    pending: list[tuple[np.ndarray, ...]] = []  # chunks waiting for a reference from another moment

    def emit(chunk: list[tuple[float, np.ndarray, np.ndarray, np.ndarray]]) -> None:
        times = np.array([c[0] for c in chunk])
        crops = np.stack([c[1] for c in chunk])
        # one mask for the whole chunk, the union of the engine's per-frame masks: a per-frame
        # mask follows the mouth keypoint, which drops as the mouth opens, so on real video (the
        # true frame is the input) its position would tell the model the opening frame by frame
        # and it would learn to read it there instead of from the audio
        masks = np.repeat(np.max([c[2] for c in chunk], axis=0)[None], len(chunk), 0)
        kps = np.stack([c[3] for c in chunk])
        win = audio_windows(ring, times - a0, a.window_before_ms, a.window_after_ms).astype(np.float16)
        speech = np.array([vad.is_speech(t - a0) for t in times])
        pending.append((crops, masks, win, speech, times, kps))

    def release(final: bool = False) -> None:
        # a chunk's reference: a crop at least 2 s away from it (the clip's other moment)
        while pending:
            crops, masks, win, speech, times, kps = pending[0]
            far = [r for r in refs if abs(r[0] - times[0]) >= 2.0] if refs else []
            if not far and not final:
                return
            ref = far[len(far) // 2][1] if far else refs[len(refs) // 2][1]
            mouth = np.full((L, 4), np.nan, np.float32)
            writer.add(crops, crops, masks, win, ref, mouth, speech, times, kps)
            pending.pop(0)

    for t, img in _frames(path):
        n_frames += 1
        t_first = t if t_first is None else t_first
        t_last = t
        st = tracker.update(img)
        if st is None:
            run = []  # a chunk is consecutive tracked frames
            continue
        tracked += 1
        crop = cropper.crop(img, st)
        mask = (cropper.mouth_mask(st) > 0.02).astype(np.uint8)
        kp = crop_keypoints(st, cropper)
        darkness.append(mouth_darkness(crop, kp))
        i = round((t - a0) * SAMPLE_RATE_HZ)
        hop = SAMPLE_RATE_HZ // 25
        seg = ring.read(max(0, i - hop // 2), hop)
        energy.append(float(10 * np.log10(np.mean(seg.astype(np.float64) ** 2) + 1e-10)))
        if len(refs) < 64 and (not refs or t - refs[-1][0] >= 1.0):
            refs.append((t, crop))
        run.append((t, crop, mask, kp))
        if len(run) == L:
            emit(run)
            run = []
            release()
    if n_frames == 0:
        raise Skip("no video frames")
    if tracked < pc.min_tracked * n_frames:
        raise Skip(
            f"no usable face (tracked in {tracked} of {n_frames} frames): film the speaker's face, front on, "
            "filling a good part of the picture"
        )
    if counting.sides and float(np.median(counting.sides)) < pc.min_face_px:
        raise Skip(
            f"face too small ({np.median(counting.sides):.0f} px, needs {pc.min_face_px:.0f}): film closer or at "
            "a higher resolution"
        )
    if pc.faces == "skip" and counting.calls and counting.several > pc.several_share * counting.calls:
        raise Skip(
            f"several faces (in {counting.several} of {counting.calls} detections): use a clip with one speaker, "
            "or --faces select to follow face.select"
        )
    seconds = t_last - (t_first or 0.0)
    if seconds < pc.min_seconds:
        raise Skip(f"too short ({seconds:.1f} s of video): record at least {pc.min_seconds:.0f} s")
    segs = vad.segments(a_end - a0)
    speech_s = sum(e - s for s, e in segs)
    if speech_s < pc.min_speech * (a_end - a0):
        raise Skip("silence only (no speech found): record the speaker talking")
    lag, strength = estimate_offset(np.array(darkness), np.array(energy))
    if abs(lag) > pc.max_offset_frames and strength > 0.3:
        raise Skip(
            f"audio and video out of sync by about {lag} frames: fix the offset (ffmpeg -itsoffset) and prepare again"
        )
    release(final=True)
    writer.flush()
    if writer.count == 0:
        raise Skip(f"no run of {L} consecutive frames with a tracked face")
    return ClipResult("kept", chunks=writer.count, seconds=round(seconds, 2), shards=writer.names, offset_frames=lag)


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def load_manifest(data_dir: str) -> dict[str, Any]:
    path = os.path.join(data_dir, MANIFEST)
    if not os.path.isfile(path):
        raise InputError(f"{data_dir} is not a prepared dataset (no {MANIFEST}): run sayanything-live prepare first")
    with open(path) as f:
        return json.load(f)


def shard_paths(data_dir: str) -> list[str]:
    """The shards of every kept clip, in manifest order."""
    m = load_manifest(data_dir)
    out = []
    for res in m["clips"].values():
        if res["status"] == "kept":
            out += [os.path.join(data_dir, "shards", s) for s in res["shards"]]
    return out


def prepare(
    inputs: list[str],
    out: str,
    preset: str | SayAnythingConfig = "tiny",
    face: FaceConfig | None = None,
    pc: PrepareConfig | None = None,
    progress: Callable[[int, int, str, ClipResult], None] | None = None,
) -> dict[str, Any]:
    """Prepare every video under ``inputs`` into ``out`` for a preset (or a model config);
    returns the summary."""
    if isinstance(preset, str) and preset not in PRESETS:
        raise InputError(f"prepare: preset {preset!r} is unknown: use one of {', '.join(PRESETS)}")
    config = PRESETS[preset] if isinstance(preset, str) else preset
    face = face or FaceConfig()
    pc = pc or PrepareConfig()
    videos = find_videos(inputs)
    if not videos:
        raise InputError(f"prepare: no video files found in {' '.join(inputs)}: pass .mp4/.mov/.mkv/... files")
    settings = {
        "preset": config.name,
        "resolution_px": config.resolution_px,
        "chunk_frames": config.chunk_frames,
        "audio_window_ms": [config.audio.window_before_ms, config.audio.window_after_ms],
        "face": face.__dict__,
    }
    final = os.path.exists(os.path.join(out, MANIFEST))
    work = out if final else out + ".partial"
    os.makedirs(os.path.join(work, "shards"), exist_ok=True)
    mpath = os.path.join(work, MANIFEST)
    manifest: dict[str, Any] = {"settings": settings, "clips": {}}
    if os.path.isfile(mpath):
        with open(mpath) as f:
            manifest = json.load(f)
        if manifest.get("settings", {}).get("resolution_px") != config.resolution_px:
            raise InputError(
                f"prepare: {out} was prepared with preset {manifest['settings'].get('preset')!r}: use that preset, "
                "or a new --out"
            )
    detector = MediaPipeFaceDetector(face.min_confidence)
    try:
        for k, v in enumerate(videos):
            key = os.path.abspath(v)
            if key in manifest["clips"]:
                continue
            res = prepare_clip(v, os.path.join(work, "shards"), config, face, pc, detector)
            manifest["clips"][key] = res.as_dict()
            _write_json(mpath, manifest)
            if progress:
                progress(k + 1, len(videos), v, res)
    finally:
        detector.close()
    summary = summarise(manifest)
    manifest["summary"] = summary
    _write_json(mpath, manifest)
    if not final:
        if os.path.exists(out):
            raise InputError(f"prepare: {out} exists and is not a prepared dataset: choose another --out")
        os.replace(work, out)
    return summary


def summarise(manifest: dict[str, Any]) -> dict[str, Any]:
    clips = manifest["clips"].values()
    kept = [c for c in clips if c["status"] == "kept"]
    skipped = {p: c["reason"] for p, c in manifest["clips"].items() if c["status"] == "skipped"}
    return {
        "clips_kept": len(kept),
        "clips_skipped": len(skipped),
        "hours": round(sum(c["seconds"] for c in kept) / 3600, 4),
        "chunks": sum(c["chunks"] for c in kept),
        "skipped": skipped,
    }


def progress_printer(t0: float) -> Callable[[int, int, str, ClipResult], None]:
    def show(k: int, n: int, path: str, res: ClipResult) -> None:
        el = time.time() - t0
        eta = el / k * (n - k)
        what = f"{res.chunks} chunks" if res.status == "kept" else f"skipped: {res.reason}"
        bar = "#" * int(20 * k / n)
        print(f"[{bar:<20}] {k}/{n} {os.path.basename(path)}: {what} ({el:.0f} s, ~{eta:.0f} s left)", file=sys.stderr)

    return show


def remove_partial(out: str) -> None:
    """Remove a half-written ``OUT.partial`` (a fresh start)."""
    shutil.rmtree(out + ".partial", ignore_errors=True)
