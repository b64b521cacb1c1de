"""Training characters against new ones: how much of the denoiser's error is a fit to the
characters it was trained on. A diagnostic, not a quality claim.

    python benchmarks/fit_gap.py --checkpoint model/weights/tiny [--train-clips 240] [--sample 300] [--dev-clips 16]

For chunks of the synthetic training clips (a fixed random sample of ``--sample`` chunks of clips
``0..--train-clips``, from ``recipe_v2``'s caches under ``--cache``) and for every chunk of
``--dev-clips`` development clips (seeds 50000+ of the training voices, new characters and
sentences; built and cached on first use), it makes the model's one-step estimates as the engine
does (``fewstep.predicted_latents``) and reports, each from the audio head and from the true mouth
parameters:

- the latent squared error in the mask (per channel, mean over the mask's latent pixels);
- the mask-region PSNR at the crop's resolution, the estimates decoded as the engine decodes them
  (``fewstep.decode_chunk_box``), and the same for the true latents (the decoder's ceiling).

Both sets are dubbed as training is (the input shows an unrelated mouth). A model that reads much
better on its training characters than on new ones is limited by the characters it has seen, not
by its size.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.psnr_ladder import DEV_SEED  # noqa: E402
from model.checkpoint import load_checkpoint  # noqa: E402
from model.network import SayAnythingModel  # noqa: E402
from model.train.dataset import ChunkSet, build, latents_path  # noqa: E402
from model.train.decoder import training_chunks  # noqa: E402
from model.train.fewstep import LatentSet, decode_chunk_box, encode_latents, predicted_latents  # noqa: E402


@torch.inference_mode()
def crop_psnr(model: SayAnythingModel, est: np.ndarray, chunks: ChunkSet, lat: LatentSet, idx: np.ndarray) -> float:
    """Mean over chunks of the mask-weighted PSNR (8-bit) of ``est`` (latents of chunks ``idx``)
    decoded over the mask's latent box, against the true crops."""
    out = []
    for j, i in enumerate(idx):
        got = decode_chunk_box(model, torch.from_numpy(est[j].astype(np.float32))[None], chunks, lat, int(i), False)
        if got is None:
            continue
        px, (ys, xs), m = got
        true = torch.from_numpy(chunks.frames[i][:, ys, xs]).float().permute(0, 3, 1, 2) / 127.5 - 1.0
        mse = float((((px.clamp(-1, 1) - true) * 127.5) ** 2 * m).sum() / (m.sum() * 3))
        out.append(10.0 * np.log10(255.0**2 / max(mse, 1e-9)))
    return float(np.mean(out))


def row(model: SayAnythingModel, chunks: ChunkSet, lat: LatentSet, idx: np.ndarray) -> dict[str, float]:
    sub = lat.take(idx)
    m = sub.mask.astype(np.float32)
    res: dict[str, float] = {"chunks": float(len(idx))}
    for name, truth in (("audio", False), ("truth", True)):
        est = predicted_latents(model, sub, true_mouth=truth)
        err = ((est.astype(np.float32) - sub.target.astype(np.float32)) ** 2 * m).sum()
        res[f"latent_mse_{name}"] = float(err / (m.sum() * sub.target.shape[2]))
        res[f"psnr_{name}"] = crop_psnr(model, est, chunks, lat, idx)
    res["psnr_true_latents"] = crop_psnr(model, sub.target, chunks, lat, idx)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument("--train-clips", type=int, default=240, help="the training clips whose chunks are sampled")
    ap.add_argument("--sample", type=int, default=300, help="training chunks scored")
    ap.add_argument("--dev-clips", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_checkpoint(args.checkpoint)
    lat_file = latents_path(args.cache, args.train_clips, model.config)
    if not os.path.isfile(lat_file):
        raise SystemExit(
            f"--train-clips {args.train_clips}: no latents at {lat_file}; pass the --cache of a recipe_v2 run "
            f"with --clips {args.train_clips} (the run caches them)"
        )
    t0 = time.time()
    lat = LatentSet.load(lat_file)
    idx = np.sort(np.random.default_rng(0).choice(len(lat), min(args.sample, len(lat)), replace=False))
    rows = {"training characters": row(model, training_chunks(model.config, args.cache, args.train_clips), lat, idx)}
    dev = build(model.config, "train", range(DEV_SEED, DEV_SEED + args.dev_clips), args.cache)
    rows["new characters"] = row(model, dev, encode_latents(model, dev), np.arange(len(dev)))
    print(f"{args.checkpoint} ({time.time() - t0:.0f} s)")
    print("| chunks | latent MSE, audio / truth | crop PSNR, audio / truth | true latents |")
    for name, r in rows.items():
        print(
            f"| {name} ({r['chunks']:.0f}) | {r['latent_mse_audio']:.4f} / {r['latent_mse_truth']:.4f} | "
            f"{r['psnr_audio']:.2f} / {r['psnr_truth']:.2f} dB | {r['psnr_true_latents']:.2f} dB |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
