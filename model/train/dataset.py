"""Training chunks from synthetic clips, cut exactly as the engine cuts live video: the real
face detector and tracker, the engine's crop and mouth mask, per-frame audio windows from the
continuous 16 kHz stream. Cached as one .npz per (split, seed range, config).

The video the model is given (``inputs``) is the clip re-rendered with an unrelated mouth track
(the clip's own track shifted by half its length), as at run time when dubbing: the tracker,
crop and mask follow that video, and the target (``frames``) is the true clip cut with the same
crop. With the true video as input, everything the mask leaves visible (the mask's own position,
which follows the mouth keypoint, and the jaw outline) tells the openness, and a model learns
to read it there instead of from the audio."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from model.configs import SayAnythingConfig
from model.train.speech import ESpeak
from model.train.synth import FPS, SAMPLE_RATE_HZ, Split, make_clip, rerender
from stream.audio import AudioRing
from stream.chunker import audio_windows
from stream.config import FaceConfig
from stream.face import FaceCropper, FaceTracker, MediaPipeFaceDetector

log = logging.getLogger(__name__)
CACHE_VERSION = "v3"  # v2: unrelated-mouth inputs, lower-face mask; v3: the tracker spreads its corrections


class NpzRecord:
    """A dataclass of arrays cached as one .npz (written to a temporary name, then renamed)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    def save(self, path: str) -> None:
        tmp = path + ".tmp.npz"
        np.savez(tmp, **self.__dict__)
        os.replace(tmp, path)

    def take(self, idx: np.ndarray | slice) -> Self:
        """The same record for rows ``idx`` of every array."""
        return type(self)(*(getattr(self, k)[idx] for k in self.__dataclass_fields__))

    @classmethod
    def concat(cls, parts: list[Self]) -> Self:
        """One record of ``parts``' rows, in order."""
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in cls.__dataclass_fields__))

    @classmethod
    def load(cls, path: str) -> Self:
        with np.load(path) as z:
            return cls(**{k: z[k] for k in cls.__dataclass_fields__})


@dataclass
class ChunkSet(NpzRecord):
    frames: np.ndarray  # (N, L, R, R, 3) uint8 face crops of the true clip (the target)
    inputs: np.ndarray  # (N, L, R, R, 3) uint8 the same crops of the input video (unrelated mouth)
    masks: np.ndarray  # (N, L, R, R) uint8 {0, 1} editing region
    audio: np.ndarray  # (N, L, n) float16 audio windows
    reference: np.ndarray  # (N, R, R, 3) uint8: a crop of the same character from another moment
    mouth: np.ndarray  # (N, L, 4) float32 truth: open, width, round, lip_bite
    speech: np.ndarray  # (N, L) bool

    def __len__(self) -> int:
        return self.frames.shape[0]


def mask_tag(config: SayAnythingConfig) -> str:
    """The cache-name suffix of a model's crop and mask geometry: empty for the engine's default
    (whole-face crop, default mask)."""
    h, w = config.mask_scale
    tag = "" if (h, w) == (1.0, 1.0) else f"_m{h:g}x{w:g}"
    return tag + ("" if config.crop_zoom == 1.0 else f"_z{config.crop_zoom:g}")


def latents_path(cache: str, clips: int, config: SayAnythingConfig) -> str:
    """Where the latents of training clips ``0..clips`` cut with ``config``'s crop and mask are
    cached (``recipe_v2`` and the decoder stage share them); chunks cut by another engine
    (``CACHE_VERSION``) are never reused."""
    return os.path.join(cache, f"latents_train_0_{clips}_v1_{CACHE_VERSION}{mask_tag(config)}.npz")


def clip_to_chunks(
    clip, config: SayAnythingConfig, detector: MediaPipeFaceDetector, face: FaceConfig
) -> ChunkSet | None:  # noqa: ANN001
    """The clip's chunks, its input the clip re-rendered with its own mouth track rolled by half
    (an unrelated mouth at each moment); None when no chunk has a tracked face throughout."""
    got = paired_chunks(clip, config, detector, face, [np.roll(clip.mouth, clip.mouth.shape[0] // 2, axis=0)])
    return None if got is None else got[0]


def paired_chunks(
    clip, config: SayAnythingConfig, detector: MediaPipeFaceDetector, face: FaceConfig, mouths: list[np.ndarray]
) -> tuple[ChunkSet, list[np.ndarray]] | None:  # noqa: ANN001
    """The clip's chunks with the input re-rendered with ``mouths[0]``, plus the crops (N, L, R, R,
    3) of the clip re-rendered with each further track of ``mouths``, cut with the same tracker
    states (tracked on the first), so the inputs differ only in the mouth and share crop, mask,
    target, audio and reference."""
    L, R = config.chunk_frames, config.resolution_px
    tracker = FaceTracker(face, detector)
    cropper = FaceCropper(face, R, config.mask_scale, config.crop_zoom)
    shown = [rerender(clip, m) for m in mouths]
    crops: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    ok: list[bool] = []
    inputs: list[list[np.ndarray]] = [[] for _ in shown]
    blank = np.zeros((R, R, 3), np.uint8)
    for k, truth in enumerate(clip.frames):
        st = tracker.update(shown[0][k])
        ok.append(st is not None)
        crops.append(blank if st is None else cropper.crop(truth, st))
        for v, out in zip(shown, inputs, strict=True):
            out.append(blank if st is None else cropper.crop(v[k], st))
        masks.append(np.zeros((R, R), np.uint8) if st is None else (cropper.mouth_mask(st) > 0.02).astype(np.uint8))
    ring = AudioRing(int(clip.duration_s * 1000) + 2000)
    ring.write(0, clip.audio)
    times = np.arange(len(crops)) / FPS
    a = config.audio
    win = audio_windows(ring, times, a.window_before_ms, a.window_after_ms).astype(np.float16)
    good = [i for i in range(0, len(crops) - L + 1, L) if all(ok[i : i + L])]
    if not good or not any(ok):
        return None
    faces = [i for i, f in enumerate(ok) if f]
    idx = np.array([np.arange(i, i + L) for i in good])
    crops_a, masks_a = np.stack(crops), np.stack(masks)
    inputs_a = [np.stack(v) for v in inputs]
    ref_idx = [faces[(faces.index(i) + len(faces) // 2) % len(faces)] for i in good]  # another moment of the clip
    chunks = ChunkSet(
        crops_a[idx], inputs_a[0][idx], masks_a[idx], win[idx], inputs_a[0][ref_idx], clip.mouth[idx], clip.speech[idx]
    )
    return chunks, [v[idx] for v in inputs_a[1:]]


def build(
    config: SayAnythingConfig,
    split: Split,
    seeds: range,
    cache_dir: str | None = None,
    size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> ChunkSet:
    """Chunks from clips ``seeds`` of ``split`` (cached under ``cache_dir`` when given)."""
    path = None
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        path = os.path.join(
            cache_dir,
            f"{split}_{seeds.start}_{seeds.stop}_{config.resolution_px}_{config.chunk_frames}_{CACHE_VERSION}"
            f"{mask_tag(config)}.npz",
        )
        if os.path.isfile(path):
            return ChunkSet.load(path)
    engine = ESpeak()
    detector = MediaPipeFaceDetector()
    face = FaceConfig()
    parts: list[ChunkSet] = []
    skipped = 0
    try:
        for s in seeds:
            cs = clip_to_chunks(make_clip(s, split, engine, size), config, detector, face)
            if cs is None:
                skipped += 1
            else:
                parts.append(cs)
            if progress is not None:
                progress(s)
    finally:
        detector.close()
    if skipped:
        log.warning("%d of %d %s clips had no trackable face and were skipped", skipped, len(seeds), split)
    out = ChunkSet.concat(parts)
    if path:
        out.save(path)
    return out


def alt_inputs_path(chunk_cache: str) -> str:
    """Where ``build_alt_inputs`` keeps the second inputs of one chunk cache (``train_A_B_....npz``)."""
    head, name = os.path.split(chunk_cache)
    return os.path.join(head, "alt_inputs_" + name[: -len(".npz")] + ".npy")


def build_alt_inputs(
    config: SayAnythingConfig, chunk_cache: str, mouth_pool: np.ndarray, size: int = 256
) -> np.ndarray:
    """Second inputs for the chunks of one training chunk cache (``build``'s
    ``train_A_B_<px>_<L>_<version>.npz``): each clip re-rendered with another stretch of
    ``mouth_pool`` (the training clips' mouth tracks, (M, 4): another clip's mouth, as ``eval``
    dubs), cut with the tracker states of the cache's own input (``paired_chunks``), so the two
    inputs differ only in the mouth and share crop, mask, target, audio and reference. The first
    input is checked to equal the cache's. Cached next to it (``alt_inputs_path``); (N, L, R, R, 3)
    uint8 in the cache's chunk order. The stretch of clip ``s`` starts at a draw of
    ``default_rng(1000 + A)``, in clip order."""
    out_path = alt_inputs_path(chunk_cache)
    if os.path.isfile(out_path):
        return np.load(out_path)
    parts = os.path.basename(chunk_cache).split("_")
    if parts[0] != "train" or len(parts) < 3:
        raise ValueError(f"{chunk_cache}: not a training chunk cache (train_A_B_...npz)")
    a, b = int(parts[1]), int(parts[2])
    base = ChunkSet.load(chunk_cache)
    rng = np.random.default_rng(1000 + a)
    engine, detector, face = ESpeak(), MediaPipeFaceDetector(), FaceConfig()
    alts: list[np.ndarray] = []
    done = 0
    try:
        for s in range(a, b):
            clip = make_clip(s, "train", engine, size)
            n = len(clip.mouth)
            start = int(rng.integers(0, len(mouth_pool) - n))
            own = np.roll(clip.mouth, n // 2, axis=0)
            got = paired_chunks(clip, config, detector, face, [own, mouth_pool[start : start + n].copy()])
            if got is None:
                continue
            chunks, (alt,) = got
            if not np.array_equal(chunks.inputs, base.inputs[done : done + len(chunks)]):
                raise ValueError(f"{chunk_cache}: clip {s} cuts differently from the cache; rebuild the cache")
            alts.append(alt)
            done += len(chunks)
    finally:
        detector.close()
    if done != len(base):
        raise ValueError(f"{chunk_cache}: {done} chunks cut again for {len(base)} cached; rebuild the cache")
    out = np.concatenate(alts)
    tmp = out_path + ".tmp.npy"
    np.save(tmp, out)
    os.replace(tmp, out_path)
    return out


def audio_window_samples(config: SayAnythingConfig) -> int:
    return round((config.audio.window_before_ms + config.audio.window_after_ms) * SAMPLE_RATE_HZ / 1000)
