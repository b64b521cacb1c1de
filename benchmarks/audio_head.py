"""The audio head alone, on eval's own clips: how well each checkpoint's head reads the opening
from the audio, before any rendering.

    python benchmarks/audio_head.py --checkpoint model/weights/tiny runs/v3 [--clips 8] [--dev]

For every split of ``sayanything-live eval`` (the same held-out clips: seeds 10000+, the English
test voices, unseen languages, the unseen engine Festival, people reading) and the development
clips of ``benchmarks/mouth_gain.py`` (training voices, seeds 50000+), it prints per checkpoint
the mean +- std over clips of the correlation between the head's predicted opening and the truth
(the whole clip, silences included, as eval scores it), and the slope of the prediction on the
truth over speech frames (below 1: the head compresses the opening, which the model's
``mouth_gain`` makes up). The audio-energy baseline of eval is the reference row. No frame is
rendered through the model, so it takes about a minute.

``--dev`` reads development clips of every split instead (seeds 50000+, which ``eval`` never uses:
new sentences and characters, the same held-out voices, languages, engine and readers), so a head
can be chosen without looking at the test clips.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from model.checkpoint import load_checkpoint  # noqa: E402
from model.conditioning import MouthAudioEncoder  # noqa: E402
from model.train.audio import predict  # noqa: E402
from model.train.evaluate import energy_openness  # noqa: E402
from model.train.speech import ESpeak  # noqa: E402
from model.train.synth import make_clip  # noqa: E402
from model.train.voices import frame_windows  # noqa: E402

SPLITS = {"dev (training voices)": ("train", 50_000), "test": ("test", 10_000)}
SPLITS |= {s: (s, 10_000) for s in ("test_languages", "test_engines", "test_real")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", nargs="+", required=True)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--dev", action="store_true", help="development clips (seeds 50000+) of every split")
    args = ap.parse_args()
    heads = {}
    for ck in args.checkpoint:
        enc = load_checkpoint(ck).audio_encoder
        if not isinstance(enc, MouthAudioEncoder):
            raise SystemExit(f"--checkpoint {ck}: its audio encoder has no mouth head (a v2 model or later)")
        heads[ck] = enc
    espeak = ESpeak()
    splits = {s: (s, 50_000) for s, _ in SPLITS.values()} if args.dev else SPLITS
    for name, (split, seed) in splits.items():
        engine = espeak if split in ("train", "test", "test_languages") else None
        clips = [make_clip(seed + i, split, engine, size=64) for i in range(args.clips)]  # type: ignore[arg-type]
        rows: dict[str, list[tuple[float, float]]] = {k: [] for k in [*heads, "audio energy"]}
        for c in clips:
            truth, speech = c.mouth[:, 0], c.speech
            preds = {
                k: predict(
                    enc, frame_windows(c.audio, len(truth), enc.config.window_before_ms, enc.config.window_after_ms)
                )[:, 0]
                for k, enc in heads.items()
            }
            preds["audio energy"] = energy_openness(c.audio, len(c.mouth))
            for k, p in preds.items():
                slope = float(np.polyfit(truth[speech], p[speech], 1)[0])
                rows[k].append((float(np.corrcoef(p, truth)[0, 1]), slope))
        print(f"{name} ({args.clips} clips):")
        for k, v in rows.items():
            a = np.array(v)
            print(f"  {k:40s} corr {a[:, 0].mean():.3f} +- {a[:, 0].std():.3f}  slope {a[:, 1].mean():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
