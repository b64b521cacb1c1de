"""Lip-sync quality on held-out synthetic clips, where the truth is known.

For each test clip (voice and character style never seen in training) the input video is the
same character, poses and blinks with an unrelated mouth track (the "original speaker"), and
the audio is the clip's speech. The engine produces the output; its mouth openness is read
back by analysis by synthesis: the character is re-rendered at the frame's pose with
openness 0, 0.05, ... 1 (width, rounding and lip bite from the truth) and the best match in
the mouth region wins. The same read-out on the true frames recovers the truth, which checks
the read-out itself.

Metrics: openness correlation with the truth; A/V offset (frames) at the maximum
cross-correlation; stillness (mean frame-to-frame change of the mouth region) in silence (no
speech within 2 frames, where the mouth should be still), at the edges of speech (the silent
frames within 2 frames of it, where the true mouth is still closing or starting to open: the
truth moves most there) and in speech; seam flicker (frame-to-frame change at chunk boundaries / inside chunks: with the
default 8-frame chunks and 3-frame detection, every boundary is also a detection frame, so
the ratio reads tracker jitter as well as chunk seams); PSNR and
SSIM of the mouth region vs the true frames; pixels outside the pasted mask unchanged; and the
leak: the correlation of the output's openness with the *input video's* (the original speaker's
mouth showing through when dubbing; the pass-through row reads about 1, the truth only what
two unrelated mouth tracks share by chance), and the partial leak: the same with the truth held
fixed, so that following the audio better does not read as leaking. Both are correlations: they
say how much of what the output's opening does beyond the truth the input explains, not how much
of the input's opening reaches the output, so a model whose other errors shrink reads a larger
partial leak for the same input-driven motion. The leak slope is that amount: the coefficient of
the input's openness in a least-squares fit of the output's openness on the truth's and the
input's together (pass-through reads about 1, a model that ignores the input 0).
Baselines: pass-through (the input video) and audio energy (openness from the RMS envelope,
rendered).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from model.checkpoint import hash_sources
from model.train.render import MouthShape, render_frame
from model.train.synth import FPS, SAMPLE_RATE_HZ, Clip, cycled, rerender
from stream.compositor import LUMA, srgb_to_lab
from stream.frames import AudioFrame, VideoFrame

OPEN_GRID = np.linspace(0.0, 1.0, 21)


def mouth_box(kp: np.ndarray, size: int) -> tuple[int, int, int, int]:
    eye = float(np.linalg.norm(kp[1] - kp[0]))
    cx, cy = kp[3]
    half_w, half_h = 0.8 * eye, 0.65 * eye
    return (
        max(0, int(cx - half_w)),
        max(0, int(cy - half_h)),
        min(size, int(cx + half_w)),
        min(size, int(cy + half_h)),
    )


def read_openness(frames: np.ndarray, clip: Clip) -> np.ndarray:
    """Openness per frame by analysis by synthesis (see the module docstring)."""
    size = frames.shape[1]
    out = np.zeros(frames.shape[0], np.float32)
    for i, img in enumerate(frames):
        x0, y0, x1, y1 = mouth_box(clip.keypoints[i], size)
        region = img[y0:y1, x0:x1].astype(np.float32)
        _, w, r, b = (float(v) for v in clip.mouth[i])
        errs = []
        for o in OPEN_GRID:
            cand, _ = render_frame(
                clip.style, clip.poses[i], MouthShape(float(o), w, r, b), float(clip.blinks[i]), size
            )
            errs.append(float(np.mean((cand[y0:y1, x0:x1].astype(np.float32) - region) ** 2)))
        k = int(np.argmin(errs))
        if 0 < k < len(errs) - 1:  # parabolic refinement between grid points
            a, bb, c = errs[k - 1], errs[k], errs[k + 1]
            den = a - 2 * bb + c
            off = 0.5 * (a - c) / den if den > 0 else 0.0
            out[i] = float(OPEN_GRID[k] + np.clip(off, -0.5, 0.5) * (OPEN_GRID[1] - OPEN_GRID[0]))
        else:
            out[i] = float(OPEN_GRID[k])
    return out


def best_lag(a: np.ndarray, b: np.ndarray, max_lag: int = 6) -> int:
    """Lag (frames) of ``a`` relative to ``b`` at maximum correlation (positive: a is late)."""
    best, arg = -2.0, 0
    for lag in range(-max_lag, max_lag + 1):
        x = a[max(lag, 0) : len(a) + min(lag, 0)]
        y = b[max(-lag, 0) : len(b) + min(-lag, 0)]
        if len(x) > 3 and np.std(x) > 0 and np.std(y) > 0:
            c = float(np.corrcoef(x, y)[0, 1])
            if c > best:
                best, arg = c, lag
    return arg


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Global-statistics SSIM of two grey images (0-255)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ma, mb = a.mean(), b.mean()
    va, vb, cov = a.var(), b.var(), ((a - ma) * (b - mb)).mean()
    return float(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))


def energy_openness(audio: np.ndarray, n_frames: int) -> np.ndarray:
    hop = SAMPLE_RATE_HZ // FPS
    rms = np.array([np.sqrt(np.mean(audio[i * hop : (i + 1) * hop] ** 2) + 1e-12) for i in range(n_frames)])
    db = 20 * np.log10(rms + 1e-6)
    lo, hi = np.percentile(db, 20), np.percentile(db, 98)
    return np.clip((db - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


@dataclass
class ClipScores:
    corr: float
    offset_frames: int
    still_silence: float
    still_speech: float
    seam_ratio: float
    psnr_db: float
    ssim: float
    leak: float = float("nan")
    # the leak beyond what the truth shares with the input's mouth: the partial correlation of the
    # output's openness with the input's, given the truth (two unrelated tracks share some by chance)
    leak_partial: float = float("nan")
    # the silent frames within 2 frames of speech (closing into a pause, opening out of one)
    still_edges: float = float("nan")
    # the leak as an amount: openness the output gains per unit of the input's, the truth held fixed
    leak_slope: float = float("nan")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def score(
    frames: np.ndarray, clip: Clip, chunk_frames: int = 8, overlap: int = 2, source_open: np.ndarray | None = None
) -> ClipScores:
    """Scores of ``frames`` against ``clip``'s truth; ``source_open``: the input video's openness
    per frame, for the leak (NaN without it)."""
    opened = read_openness(frames, clip)
    truth = clip.mouth[: len(opened), 0]
    corr = float(np.corrcoef(opened, truth)[0, 1]) if np.std(opened) > 1e-6 else 0.0
    leak = leak_partial = slope = float("nan")
    if source_open is not None:
        if len(source_open) < len(opened):
            raise ValueError(f"score: source_open has {len(source_open)} frames for {len(opened)}: cycle it")
        src = source_open[: len(opened)]
        leak = float(np.corrcoef(opened, src)[0, 1]) if np.std(opened) > 1e-6 and np.std(src) > 1e-6 else 0.0
        leak_partial = partial_corr(leak, corr, float(np.corrcoef(src, truth)[0, 1]) if np.std(src) > 1e-6 else 0.0)
        slope = leak_slope(opened, truth, src)
    size = frames.shape[1]
    regions = []
    for i, img in enumerate(frames):
        x0, y0, x1, y1 = mouth_box(clip.keypoints[i], size)
        regions.append(img[y0:y1, x0:x1].astype(np.float32).mean(axis=2))
    h = min(r.shape[0] for r in regions)
    w = min(r.shape[1] for r in regions)
    reg = np.stack([r[:h, :w] for r in regions])
    diff = np.abs(np.diff(reg, axis=0)).mean(axis=(1, 2))
    # diff[i] is the change into frame i + 1: it counts where frame i + 1 is
    speech = clip.speech[: len(frames)].astype(bool)
    near = np.convolve(speech.astype(float), np.ones(5), mode="same") > 0  # speech within 2 frames
    sp, deep = speech[1:], ~near[1:]
    edges = ~sp & ~deep
    still_sil = float(diff[deep].mean()) if deep.any() else float("nan")
    still_edges = float(diff[edges].mean()) if edges.any() else float("nan")
    still_sp = float(diff[sp].mean()) if sp.any() else float("nan")
    stride = chunk_frames - overlap
    boundary = np.zeros(len(diff), bool)
    boundary[[k - 1 for k in range(stride, len(frames), stride) if k - 1 < len(diff)]] = True
    seam = float(diff[boundary].mean() / max(diff[~boundary].mean(), 1e-6)) if boundary.any() else float("nan")
    psnrs, ssims = [], []
    for i in range(len(frames)):
        x0, y0, x1, y1 = mouth_box(clip.keypoints[i], size)
        g = frames[i, y0:y1, x0:x1].astype(np.float64)
        t = clip.frames[i, y0:y1, x0:x1].astype(np.float64)
        mse = float(np.mean((g - t) ** 2))
        psnrs.append(10 * np.log10(255**2 / max(mse, 1e-10)))
        ssims.append(ssim(g.mean(axis=2), t.mean(axis=2)))
    return ClipScores(
        corr,
        best_lag(opened, truth),
        still_sil,
        still_sp,
        seam,
        float(np.mean(psnrs)),
        float(np.mean(ssims)),
        leak,
        leak_partial,
        still_edges,
        slope,
    )


def leak_slope(out: np.ndarray, truth: np.ndarray, src: np.ndarray) -> float:
    """The coefficient of ``src`` in the least-squares fit ``out ~ a + b * truth + c * src``: how much
    of the input's openness reaches the output's, with the truth's part taken out (0 when the input
    does not vary)."""
    if np.std(src) <= 1e-6:
        return 0.0
    design = np.stack([np.ones_like(truth, dtype=np.float64), truth, src], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, out.astype(np.float64), rcond=None)
    return float(coef[2])


def partial_corr(r_xy: float, r_xz: float, r_yz: float) -> float:
    """The correlation of x and y with z held fixed, from the three pairwise correlations; 0 when
    z explains x or y entirely."""
    den = (1.0 - r_xz**2) * (1.0 - r_yz**2)
    return float((r_xy - r_xz * r_yz) / np.sqrt(den)) if den > 1e-6 else 0.0


def engine_output(clip: Clip, input_frames: np.ndarray, config: Any, model: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Run the real engine (offline driver) on in-memory frames + the clip's audio."""
    from stream.clock import MonotonicClock
    from stream.drive import run_offline
    from stream.session import LipSyncSession

    session = LipSyncSession(config, model, MonotonicClock())
    tb_v, tb_a = Fraction(1, FPS), Fraction(1, SAMPLE_RATE_HZ)
    block = SAMPLE_RATE_HZ // 50
    media: list[VideoFrame | AudioFrame] = [
        AudioFrame(clip.audio[i : i + block, None], SAMPLE_RATE_HZ, i, tb_a) for i in range(0, len(clip.audio), block)
    ]
    media += [VideoFrame(f, i, tb_v) for i, f in enumerate(input_frames)]
    media.sort(key=lambda m: (m.time_s, isinstance(m, VideoFrame)))
    out: list[np.ndarray] = []
    run_offline(session, media, lambda fs, _a: out.extend(f.frame.image for f in fs))
    stats = session.stats.as_dict()
    session.close()
    return np.stack(out), stats


ROWS = ("model", "passthrough", "audio_energy", "truth_readout")
BASELINES = ROWS[1:]  # the rows that do not depend on the model


def _clip_digest(clip: Clip, shown: np.ndarray) -> str:
    """A digest of what every model-free row of one clip depends on: the clip but its audio, the
    input's mouth track, and the code that renders and scores them. The audio is left out: eSpeak
    NG's noise sources make a clip's audio differ slightly from one process to the next (the
    phoneme timing and so the truth do not), and only the energy row reads it (``_baseline_key``)."""
    h = hashlib.sha256()
    hash_sources(h, os.path.dirname(os.path.abspath(__file__)), ("evaluate.py", "render.py", "synth.py"))
    for a in (clip.frames, clip.mouth, clip.keypoints, clip.speech, clip.blinks, shown):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(repr((clip.poses, clip.style, clip.voice, clip.text)).encode())
    return h.hexdigest()


def _baseline_key(clip: Clip, digest: str, row: str) -> str:
    """The cache key of one model-free row of one clip (``digest``: ``_clip_digest``)."""
    h = hashlib.sha256(f"{row} {digest}".encode())
    if row == "audio_energy":
        h.update(np.ascontiguousarray(clip.audio).tobytes())
    return h.hexdigest()[:32]


def _baseline_score(clip: Clip, shown: np.ndarray, digest: str, row: str, cache: bool) -> ClipScores:
    """One model-free row of one clip, from the cache when an identical clip was scored by the
    same code before (these rows are about a third of an eval's time)."""
    from model.ov import cache_root

    path = os.path.join(cache_root(), "eval", _baseline_key(clip, digest, row) + ".json")
    if cache and os.path.isfile(path):
        with open(path) as fh:
            return ClipScores(**json.load(fh))
    src = shown[:, 0]
    if row == "passthrough":
        got = score(rerender(clip, shown), clip, source_open=src)
    elif row == "audio_energy":
        energy = clip.mouth.copy()
        energy[:, 0] = energy_openness(clip.audio, len(clip.mouth))
        got = score(rerender(clip, energy), clip, source_open=src)
    else:
        got = score(clip.frames, clip, source_open=src)
    if cache:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(got.as_dict(), fh)
        os.replace(tmp, path)
    return got


def evaluate(
    clips: list[Clip],
    distractors: list[Clip],
    config: Any,
    model: Any,
    rows: tuple[str, ...] = ROWS,
    cache: bool = True,
) -> dict[str, dict[str, Any]]:
    """Mean scores of the model and the two baselines over ``clips`` (inputs use the mouth
    tracks of ``distractors``). ``rows``: which of ``ROWS`` to score. The baselines and the
    truth's readout do not depend on the model, and the readout is most of the time: with
    ``cache`` they are kept per clip under the project's cache folder, keyed by the clip, the
    input's mouth track and the scoring code (``_clip_digest``)."""
    if unknown := set(rows) - set(ROWS):
        raise ValueError(f"evaluate rows {sorted(unknown)}: choose from {ROWS}")
    scores: dict[str, list[ClipScores]] = {k: [] for k in rows}
    textures: list[str] = []
    for clip, other in zip(clips, distractors, strict=True):
        shown = cycled(other.mouth, len(clip.frames))  # the input video's mouth track, frame by frame
        if "model" in scores:
            out, stats = engine_output(clip, rerender(clip, shown), config, model)
            chunk = (config.chunk.chunk_frames, config.chunk.overlap_frames)
            scores["model"].append(score(out, clip, *chunk, source_open=shown[:, 0]))
            textures.append(stats["texture"])
        if base := [k for k in rows if k in BASELINES]:
            digest = _clip_digest(clip, shown)
            for k in base:
                scores[k].append(_baseline_score(clip, shown, digest, k, cache))
    res = {k: summarise(v) for k, v in scores.items()}
    if "model" in res:
        res["model"]["texture_clips"] = textures
    return res


def summarise(scores: list[ClipScores]) -> dict[str, Any]:
    """Mean of each metric over clips, its spread (``<metric>_std``, over clips) and the clips'
    own values in order (``<metric>_clips``), for paired comparisons."""
    out: dict[str, Any] = {}
    for m in ClipScores.__dataclass_fields__:
        vals = [getattr(s, m) for s in scores]
        out[m] = float(np.nanmean(vals))
        out[f"{m}_std"] = float(np.nanstd(vals))
        out[f"{m}_clips"] = [float(v) for v in vals]
    return out


# -- photographs: colour and sharpness of the repainted region ---------------------------------
def laplacian(grey: np.ndarray) -> np.ndarray:
    import cv2

    return np.asarray(cv2.Laplacian(grey.astype(np.float64), cv2.CV_64F, ksize=1))


def frame_mask(
    image: np.ndarray,
    config: Any,
    size_px: int,
    mask_scale: tuple[float, float] = (1.0, 1.0),
    zoom: float = 1.0,
    paste_gain: float = 1.0,
) -> np.ndarray:
    """The engine's mouth mask on a still ``image``, in frame pixels, float in [0, 1]: the face
    tracker and cropper of a session (``mask_scale``, ``zoom``, ``paste_gain``: the model's), and
    the mask pasted back as the engine pastes a crop."""
    from stream.face import FaceCropper, FaceTracker

    tracker, cropper = FaceTracker(config.face), FaceCropper(config.face, size_px, mask_scale, zoom, paste_gain)
    try:
        face = None
        for _ in range(10):  # let the tracker's filter settle on the still
            face = tracker.update(image) or face
    finally:
        tracker.close()
    if face is None:
        from stream.errors import InputError

        raise InputError("no face found in the portrait: use a photograph with one frontal face")
    ones = np.full((size_px, size_px, 3), 255, np.uint8)
    pasted = cropper.paste(np.zeros_like(image), ones, cropper.mouth_mask(face), face)
    return pasted[..., 0].astype(np.float32) / 255.0


def portrait_scores(image: np.ndarray, clips: list[Clip], config: Any, model: Any) -> dict[str, Any]:
    """A still photograph animated by each clip's speech through the real engine. Per clip:
    the mean CIELAB delta-E between output and input over the mask (pixels where the mask is at
    least 0.5) in silence frames (no speech within 2 frames, where the mouth should be the
    photo's), and the variance of the Laplacian over the mask's core (mask 1, one pixel in from its
    edge, so the blend into the input does not count) relative to the same pixels of the input,
    over all frames; and the motion: the correlation of the mask's darkening (mean luma below the
    photo's) with the speech's true opening, over all frames (a mouth that opens darkens; no truth
    render exists for a photograph, so this is a proxy). Returns the means and spreads over clips
    and the texture the engine used."""
    import cv2

    mask = frame_mask(image, config, model.resolution_px, model.mask_scale, model.crop_zoom, model.paste_gain)
    region = mask >= 0.5
    core = cv2.erode((mask >= 0.999).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    lab_in = srgb_to_lab(image[region])
    # the Laplacian of the core's box plus one pixel: at core pixels, the same as the whole frame's
    ys, xs = np.nonzero(core)
    box = (slice(max(ys.min() - 1, 0), ys.max() + 2), slice(max(xs.min() - 1, 0), xs.max() + 2))
    core_box = core[box]

    def sharpness(img: np.ndarray) -> float:
        return float(laplacian(img[box].astype(np.float64) @ LUMA)[core_box].var())

    lap_in = sharpness(image)
    luma_in = float((image[region].astype(np.float64) @ LUMA).mean())
    des, sharp, motion, textures = [], [], [], []
    for clip in clips:
        frames = np.repeat(image[None], len(clip.mouth), axis=0)
        out, stats = engine_output(clip, frames, config, model)
        textures.append(stats["texture"])
        # the mask's darkening against the photo, frame by frame, against the speech's true opening
        dark = luma_in - np.array([(f[region].astype(np.float64) @ LUMA).mean() for f in out])
        truth = clip.mouth[: len(out), 0]
        motion.append(float(np.corrcoef(dark, truth)[0, 1]) if np.std(dark) > 1e-6 else 0.0)
        sp = clip.speech[: len(out)].astype(bool)
        near = np.convolve(sp.astype(float), np.ones(5), mode="same") > 0
        silent = np.flatnonzero(~near)
        if silent.size:
            des.append(
                float(np.mean([np.linalg.norm(srgb_to_lab(out[i][region]) - lab_in, axis=-1).mean() for i in silent]))
            )
        sharp.append(float(np.mean([sharpness(f) for f in out]) / max(lap_in, 1e-9)))
    return {
        "delta_e": float(np.mean(des)),
        "delta_e_std": float(np.std(des)),
        "laplacian_ratio": float(np.mean(sharp)),
        "laplacian_ratio_std": float(np.std(sharp)),
        "motion": float(np.mean(motion)),
        "motion_std": float(np.std(motion)),
        "texture": ",".join(sorted(set(textures))),
        "clips": len(clips),
        "silence_clips": len(des),
        "mask_px": int(region.sum()),
    }
