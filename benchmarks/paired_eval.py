"""Two models on the same held-out clips, clip by clip: the paired difference of every metric.

    sayanything-live eval --checkpoint A --clips 8 --steps 1 --split S --json a.json
    sayanything-live eval --checkpoint B --clips 8 --steps 1 --split S --json b.json
    python benchmarks/paired_eval.py a.json b.json

(``benchmarks/mouth_gain.py --json`` writes development runs in the same form.)

``eval`` scores the same clips for every checkpoint (deterministic seeds), so B - A per clip takes
out the clip-to-clip spread, which is far larger than most differences between two models. For
each metric it prints both means, the mean difference +- its standard error over clips, and on
how many clips B is higher; the audio-energy row of each run is printed as the reference.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

METRICS = ("corr", "offset_frames", "still_silence", "seam_ratio", "psnr_db", "ssim", "leak_partial", "leak_slope")


def paired(a: dict, b: dict, metric: str) -> tuple[float, float, int, int]:
    """(mean of B - A, its standard error, clips where B is higher, clips) for one metric."""
    d = np.asarray(b[f"{metric}_clips"], float) - np.asarray(a[f"{metric}_clips"], float)
    if d.shape[0] < 2:
        raise SystemExit(f"{metric}: fewer than 2 clips to pair")
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.shape[0])), int((d > 0).sum()), int(d.shape[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="eval --json of the reference model")
    ap.add_argument("b", help="eval --json of the model compared with it, on the same split and clips")
    args = ap.parse_args()
    with open(args.a) as fa, open(args.b) as fb:
        ra, rb = json.load(fa), json.load(fb)
    a, b = ra["model"], rb["model"]
    if len(a["corr_clips"]) != len(b["corr_clips"]):
        raise SystemExit(f"{args.a} and {args.b} scored different numbers of clips: run eval with the same --clips")
    if "audio_energy" in ra and "audio_energy" in rb:
        print(f"audio energy: {ra['audio_energy']['corr']:.3f} (A's run), {rb['audio_energy']['corr']:.3f} (B's run)")
    print(f"{'metric':14s} {'A':>8s} {'B':>8s}   B - A per clip")
    for m in METRICS:
        if f"{m}_clips" not in a or f"{m}_clips" not in b:
            print(f"{m:14s} (not in both files: an eval from before the metric existed)")
            continue
        mean, se, up, n = paired(a, b, m)
        print(f"{m:14s} {a[m]:8.3f} {b[m]:8.3f}   {mean:+.4f} +- {se:.4f} (B higher on {up} of {n})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
