"""What ``model.texture = "auto"`` sees, and the closed-mouth measure behind the reference frame.

    python benchmarks/texture_choice.py [--checkpoint model/weights/tiny] [--clips 8]

1. For the first frame of ``eval``'s own clips (the English test split and unseen languages,
   seeds 10000+, with eval's input video), of training characters (seeds 0+) and of the bundled
   public-domain portrait, it runs the real engine and prints the session's figures: the mean
   CIELAB delta-E between the model's drawing of the face at rest and the face, raw and with the
   model's colour cast taken off (what ``auto`` compares with ``model.texture_auto_delta_e``),
   and the texture chosen.
2. On the held-out English clips through the real face tracker, the correlation of
   ``FaceCropper.mouth_darkness`` with the true opening, and its mean with the mouth closed
   (opening < 0.1) and open (> 0.5).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from model.checkpoint import load_checkpoint  # noqa: E402
from model.pipeline import SayAnythingPipeline  # noqa: E402
from model.train.evaluate import engine_output  # noqa: E402
from model.train.speech import ESpeak  # noqa: E402
from model.train.synth import cycled, make_clip, rerender  # noqa: E402
from stream.cli import asset  # noqa: E402
from stream.config import load  # noqa: E402
from stream.face import FaceCropper, FaceTracker  # noqa: E402
from stream.sources.file import decode_video  # noqa: E402

FRAMES = 24  # the choice is made once the first chunk's rest drawing is back


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="model/weights/tiny")
    ap.add_argument("--clips", type=int, default=8)
    args = ap.parse_args()
    engine = ESpeak()
    cfg = load(None, ["model.steps=1"])
    pipe = SayAnythingPipeline.from_config(load_checkpoint(args.checkpoint), cfg.model)

    def row(frames: np.ndarray, clip: object) -> tuple[float, float, str]:
        _, st = engine_output(clip, frames[:FRAMES], cfg, pipe)  # type: ignore[arg-type]
        return st["rest_delta_e_raw"], st["rest_delta_e"], st["texture"]

    print(f"{args.checkpoint}: delta-E of the model's rest drawing from the face (raw / cast taken off)")
    groups = [("English test", "test", 10_000), ("unseen languages", "test_languages", 10_000)]
    groups.append(("training characters", "train", 0))
    for name, split, base in groups:
        got = []
        for i in range(args.clips):
            clip = make_clip(base + i, split, engine)
            other = make_clip(20_000 + i, "test", engine)
            got.append(row(rerender(clip, cycled(other.mouth, len(clip.frames))), clip))
        raw, off = np.array([g[0] for g in got]), np.array([g[1] for g in got])
        textures = ",".join(sorted({g[2] for g in got}))
        print(
            f"  {name:20} raw {raw.min():5.1f} - {raw.max():5.1f}  cast off {off.min():5.1f} - {off.max():5.1f}  "
            f"texture {textures}  ({len(got)} clips)"
        )
    image = next(iter(decode_video(asset("sample_face.mp4"))))
    clip = make_clip(10_000, "test", engine)
    raw, off, texture = row(np.repeat(image[None], FRAMES, 0), clip)
    print(f"  {'bundled portrait':20} raw {raw:5.1f}  cast off {off:5.1f}  texture {texture}")

    print("mouth_darkness against the true opening (held-out English clips, real tracker):")
    corrs, closed, opened = [], [], []
    for i in range(args.clips):
        clip = make_clip(10_000 + i, "test", engine)
        tracker, cropper = FaceTracker(cfg.face), FaceCropper(cfg.face, pipe.resolution_px)
        dark = []
        try:
            for img in clip.frames:
                face = tracker.update(img)
                crop = cropper.crop(img, face)
                dark.append(cropper.mouth_darkness(crop, cropper.mouth_mask(face), face))
        finally:
            tracker.close()
        d, truth = np.array(dark), clip.mouth[: len(dark), 0]
        corrs.append(float(np.corrcoef(d, truth)[0, 1]))
        closed += list(d[truth < 0.1])
        opened += list(d[truth > 0.5])
    print(
        f"  corr {np.mean(corrs):.3f} +- {np.std(corrs):.3f} over {len(corrs)} clips; "
        f"closed {np.mean(closed):.3f}, open {np.mean(opened):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
