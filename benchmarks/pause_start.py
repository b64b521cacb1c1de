"""The mouth at the start of a pause: how much it moves there, against the truth.

    python benchmarks/pause_start.py [--checkpoint model/weights/tiny] [--clips 8] [--split test]
                                     [--glide 0,6] [--json F]

With ``vad.pause_mouth = "held"`` the model's drawing at a pause's first frame is held until
speech resumes. The frames before it were pasted through their own crop window and mask; the
held drawing is pasted through the steady window (the eyes averaged over the frames around) and
the pause's grown mask. Switching at once moves the mouth in one frame. ``face.rest_glide_frames``
spreads that switch over several frames.

On held-out clips (eval's dubbing: the input video shows an unrelated mouth track), the real
engine runs once per ``--glide`` value. Per pause (a frame left as REST after a GENERATED one)
it reads the motion (mean absolute change of the mouth box, as ``eval``'s stillness) into the
pause's first frame, and the largest one-frame motion over its first 8 frames, with the true
frames' at the same frames; per clip, ``eval``'s scores. Mean (spread) per value.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from fractions import Fraction

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from model import load_model  # noqa: E402
from model.train.evaluate import mouth_box, score  # noqa: E402
from model.train.synth import FPS, SAMPLE_RATE_HZ, Clip, cycled, make_clip, rerender  # noqa: E402
from stream.bench import machine  # noqa: E402
from stream.clock import MonotonicClock  # noqa: E402
from stream.config import Config, load  # noqa: E402
from stream.drive import run_offline  # noqa: E402
from stream.frames import AudioFrame, FrameKind, OutputFrame, VideoFrame  # noqa: E402
from stream.session import LipSyncSession  # noqa: E402

WINDOW = 8  # the pause's first frames the largest motion is read over
KEYS = ("still_silence", "psnr_db", "corr")


def run_engine(clip: Clip, shown: np.ndarray, cfg: Config, model: object) -> list[OutputFrame]:
    session = LipSyncSession(cfg, model, MonotonicClock())  # type: ignore[arg-type]
    block = SAMPLE_RATE_HZ // 50
    tb_a = Fraction(1, SAMPLE_RATE_HZ)
    media: list[VideoFrame | AudioFrame] = [
        AudioFrame(clip.audio[i : i + block, None], SAMPLE_RATE_HZ, i, tb_a) for i in range(0, len(clip.audio), block)
    ]
    media += [VideoFrame(f, i, Fraction(1, FPS)) for i, f in enumerate(shown)]
    media.sort(key=lambda m: (m.time_s, isinstance(m, VideoFrame)))
    out: list[OutputFrame] = []
    run_offline(session, media, lambda fs, _a: out.extend(fs))
    session.close()
    return out


def motion(frames: np.ndarray, clip: Clip) -> np.ndarray:
    """[i]: the mouth box's mean absolute change into frame i + 1 (``score``'s stillness measure)."""
    regions = []
    for i, img in enumerate(frames):
        x0, y0, x1, y1 = mouth_box(clip.keypoints[i], img.shape[0])
        regions.append(img[y0:y1, x0:x1].astype(np.float32).mean(axis=2))
    h, w = min(r.shape[0] for r in regions), min(r.shape[1] for r in regions)
    reg = np.stack([r[:h, :w] for r in regions])
    return np.abs(np.diff(reg, axis=0)).mean(axis=(1, 2))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="model/weights/tiny")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--split", default="test")
    ap.add_argument("--glide", default="0,6", help="face.rest_glide_frames values, comma-separated")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    glides = [int(g) for g in args.glide.split(",")]
    model = load_model(load(None, ["model.steps=1", f"model.checkpoint={args.checkpoint}"]))
    rows: dict[int, dict[str, list[float]]] = {g: {"first": [], "peak": [], **{k: [] for k in KEYS}} for g in glides}
    truth: dict[str, list[float]] = {"first": [], "peak": []}
    for i in range(args.clips):
        clip = make_clip(10_000 + i, args.split)  # type: ignore[arg-type]
        shown = rerender(clip, cycled(make_clip(20_000 + i, "test").mouth, len(clip.frames)))
        true_motion = motion(clip.frames, clip)
        for g in glides:
            cfg = load(None, ["model.steps=1", f"model.checkpoint={args.checkpoint}", f"face.rest_glide_frames={g}"])
            out = run_engine(clip, shown, cfg, model)
            frames = np.stack([o.frame.image for o in out])
            m = motion(frames, clip)
            kinds = [o.kind for o in out]
            rest, gen = FrameKind.REST, FrameKind.GENERATED
            starts = [j for j in range(1, len(kinds)) if kinds[j] is rest and kinds[j - 1] is gen]
            for j in starts:
                rows[g]["first"].append(float(m[j - 1]))
                rows[g]["peak"].append(float(m[j - 1 : j - 1 + WINDOW].max()))
                if g == glides[0]:
                    truth["first"].append(float(true_motion[j - 1]))
                    truth["peak"].append(float(true_motion[j - 1 : j - 1 + WINDOW].max()))
            s = score(frames, clip)
            for k in KEYS:
                rows[g][k].append(getattr(s, k))
        print(f"clip {i} done", flush=True)
    print(f"{args.checkpoint}, {args.clips} held-out clips ({args.split}, dubbed), {len(truth['first'])} pauses")
    first, peak = np.mean(truth["first"]), np.mean(truth["peak"])
    print(f"  truth: into a pause's first frame {first:.2f}, largest of its first {WINDOW} {peak:.2f}")
    for g in glides:
        r = rows[g]
        cells = "  ".join(f"{k} {np.mean(r[k]):.3f} ({np.std(r[k]):.3f})" for k in KEYS)
        print(
            f"  face.rest_glide_frames={g}: into the first frame {np.mean(r['first']):.2f} ({np.std(r['first']):.2f}), "
            f"largest of the first {WINDOW} {np.mean(r['peak']):.2f} ({np.std(r['peak']):.2f});  {cells}"
        )
    if args.json:
        result = {
            "date": datetime.date.today().isoformat(),
            "machine": machine(),
            "checkpoint": args.checkpoint,
            "split": args.split,
            "clips": args.clips,
            "truth": truth,
            "rows": {str(g): r for g, r in rows.items()},
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
