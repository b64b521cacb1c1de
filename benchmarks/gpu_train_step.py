"""Training step time and peak memory of the few-step objective (``train --data``'s step), per
process, at batch 1 with gradient checkpointing and bfloat16 autocast.

    python benchmarks/gpu_train_step.py                        # full, 512 px, on CUDA
    python benchmarks/gpu_train_step.py --preset tiny --device cpu --no-bf16   # a smoke run

Random weights and random latents (timing only). Writes a row to BENCHMARKS.md with --write.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from model.configs import PRESETS  # noqa: E402
from model.network import SayAnythingModel  # noqa: E402
from model.train.fewstep import FewStepConfig, LatentSet, cached_batches, train_fewstep  # noqa: E402
from stream.bench import machine  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="full", choices=list(PRESETS))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--no-checkpointing", action="store_true")
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    c = PRESETS[a.preset]
    dev = torch.device(a.device)
    model = SayAnythingModel(c).to(dev)
    rng = np.random.default_rng(0)
    L, C, h = c.chunk_frames, c.vae.latent_channels, c.latent_px
    n_audio = round((c.audio.window_before_ms + c.audio.window_after_ms) * 16)
    mask = np.zeros((4, L, 1, h, h), np.uint8)
    mask[..., h // 2 :, h // 4 : 3 * h // 4] = 1
    data = LatentSet(
        rng.standard_normal((4, L, C, h, h)).astype(np.float16),
        rng.standard_normal((4, L, C, h, h)).astype(np.float16),
        mask,
        rng.standard_normal((4, C, h, h)).astype(np.float16),
        (0.1 * rng.standard_normal((4, L, n_audio))).astype(np.float16),
        np.full((4, L, 4), np.nan, np.float32),
    )
    times: list[float] = []
    last = [time.perf_counter()]

    def progress(step: int, _: dict[str, float]) -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    tc = FewStepConfig(steps=a.steps, batch_size=1, bf16=not a.no_bf16, grad_checkpoint=not a.no_checkpointing,
                       save_every=10**9)  # fmt: skip
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        train_fewstep(model, cached_batches(data), tc, out, progress)
    step_s = statistics.median(times[2:]) if len(times) > 3 else statistics.median(times)
    res = {
        "date": datetime.date.today().isoformat(),
        "machine": torch.cuda.get_device_name(dev) if dev.type == "cuda" else machine(),
        "preset": a.preset,
        "resolution_px": c.resolution_px,
        "frames": L,
        "bf16": tc.bf16,
        "grad_checkpoint": tc.grad_checkpoint,
        "step_s": round(step_s, 3),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else None,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
    }
    print(json.dumps(res, indent=1))
    if a.write:
        with open(os.path.join(ROOT, "BENCHMARKS.md"), "a") as f:
            f.write(
                f"\n## Training step, {a.preset} ({res['resolution_px']} px, {L} frames, batch 1)\n\n"
                f"`python benchmarks/gpu_train_step.py --preset {a.preset} --device {a.device}` ({res['date']}, "
                f"{res['machine']}): {res['step_s']} s per step, peak memory {res['peak_mem_gib']} GiB "
                f"(bf16 {tc.bf16}, gradient checkpointing {tc.grad_checkpoint}).\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
