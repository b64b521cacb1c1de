"""Engine benchmark on the bundled clip: throughput, per-stage cost and live latency.

    python benchmarks/engine_cpu.py [--set playout.delay_ms=600 ...]

Writes benchmarks/results/engine_cpu.json and .png and appends a row to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile

from model import load_model
from stream.bench import run_bench, write_report
from stream.cli import asset
from stream.config import load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--video", default=asset("sample_face.mp4"))
    ap.add_argument("--audio", default=asset("sample_speech.wav"))
    args = ap.parse_args()
    cfg = load(None, args.set)
    with tempfile.TemporaryDirectory() as d:
        report = run_bench(args.video, args.audio, cfg, load_model(cfg), encode_path=os.path.join(d, "b.mp4"))
    out = os.path.join(ROOT, "benchmarks", "results", "engine_cpu")
    write_report(report, out + ".json", out + ".png")
    tp, lv = report["throughput"], report["live"]
    st = tp["stage_ms_per_frame"]
    cmd = "python benchmarks/engine_cpu.py" + "".join(f" --set {s}" for s in args.set)
    row = (
        f"| {datetime.date.today()} | {report['machine']} | {report['model']} | {report['size']} | "
        f"{tp['fps']} | {tp['face_crop_paste_ms_per_frame']} | {st['decode']} | {st['model']} | {st['encode']} | "
        f"{report['delay_ms']} | {lv['added_latency_ms']['p50']} / {lv['added_latency_ms']['p95']} / "
        f"{lv['added_latency_ms']['max']} | {lv['mouth_ready_ms']['p95']} | {lv['late_frames']}/{lv['frames']} | "
        f"{tp['first_frame_s'] * 1000:.0f} | `{cmd}` |\n"
    )
    with open(os.path.join(ROOT, "BENCHMARKS.md"), "a") as fh:
        fh.write(row)
    sys.stdout.write(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
