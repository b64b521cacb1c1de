"""Which path the leak takes when dubbing: the input's pixels, or the mask the tracker draws from
the input's mouth.

    python benchmarks/leak_paths.py --checkpoint model/weights/tiny [--clips 8] [--paired]

For each development clip (seeds 50000+ of the training voices, never used by ``eval``), two
unrelated mouth tracks, A and B, from other development clips. The engine's face tracker (so the
crop and the mouth mask) sees the clip re-rendered with track A; the model and the paste see it
re-rendered with track B. The read-out openness (``evaluate.read_openness``) is fitted by least
squares on the truth's, A's and B's openness together: A's coefficient is the leak through the
mask's geometry, B's the leak through the pixels (each an amount, as ``eval``'s leak slope). The
same fit for the true frames pasted through the engine's mask (``psnr_ladder.perfect_output``'s
construction) gives the floor of any model. Mean +- standard error over clips; a diagnostic, not
a quality claim.

``--paired``: the model runs twice per clip, the tracker fed track A both times and the model and
paste shown track B1 or B2, so the two outputs differ only through the input's pixels and the
model's own errors cancel. Per clip: the slope of read-out(out 1) - read-out(out 2) on B1 - B2, and
the mean |out 1 - out 2| (8-bit levels) where the engine pasted fully (alpha 1) and in the
feather (0 < alpha < 1).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psnr_ladder  # noqa: E402

import stream.face as face_mod  # noqa: E402
from model.checkpoint import load_checkpoint  # noqa: E402
from model.pipeline import SayAnythingPipeline  # noqa: E402
from model.train.evaluate import engine_output, read_openness  # noqa: E402
from model.train.speech import ESpeak  # noqa: E402
from model.train.synth import cycled, make_clip, rerender  # noqa: E402
from stream.config import load  # noqa: E402

DEV_SEED = psnr_ladder.DEV_SEED


def se(v: Any) -> Any:
    """Standard error of the mean over clips (axis 0)."""
    a = np.asarray(v, np.float64)
    return a.std(axis=0, ddof=1) / np.sqrt(len(a))


class TrackerFeed:
    """While active, every ``FaceTracker.update`` is given the next frame of ``frames`` instead of
    the frame it was called with (the engine tracks one video and draws on another)."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames, self.k, self.orig = frames, 0, face_mod.FaceTracker.update

    def __enter__(self) -> TrackerFeed:
        feed, orig = self, self.orig

        def update(tracker: Any, img: np.ndarray) -> Any:
            img = feed.frames[min(feed.k, len(feed.frames) - 1)]
            feed.k += 1
            return orig(tracker, img)

        face_mod.FaceTracker.update = update  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        face_mod.FaceTracker.update = self.orig  # type: ignore[method-assign]


def coefficients(opened: np.ndarray, truth: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(truth, A, B) coefficients of the least-squares fit of ``opened`` with an intercept."""
    x = np.stack([np.ones_like(truth), truth, a, b], 1).astype(np.float64)
    return np.linalg.lstsq(x, opened.astype(np.float64), rcond=None)[0][1:]


def paired(args: argparse.Namespace, cfg: Any, pipe: SayAnythingPipeline, engine: ESpeak) -> int:
    """``--paired`` (the module docstring)."""
    slopes, full, feather = [], [], []
    for i in range(args.clips):
        clip = make_clip(DEV_SEED + i, "train", engine)
        n = len(clip.frames)
        ta = cycled(make_clip(DEV_SEED + 1000 + i, "train", engine).mouth, n)
        tbs = [cycled(make_clip(DEV_SEED + 2000 + i + 1000 * k, "train", engine).mouth, n) for k in (0, 1)]
        tracked = rerender(clip, ta)
        outs, reads = [], []
        for tb in tbs:
            pipe._last_encoded = None  # the runs share no latents
            with TrackerFeed(tracked):
                out, _ = engine_output(clip, rerender(clip, tb), cfg, pipe)
            outs.append(out.astype(np.float32))
            reads.append(read_openness(out, clip))
        feed = functools.partial(TrackerFeed, tracked)
        alpha = psnr_ladder.paste_alpha(clip, rerender(clip, tbs[0]), cfg, pipe, feed).mean(-1)
        k = min(len(reads[0]), len(reads[1]), len(alpha))
        slopes.append(float(np.polyfit(tbs[0][:k, 0] - tbs[1][:k, 0], reads[0][:k] - reads[1][:k], 1)[0]))
        d, a = np.abs(outs[0][:k] - outs[1][:k]).mean(-1), alpha[:k]
        full.append(float(d[a > 0.99].mean()))
        feather.append(float(d[(a > 0.01) & (a <= 0.99)].mean()))
        print(f"clip {i}: slope {slopes[-1]:+.3f}  |out 1 - out 2| pasted fully {full[-1]:.2f}, feather "
              f"{feather[-1]:.2f}", flush=True)  # fmt: skip

    print(
        f"{args.checkpoint}, {args.clips} development clips: paired slope {np.mean(slopes):+.3f} +- {se(slopes):.3f} "
        f"(median {np.median(slopes):+.3f}); |out 1 - out 2| where pasted fully {np.mean(full):.2f} +- {se(full):.2f}, "
        f"in the feather {np.mean(feather):.2f} +- {se(feather):.2f} levels"
    )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--paired", action="store_true", help="two input mouths per clip, the same tracker track")
    args = ap.parse_args()
    cfg = load(None, ["model.steps=1"])
    pipe = SayAnythingPipeline.from_config(load_checkpoint(args.checkpoint), cfg.model)
    engine = ESpeak()
    if args.paired:
        return paired(args, cfg, pipe, engine)
    rows: dict[str, list[np.ndarray]] = {"model": [], "truth in the mask": []}
    for i in range(args.clips):
        clip = make_clip(DEV_SEED + i, "train", engine)
        n = len(clip.frames)
        ta = cycled(make_clip(DEV_SEED + 1000 + i, "train", engine).mouth, n)
        tb = cycled(make_clip(DEV_SEED + 2000 + i, "train", engine).mouth, n)
        tracked, shown = rerender(clip, ta), rerender(clip, tb)
        pipe._last_encoded = None  # the runs share no latents
        with TrackerFeed(tracked):
            out, _ = engine_output(clip, shown, cfg, pipe)
        alpha = psnr_ladder.paste_alpha(clip, shown, cfg, pipe, functools.partial(TrackerFeed, tracked))
        perfect = psnr_ladder.perfect_output(clip, shown, cfg, pipe, alpha)
        for name, frames in (("model", out), ("truth in the mask", perfect)):
            opened = read_openness(frames, clip)
            k = len(opened)
            rows[name].append(coefficients(opened, clip.mouth[:k, 0], ta[:k, 0], tb[:k, 0]))
        print(f"clip {i}: " + "  ".join(f"{k} {np.round(v[-1], 3).tolist()}" for k, v in rows.items()), flush=True)
    print(f"{args.checkpoint}, {args.clips} development clips; coefficients of the read-out openness:")
    for name, v in rows.items():
        a, e = np.asarray(v), se(v)
        print(
            f"  {name}: truth {a[:, 0].mean():.3f}  A, the mask's track {a[:, 1].mean():+.3f} +- {e[1]:.3f}  "
            f"B, the pixels' track {a[:, 2].mean():+.3f} +- {e[2]:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
