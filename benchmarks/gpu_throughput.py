"""Model throughput: ms per chunk, frames/s, peak memory and the FLOP floor.

Default: the ``full`` config (SVD-size UNet, SVD temporal-decoder VAE) with random weights
(timing only), 512x512 crops, chunks of the engine's length (8 frames, 2 overlapping), 1/2/4
steps of the distilled student, bf16, on CUDA:

    python benchmarks/gpu_throughput.py                     # on a GPU machine
    python benchmarks/gpu_throughput.py --device cpu --preset tiny --dtype float32

Prints a JSON report and, with --write, appends rows to BENCHMARKS.md. The FLOP floor is the
counted FLOPs of one chunk divided by the GPU's dense bf16 peak (from a table of known
GPUs); measured time / floor says how far from the hardware limit the model runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from model.configs import PRESETS
from model.network import SayAnythingModel
from model.pipeline import DTYPES, SayAnythingPipeline
from stream.bench import machine
from stream.worker import ModelChunk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0}


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def peak_mem_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def make_chunk(pipe: SayAnythingPipeline, frames: int, seed: int = 0) -> ModelChunk:
    rng = np.random.default_rng(seed)
    r = pipe.resolution_px
    a = pipe.config.audio
    n = round((a.window_before_ms + a.window_after_ms) * 16)
    masks = np.zeros((frames, r, r), np.float32)
    masks[:, r // 2 : r * 7 // 8, r // 4 : r * 3 // 4] = 1.0
    return ModelChunk(
        rng.integers(0, 255, (frames, r, r, 3), dtype=np.uint8),
        masks,
        (rng.standard_normal((frames, n)) * 0.1).astype(np.float32),
        np.ones(frames, bool),
        np.arange(frames) / 25.0,
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="full", choices=sorted(PRESETS))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    ap.add_argument("--resolution", type=int, default=None, help="crop size (default: the preset's)")
    ap.add_argument("--frames", type=int, default=8, help="chunk length (the engine's chunk.chunk_frames)")
    ap.add_argument("--overlap", type=int, default=2, help="the engine's chunk.overlap_frames")
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--compile", default="none", choices=["none", "default", "reduce-overhead", "max-autotune"])
    ap.add_argument("--write", action="store_true", help="append rows to BENCHMARKS.md")
    args = ap.parse_args()

    device = torch.device(args.device)
    cfg = dataclasses.replace(PRESETS[args.preset], consistency=True, chunk_frames=args.frames)
    if args.resolution:
        cfg = dataclasses.replace(cfg, resolution_px=args.resolution)
    with torch.device("meta"):
        counts = SayAnythingModel(cfg).parameter_count()
    torch.manual_seed(0)
    model = SayAnythingModel(cfg)  # random weights: timing only
    pipe = SayAnythingPipeline(model, device=args.device, dtype=args.dtype, compile=args.compile)
    chunk = make_chunk(pipe, args.frames)
    ref = pipe.encode_reference(chunk.frames[0])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    peak = peak_tflops(device)
    rows = []
    for steps in args.steps:
        pipe.generate(chunk, ref, steps)  # warm-up (and compilation)
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(args.iters):
            t = time.perf_counter()
            pipe.generate(chunk, ref, steps)
            sync()
            times.append(time.perf_counter() - t)
        with FlopCounterMode(display=False) as fc:
            pipe.generate(chunk, ref, steps)
        flops = fc.get_total_flops()
        ms = float(np.median(times) * 1000)
        row = {
            "preset": args.preset,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else machine(),
            "dtype": args.dtype,
            "resolution_px": cfg.resolution_px,
            "frames": args.frames,
            "steps": steps,
            "ms_per_chunk_p50": round(ms, 2),
            "ms_per_chunk_max": round(max(times) * 1000, 2),
            "frames_per_s": round(args.frames / (ms / 1000), 2),
            "new_frames_per_s": round((args.frames - args.overlap) / (ms / 1000), 2),
            "tflop_per_chunk": round(flops / 1e12, 4),
            "flop_floor_ms": round(flops / (peak * 1e12) * 1000, 2) if peak else None,
            "peak_mem_gib": peak_mem_gib(device),
            "params_m": {k: round(v / 1e6, 2) for k, v in counts.items()},
            "compile": args.compile,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.write:
        cmd = "python benchmarks/gpu_throughput.py " + " ".join(sys.argv[1:]).replace("--write", "").strip()
        with open(os.path.join(ROOT, "BENCHMARKS.md"), "a") as fh:
            for r in rows:
                fh.write(
                    f"| {datetime.date.today()} | {r['device']} | {r['preset']} | {r['dtype']} | "
                    f"{r['resolution_px']} | {r['frames']} | {r['steps']} | {r['ms_per_chunk_p50']} | "
                    f"{r['frames_per_s']} | "
                    f"{r['new_frames_per_s']} | {r['tflop_per_chunk']} | {r['flop_floor_ms']} | {r['peak_mem_gib']} | "
                    f"`{cmd}` |\n"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
