"""Model cost per frame on this machine: the shipped model against the previous one (v1), in
the same run, plus the demo's throughput and its real-time run.

    python benchmarks/model_cpu.py [--rounds 3] [--write]

The reference is the v1 tiny model (``benchmarks/reference/tiny_v1``, 2 steps) on the code
path it shipped with (every frame of a chunk encoded, the whole latent decoded, eager torch in
float32); the candidate is the shipped model at the configured default steps, runtime and
dtype (``model.runtime = auto``: OpenVINO on the CPU); the shipped model on eager torch in
float32 is measured too, to separate the runtime's share. All run the same sliding chunks
(8 frames, 2 overlapping, as the engine cuts them) of a held-out clip, alternating,
``--rounds`` times each; the median is kept. Machines of the same kind differ by 2x from day
to day: the ratio is the figure that carries over.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from model import SHIPPED_WEIGHTS  # noqa: E402
from model.checkpoint import load_checkpoint  # noqa: E402
from model.pipeline import SayAnythingPipeline  # noqa: E402
from stream.bench import machine  # noqa: E402
from stream.config import load  # noqa: E402
from stream.worker import ModelChunk  # noqa: E402

REFERENCE = os.path.join(ROOT, "benchmarks", "reference", "tiny_v1")


TABLE_HEADER = "| date | machine | v1, 2 steps, v1 code path | v2, 1 step, torch float32 |"


def _insert_row(path: str, header_start: str, row: str) -> None:
    """Add ``row`` at the end of the markdown table whose header line starts with ``header_start``."""
    with open(path) as fh:
        lines = fh.readlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    while at < len(lines) and lines[at].startswith("|"):
        at += 1
    lines.insert(at, row)
    with open(path, "w") as fh:
        fh.writelines(lines)


def clip_chunks(resolution: int, chunk: int = 8, overlap: int = 2) -> list[ModelChunk]:
    """Sliding chunks of a held-out synthetic clip, cut by the engine's tracker and crop."""
    from model.train.speech import ESpeak
    from model.train.synth import make_clip
    from model.train.voices import frame_windows
    from stream.config import FaceConfig
    from stream.face import FaceCropper, FaceTracker

    clip = make_clip(10_001, "test", ESpeak())
    face = FaceConfig()
    tracker, cropper = FaceTracker(face), FaceCropper(face, resolution)
    crops, masks = [], []
    for img in clip.frames:
        st = tracker.update(img)
        if st is None:
            continue
        crops.append(cropper.crop(img, st))
        masks.append(cropper.mouth_mask(st))
    win = frame_windows(clip.audio, len(crops), 200, 80)
    out = []
    for s in range(0, len(crops) - chunk + 1, chunk - overlap):
        sl = slice(s, s + chunk)
        out.append(
            ModelChunk(
                np.stack(crops[sl]), np.stack(masks[sl]), win[sl], np.ones(chunk, bool), np.arange(s, s + chunk) / 25
            )
        )
    return out


def per_frame_ms(pipe: SayAnythingPipeline, chunks: list[ModelChunk], steps: int) -> float:
    ref = pipe.encode_reference(chunks[0].frames[0])
    pipe.generate(chunks[0], ref, steps)  # warm
    t = time.perf_counter()
    frames = 0
    for i, ch in enumerate(chunks):
        pipe.generate(ch, ref, steps)
        frames += len(ch.frames) - (2 if i else 0)  # frames each chunk adds to the stream
    return (time.perf_counter() - t) * 1000 / frames


def variants(rounds: int) -> int:
    """Each of the runtime's savings on and off, the same chunks, alternating rounds."""
    import contextlib

    def pipe(static: bool, glue: bool) -> SayAnythingPipeline:
        p = SayAnythingPipeline(load_checkpoint(SHIPPED_WEIGHTS["tiny"]), dtype="auto", runtime="auto")
        if p._ov is None:
            raise SystemExit("--variants measures the OpenVINO runtime, which this machine does not run")
        for part in (p._ov._enc, p._ov._dec, p._ov._den):
            part._learn = static
        if not glue:
            p._glue = contextlib.nullcontext  # type: ignore[method-assign]
        return p

    runs = {
        "v1": SayAnythingPipeline(load_checkpoint(REFERENCE), reuse_overlap=False, decode_box=False),
        "neither change": pipe(False, False),
        "glue on one thread": pipe(False, True),
        "static copies": pipe(True, False),
        "both (as shipped)": pipe(True, True),
    }
    chunks = clip_chunks(runs["v1"].resolution_px)
    ms: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for k, p in runs.items():
            ms[k].append(per_frame_ms(p, chunks, 2 if k == "v1" else 1))
    ref = statistics.median(ms["v1"])
    print(f"{machine()}; median of {rounds} alternating rounds, ms per frame")
    for k, v in ms.items():
        m = statistics.median(v)
        print(f"{k:20} {m:6.2f}  {ref / m:4.2f}x  rounds {[round(x, 2) for x in v]}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="append the result to BENCHMARKS.md")
    ap.add_argument(
        "--variants",
        action="store_true",
        help="instead: the OpenVINO runtime's two savings switched off one at a time (torch glue on one "
        "thread, static copies of repeated shapes), against v1, in one run",
    )
    args = ap.parse_args()
    if args.variants:
        return variants(args.rounds)
    cfg = load(None, [])
    steps = cfg.model.steps
    mc = cfg.model
    reference = SayAnythingPipeline(load_checkpoint(REFERENCE), reuse_overlap=False, decode_box=False)
    eager = SayAnythingPipeline(load_checkpoint(SHIPPED_WEIGHTS["tiny"]))
    candidate = SayAnythingPipeline(load_checkpoint(SHIPPED_WEIGHTS["tiny"]), dtype=mc.dtype, runtime=mc.runtime)
    chunks = clip_chunks(candidate.resolution_px)
    ref_ms, eager_ms, cand_ms = [], [], []
    for _ in range(args.rounds):
        ref_ms.append(per_frame_ms(reference, chunks, 2))
        eager_ms.append(per_frame_ms(eager, chunks, steps))
        cand_ms.append(per_frame_ms(candidate, chunks, steps))
    r, e, c = statistics.median(ref_ms), statistics.median(eager_ms), statistics.median(cand_ms)

    # the demo, as README command (a) runs it: as fast as possible, then paced in real time
    from model import load_model
    from stream.cli import DEMO_VIDEO, asset
    from stream.filejob import run_file

    model = load_model(cfg)
    demo = {}
    with tempfile.TemporaryDirectory() as d:
        for realtime in (False, True):
            res = run_file(asset(DEMO_VIDEO), asset("sample_speech.wav"), os.path.join(d, "demo.mp4"), cfg, model,
                           realtime=realtime, video_mode="loop")  # fmt: skip
            st = res.session
            demo["realtime" if realtime else "fast"] = {
                "frames": res.frames,
                "fps": round(res.fps, 1),
                **{k: st[k] for k in ("generated", "rest", "hold", "passthrough", "late")},
            }
    report = {
        "machine": machine(),
        "steps": steps,
        "runtime": candidate.runtime,
        "reference_ms_per_frame": round(r, 2),
        "shipped_torch_float32_ms_per_frame": round(e, 2),
        "candidate_ms_per_frame": round(c, 2),
        "speedup": round(r / c, 2),
        "rounds": {
            "reference": [round(x, 2) for x in ref_ms],
            "shipped_torch_float32": [round(x, 2) for x in eager_ms],
            "candidate": [round(x, 2) for x in cand_ms],
        },
        "demo": demo,
    }
    print(json.dumps(report, indent=2))
    os.makedirs(os.path.join(ROOT, "benchmarks", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "benchmarks", "results", "model_cpu.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    if args.write:
        f, rt = demo["fast"], demo["realtime"]
        row = (
            f"| {datetime.date.today()} | {report['machine']} | {r:.1f} ms | {e:.1f} ms | {c:.1f} ms "
            f"({candidate.runtime}) | {r / c:.2f}x (goal 2.5x) | {f['fps']} frames/s (goal 40) | "
            f"{rt['frames']} frames: {rt['late']} late, {rt['passthrough']} pass-through, "
            f"{rt['generated']} from the model, {rt['rest']} at rest |\n"
        )
        _insert_row(os.path.join(ROOT, "BENCHMARKS.md"), TABLE_HEADER, row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
