"""Texture "auto" on streams that start mid-word: what it chooses, and what that costs.

    python benchmarks/texture_midword.py [--checkpoint model/weights/tiny] [--clips 8] [--json F]

``model.texture = "auto"`` compares the model's drawing of a face at rest with the face. A stream
whose first frame shows an open mouth (a presenter who starts talking before the stream does, a
dubbed clip cut mid-sentence) is compared with a closed drawing, and can read as a face the model
cannot draw. For held-out English clips (``test`` split, seeds 10000+) the real engine runs on:

- ``own, mid-word``: the clip's own video and speech, from its first frame with the mouth well
  open (opening >= 0.5) at least 1 s in: a presenter's stream caught mid-word;
- ``dubbed, mid-word``: the same stretch, the input video showing an unrelated mouth track cut
  mid-word as well (``eval``'s dubbing, started mid-word);
- ``own, at rest``: the clip's own video from its start (silence): the common case, as a control.

Per row: the texture chosen on each clip, the delta-E it decided on, and the scores against the
truth (mouth PSNR, SSIM, openness correlation, stillness in silence), mean and spread. Run the
same script on two versions of the engine to compare them (the clips are deterministic).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from model import load_model  # noqa: E402
from model.train.evaluate import engine_output, score  # noqa: E402
from model.train.synth import FPS, clip_span, make_clip, rerender  # noqa: E402
from stream.bench import machine  # noqa: E402
from stream.config import load  # noqa: E402

KEYS = ("psnr_db", "ssim", "corr", "still_silence")


def mid_word(opening: np.ndarray, after: int) -> int:
    """The first frame from ``after`` on with the mouth well open."""
    hits = np.flatnonzero(opening[after:] >= 0.5)
    if not len(hits):
        raise SystemExit("a clip has no open mouth after its first second: choose other clips")
    return after + int(hits[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="model/weights/tiny")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--json", default=None, help="write the result here")
    args = ap.parse_args()
    cfg = load(None, ["model.steps=1", f"model.checkpoint={args.checkpoint}"])
    model = load_model(cfg)
    rows: dict[str, list[dict]] = {"own, mid-word": [], "dubbed, mid-word": [], "own, at rest": []}
    for i in range(args.clips):
        clip = make_clip(10_000 + i, "test", sentences=(3, 3))
        other = make_clip(20_000 + i, "test", sentences=(3, 3))
        start = mid_word(clip.mouth[:, 0], FPS)
        o = mid_word(other.mouth[:, 0], FPS)
        n = min(len(clip.frames) - start, len(other.frames) - o)
        held = clip_span(clip, start, start + n)
        shown = {
            "own, mid-word": held.frames,
            "dubbed, mid-word": rerender(held, other.mouth[o : o + n]),
        }
        for name, frames in shown.items():
            rows[name].append(run(held, frames, cfg, model))
        rows["own, at rest"].append(run(clip, clip.frames, cfg, model))
        print(f"clip {i}: " + "; ".join(f"{k} {v[-1]['texture']} {v[-1]['psnr_db']:.2f} dB" for k, v in rows.items()))
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "checkpoint": args.checkpoint,
        "clips": args.clips,
        "rows": rows,
    }
    print(f"{args.checkpoint}, {args.clips} held-out English clips: mean (spread) per row")
    for name, got in rows.items():
        textures = ",".join(g["texture"][0] for g in got)
        cells = "  ".join(f"{k} {np.mean([g[k] for g in got]):.3f} ({np.std([g[k] for g in got]):.3f})" for k in KEYS)
        print(f"  {name:17} texture {textures}  {cells}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def run(clip, frames: np.ndarray, cfg, model) -> dict:  # noqa: ANN001
    out, stats = engine_output(clip, frames, cfg, model)
    s = score(out, clip)
    return {
        "texture": stats["texture"],
        "rest_delta_e": stats["rest_delta_e"],
        "reference_frame": stats["reference_frame"],
        **{k: getattr(s, k) for k in KEYS},
    }


if __name__ == "__main__":
    raise SystemExit(main())
