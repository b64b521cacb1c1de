"""Tune a trained model's VAE decoder for what the engine asks of it, one command:

    python -m model.train.decoder --init model/weights/tiny --out runs/v23 [--clips 200] [--steps 6000] [--head 32]

The VAE was trained on whole frames and its decoder is then used in two ways it never saw:
on the denoiser's one-step estimates (not the encoder's latents), and on the latent box around
the mask only (``model.decode = box``: its group norms and mid-block attention see the box).
This stage fine-tunes the decoder alone, in pixels, on exactly that: the engine's box of the
synthetic training chunks, decoded from the frozen model's own one-step estimates (sampled as
the engine samples, with the model's ``mouth_gain``) for a share ``--p-predicted`` of the
steps and from the true latents for the rest, with the true frames as the target (L1, weight
1 in the mask and 0.05 elsewhere in the box). The true latents are used inside the mask only,
with the model's estimate around it (``--true-context`` keeps their own), so the decoder cannot
learn to take the opening from the jaw and cheeks around the mask, which when dubbing show the
original speaker. The denoiser, the audio path and the encoder are unchanged, so when the mouth
opens is unchanged; what changes is how the latents it produces are turned into pixels.

Measured (BENCHMARKS.md, "The decoder tuned for the engine"): with ``--p-predicted 0.5`` the
openness correlation and mouth PSNR rose on every split, and so did the leak (the original
speaker's mouth showing through), with or without the true context; with ``--p-predicted 1``
the leak did not rise in English but the correlation gain was small. None was shipped.

``--head C`` adds a context head of C channels (``model/vae.py``, ``ContextHead``) to a model
that has none and trains it with the decoder: a correction of the decoded mask region from the
input crop around the mask and the reference crop's own decoder error (measured and not shipped:
BENCHMARKS.md, "Where the mouth PSNR is lost"). ``--head-only`` trains the head alone over the
frozen decoder (with ``--head C``, or on a model that has a head); ``--head-gap G`` blanks the
input G pixels beyond the mask. Measured: the head alone raises leak|truth as well, with or without the
input, while passing less of the input's mouth into the pixels (BENCHMARKS.md, "The context head
alone").

Caches under ``--cache`` (shared with ``recipe_v2``): the chunks, their latents, and the
model's estimates (keyed by a digest of the denoising weights). The stage itself takes minutes
and is re-created by running the command again.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import os
import time

import numpy as np
import torch

from model.checkpoint import hash_weights, load_checkpoint, save_checkpoint
from model.configs import SayAnythingConfig
from model.network import SayAnythingModel
from model.train.dataset import CACHE_VERSION, ChunkSet, build, latents_path, mask_tag
from model.train.fewstep import LatentSet, encode_latents, predicted_latents, rescaled_mask, tune_decoder

log = logging.getLogger("decoder")


def _weights_digest(model: torch.nn.Module) -> str:
    """A digest of what the model's estimates depend on: every weight but the decoder's and the
    context head's, and the config but the head's fields."""
    h = hashlib.sha256()
    hash_weights(h, model, skip=("vae.model.decoder.", "context_head."))
    config = getattr(model, "config", None)
    if isinstance(config, SayAnythingConfig):
        config = dataclasses.replace(config, decoder_head=0, decoder_head_gap=0)
    h.update(repr(config).encode())
    return h.hexdigest()[:12]


def training_chunks(config: SayAnythingConfig, cache: str, clips: int) -> ChunkSet:
    """The chunks of synthetic training clips ``0..clips`` with the model's crop and mask, from
    the caches ``recipe_v2`` built where they cover them (two halves built in parallel are used
    as they are), built otherwise."""
    from model.train.recipe_v2 import chunk_caches

    parts = chunk_caches(cache, clips, mask_tag(config))
    if parts:
        return ChunkSet.concat([ChunkSet.load(p) for p in parts])
    default = chunk_caches(cache, clips) if config.crop_zoom == 1.0 and config.mask_scale != (1.0, 1.0) else None
    if default:
        # a larger mask on whole-face crops: the default-mask chunks with every mask redrawn, as
        # recipe_v2 derives its latents for --mask-scale (fewstep.remask_latents)
        chunks = ChunkSet.concat([ChunkSet.load(p) for p in default])
        return dataclasses.replace(chunks, masks=rescaled_masks(chunks.masks, config))
    return build(config, "train", range(clips), cache)


def rescaled_masks(masks: np.ndarray, config: SayAnythingConfig) -> np.ndarray:
    """Cached default-mask chunk masks (N, L, R, R) redrawn for ``config.mask_scale``
    (``fewstep.rescaled_mask``, the engine's feather at the model's resolution)."""
    from stream.config import FaceConfig

    feather = FaceConfig().mask_feather_px * config.resolution_px / 256
    scale = (float(config.mask_scale[0]), float(config.mask_scale[1]))
    return np.stack([[rescaled_mask(m, scale, feather) for m in chunk] for chunk in masks])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init", required=True, help="the trained checkpoint whose decoder is tuned")
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--p-predicted", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--true-context",
        action="store_true",
        help="decode the true latents with their own context (by default the truth only inside the mask, the "
        "model's estimate around it)",
    )
    ap.add_argument(
        "--head",
        type=int,
        default=0,
        help="add a context head of this many channels to a model without one, trained with the decoder",
    )
    ap.add_argument(
        "--head-only",
        action="store_true",
        help="train the context head alone, over the frozen decoder (with --head, or on a model that has one)",
    )
    ap.add_argument(
        "--head-gap",
        type=int,
        default=0,
        help="with --head: pixels of the input blanked around the mask before the head reads it "
        "(model.decoder_head_gap)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.head_gap and args.head <= 0:
        raise SystemExit("--head-gap: it sets the gap of a head added by --head C; give --head too")
    if os.path.exists(os.path.join(args.out, "config.json")):
        raise SystemExit(f"{args.out} already holds a checkpoint: choose another --out or remove it")
    t0 = time.time()
    model = load_checkpoint(args.init).float()
    if args.head_only and args.head <= 0 and model.context_head is None:
        raise SystemExit(f"--head-only: {args.init} has no context head; add one with --head C")
    if args.head > 0:
        if model.context_head is not None:
            raise SystemExit(f"--head: {args.init} already has a context head; leave --head out to tune it")
        grown = SayAnythingModel(
            dataclasses.replace(model.config, decoder_head=args.head, decoder_head_gap=args.head_gap)
        )
        missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("context_head.") for k in missing)
        model = grown.float()
    chunks = training_chunks(model.config, args.cache, args.clips)
    log.info("%d chunks (%.0f s)", len(chunks), time.time() - t0)
    lat_path = latents_path(args.cache, args.clips, model.config)
    if os.path.isfile(lat_path):
        latents = LatentSet.load(lat_path)
    else:
        latents = encode_latents(model, chunks)
        latents.save(lat_path)
        log.info("latents cached (%.0f s)", time.time() - t0)
    pred_path = os.path.join(args.cache, f"predicted_{args.clips}_{CACHE_VERSION}_{_weights_digest(model)}.npy")
    if os.path.isfile(pred_path):
        predicted = np.load(pred_path)
    else:
        predicted = predicted_latents(model, latents, seed=args.seed)
        np.save(pred_path, predicted)
        log.info("the model's estimates cached (%.0f s)", time.time() - t0)
    losses: list[float] = []

    def progress(step: int, rec: dict[str, float]) -> None:
        losses.append(rec["loss"])
        if step % 250 == 0:
            log.info("step %d loss %.4f (%.0f s)", step, float(np.mean(losses[-250:])), time.time() - t0)

    tune_decoder(
        model, chunks, latents, 0.0, lr=args.lr, seed=args.seed, progress=progress,
        predicted=predicted, p_predicted=args.p_predicted, steps=args.steps, true_context=args.true_context,
        head_only=args.head_only,
    )  # fmt: skip
    save_checkpoint(model, args.out, dtype=torch.float16)
    log.info("decoder tuned: %s (%.0f s)", args.out, time.time() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
