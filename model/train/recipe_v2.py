"""The tiny v2 recipe, one command from nothing to a checkpoint (resumable at every stage):

    python -m model.train.recipe_v2 --out runs/tiny_v2 [--clips 200] [--steps 1500]

1. audio pre-training on many eSpeak NG languages and voices (``model/train/audio.py``);
2. synthetic training chunks (``dataset.build``, cached) and their frozen-VAE latents (cached);
3. the model: the v1 tiny model's VAE, UNet and ID-guider (``--base``, default
   ``benchmarks/reference/tiny_v1``), the pre-trained ``mouth`` audio encoder in place of its
   ``mel`` one;
4. direct few-step training (``model/train/fewstep.py``), EMA weights saved to ``--out``.

Stages already done (files present under ``--out`` / ``--cache``) are skipped, and the
few-step stage resumes from its last saved step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time

import numpy as np
import torch

from model.checkpoint import WEIGHTS_NAME, load_checkpoint, save_checkpoint
from model.conditioning import MouthAudioEncoder
from model.configs import AudioEncoderConfig
from model.network import SayAnythingModel
from model.train import audio as audio_train
from model.train.dataset import CACHE_VERSION, ChunkSet, build, build_alt_inputs, latents_path, mask_tag
from model.train.fewstep import (
    FewStepConfig,
    LatentSet,
    PairedLatentSet,
    encode_latents,
    encode_masked,
    remask_latents,
    train_fewstep,
)
from stream.errors import ModelError

log = logging.getLogger("recipe_v2")
# where the v2 model starts: the v1 tiny model's VAE, UNet and ID-guider (kept in the repository)
V1 = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "reference", "tiny_v1")
AUDIO = AudioEncoderConfig(kind="mouth", n_mels=40, hidden=96, tokens_per_frame=2)


def initial_model(audio_dir: str, base: str = V1) -> SayAnythingModel:
    old = load_checkpoint(base)
    config = dataclasses.replace(old.config, audio=AUDIO, consistency=True)
    model = SayAnythingModel(config)
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("audio_encoder.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("audio_encoder.") for k in missing), (missing, unexpected)
    saved = torch.load(os.path.join(audio_dir, "audio_encoder.pt"), weights_only=False)
    assert isinstance(model.audio_encoder, MouthAudioEncoder)
    model.audio_encoder.load_state_dict(saved["state"])
    return model.float()


def converted_model(init: str, film: bool = True, mouth_only: bool = False) -> SayAnythingModel:
    """A model started from a trained ``mouth`` checkpoint (``--init``) with what it lacks added:
    the per-frame mouth FiLM (``film``) and the mouth-only tokens (``mouth_only``). Every weight
    carries over; the new parts start at zero, so the converted model starts close to ``init``
    (exactly ``init`` for the FiLM; for ``mouth_only`` the tokens lose the trunk-feature part)."""
    old = load_checkpoint(init)
    if old.config.audio.kind != "mouth":
        raise SystemExit(f"--film-from {init}: needs a checkpoint with the 'mouth' audio encoder (a v2 model)")
    audio = dataclasses.replace(old.config.audio, mouth_only=old.config.audio.mouth_only or mouth_only)
    config = dataclasses.replace(old.config, mouth_film=old.config.mouth_film or film, audio=audio)
    model = SayAnythingModel(config)
    missing, unexpected = model.load_state_dict(old.state_dict(), strict=False)
    new = ("unet.mouth_embedding.", "audio_encoder.mouth_tokens.")
    assert not unexpected and all(k.startswith(new) for k in missing), (missing, unexpected)
    return model.float()


# what ``--audio-from`` swaps: the trunk and head the audio pre-training trains, and ``proj``,
# which follows the trunk's width and which a mouth_only model does not use
AUDIO_TRUNK = ("net.", "blocks.", "head.", "proj.")


def _mouth_only_encoder(model: SayAnythingModel, option: str) -> MouthAudioEncoder:
    """The model's audio encoder, which ``option`` needs to be a ``mouth_only`` one."""
    enc = model.audio_encoder
    if not (isinstance(enc, MouthAudioEncoder) and enc.config.mouth_only):
        raise SystemExit(f"{option}: the model must be a mouth_only one (--film-from a v2.2 checkpoint)")
    return enc


def with_audio_head(model: SayAnythingModel, audio_dir: str) -> SayAnythingModel:
    """``model`` (a ``mouth_only`` checkpoint) with the audio trunk and head of an audio
    pre-training run (``audio_dir/audio_encoder.pt``, from ``python -m model.train.audio``) in
    place of its own. Nothing else changes: a ``mouth_only`` denoiser hears only the four mouth
    parameters the head predicts, through the model's own mouth embedding, so a head trained on
    more voices drops in."""
    path = os.path.join(audio_dir, "audio_encoder.pt")
    if not os.path.isfile(path):
        raise SystemExit(f"--audio-from {audio_dir}: no audio_encoder.pt there (python -m model.train.audio --out DIR)")
    _mouth_only_encoder(model, "--audio-from")
    saved = torch.load(path, weights_only=False)
    sc = saved["config"]
    audio = dataclasses.replace(
        model.config.audio,
        hidden=sc["hidden"],
        n_mels=sc["n_mels"],
        window_before_ms=sc["window_before_ms"],
        window_after_ms=sc["window_after_ms"],
    )
    new = SayAnythingModel(dataclasses.replace(model.config, audio=audio))
    keep = tuple("audio_encoder." + t for t in AUDIO_TRUNK)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(keep)}
    state.update({"audio_encoder." + k: v for k, v in saved["state"].items() if k.startswith(AUDIO_TRUNK)})
    new.load_state_dict(state, strict=True)
    return new.float()


def with_extra_head(model: SayAnythingModel, other: str) -> SayAnythingModel:
    """``model`` (a ``mouth_only`` checkpoint) with the audio trunk and head of checkpoint ``other``
    added as one more head (``AudioEncoderConfig.extra_heads``): the mouth parameters become the
    mean of the heads' predictions. Nothing else changes: the denoiser hears the four parameters
    through ``model``'s own mouth embedding."""
    enc = _mouth_only_encoder(model, "--add-head-from")
    try:
        donor = load_checkpoint(other)
    except (ModelError, OSError) as e:
        raise SystemExit(f"--add-head-from {other}: {e}") from None
    da = donor.config.audio
    shape = ("kind", "mouth_only", "hidden", "n_mels", "window_before_ms", "window_after_ms")
    if differ := [k for k in shape if getattr(da, k) != getattr(enc.config, k)]:
        raise SystemExit(
            f"--add-head-from {other}: its audio encoder differs from the model's in {differ}: "
            "use a checkpoint of the same audio shape"
        )
    audio = dataclasses.replace(enc.config, extra_heads=enc.config.extra_heads + 1 + da.extra_heads)
    new = SayAnythingModel(dataclasses.replace(model.config, audio=audio))
    state = dict(model.state_dict())
    k = enc.config.extra_heads  # the donor's heads go after the model's own
    for key, v in donor.state_dict().items():
        sub = key.removeprefix("audio_encoder.")
        if sub.startswith(("net.", "blocks.", "head.")):  # the donor's first head
            state[f"audio_encoder.extra.{k}.{sub}"] = v
        elif sub.startswith("extra."):  # and any extra heads it has
            i, rest = sub.removeprefix("extra.").split(".", 1)
            state[f"audio_encoder.extra.{k + 1 + int(i)}.{rest}"] = v
    new.load_state_dict(state, strict=True)
    return new.float()


def chunk_caches(cache: str, clips: int, tag: str = "") -> list[str] | None:
    """The chunk caches (``train_<a>_<b>_<px>_<L>_<version><tag>.npz``; ``tag``: ``mask_tag`` of
    the model's crop and mask, empty for the defaults) whose seed ranges tile ``0..clips`` in
    order: the chunks behind ``latents_train_0_<clips>_v1_<version><tag>.npz``. None when they
    do not cover them (a cache folder that does not exist yet covers nothing)."""
    spans = {}
    end = f"_{CACHE_VERSION}{tag}.npz"
    for name in os.listdir(cache) if os.path.isdir(cache) else []:
        parts = name[: -len(end)].split("_") if name.endswith(end) else []
        if len(parts) == 5 and parts[0] == "train" and all(p.isdigit() for p in parts[1:]):
            spans[int(parts[1])] = (int(parts[2]), os.path.join(cache, name))
    out, at = [], 0
    while at < clips and at in spans:
        at, path = spans[at]
        out.append(path)
    return out if at == clips else None


def with_alt_inputs(model: SayAnythingModel, latents: LatentSet, cache: str, clips: int) -> PairedLatentSet:
    """``latents`` with the masked latents of each chunk's second input (``dataset.build_alt_inputs``,
    the other mouth drawn from the training clips' own tracks), both cached under ``cache``."""
    paths = chunk_caches(cache, clips, mask_tag(model.config))
    if paths is None:
        raise SystemExit(f"--swap-inputs: no chunk caches in {cache} cover clips 0..{clips}: run once without it first")
    lat_path = latents_path(cache, clips, model.config)
    alt_path = lat_path.replace("latents_train_", "latents_alt_train_")[: -len(".npz")] + ".npy"
    if os.path.isfile(alt_path):
        masked_alt = np.load(alt_path)
    else:
        pool = np.concatenate([np.load(p, mmap_mode="r")["mouth"].reshape(-1, 4) for p in paths])
        parts = []
        for p in paths:
            alt = build_alt_inputs(model.config, p, pool)
            with np.load(p, mmap_mode="r") as z:
                parts.append(encode_masked(model, alt, z["masks"]))
        masked_alt = np.concatenate(parts)
        if masked_alt.shape != latents.masked.shape:
            raise SystemExit(
                f"--swap-inputs: {len(masked_alt)} second inputs for {len(latents)} chunks: rebuild the caches"
            )
        tmp = alt_path + ".tmp.npy"
        np.save(tmp, masked_alt)
        os.replace(tmp, alt_path)
    fields = {k: getattr(latents, k) for k in LatentSet.__dataclass_fields__}
    return PairedLatentSet(**fields, masked_alt=masked_alt)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/tiny_v2")
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument("--clips", type=int, default=200, help="synthetic training clips")
    ap.add_argument("--utterances", type=int, default=2000, help="speech utterances for the audio pre-training")
    ap.add_argument("--audio-steps", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=1500, help="few-step training steps")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--base", default=V1, help="checkpoint whose VAE, UNet and ID-guider the model starts from")
    ap.add_argument(
        "--film-from",
        default="",
        help="instead: start from this trained v2 checkpoint, add the per-frame mouth FiLM and train that "
        "(no audio pre-training)",
    )
    ap.add_argument(
        "--mouth-only",
        action="store_true",
        help="--film-from: the denoiser's audio tokens carry the predicted mouth parameters only",
    )
    ap.add_argument(
        "--audio-from",
        default="",
        help="--film-from with --mouth-only: replace the audio trunk and head by this audio pre-training's "
        "(python -m model.train.audio --out DIR); with --steps 0 the swapped model is saved as it is",
    )
    ap.add_argument(
        "--add-head-from",
        default="",
        help="--film-from with --mouth-only: add this checkpoint's audio trunk and head as one more head "
        "(the mouth parameters are the heads' mean); with --steps 0 the model is saved as it is",
    )
    ap.add_argument("--no-film", action="store_true", help="--film-from: do not add the per-frame mouth FiLM")
    ap.add_argument("--mouth-noise", type=float, default=0.0, help="noise on the mouth parameters given")
    ap.add_argument("--freeze-audio", action="store_true", help="keep the pre-trained audio trunk and head fixed")
    ap.add_argument(
        "--mask-scale",
        default="",
        help="H,W: train for a larger lower-face mask (SayAnythingConfig.mask_scale); its masked latents are "
        "derived from the default-mask caches when those exist (fewstep.remask_latents), else built with it",
    )
    ap.add_argument(
        "--crop-zoom",
        type=float,
        default=1.0,
        help="train for a crop this much closer on the lower face (SayAnythingConfig.crop_zoom); its "
        "chunks and latents are built with it",
    )
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--truth-mouth", type=float, default=0.5, help="--film-from: share of truth-forced FiLM inputs")
    ap.add_argument("--pixel-weight", type=float, default=0.0, help="weight of the pixel L1 on the mask box")
    ap.add_argument("--delta-weight", type=float, default=0.0, help="weight of the frame-to-frame difference loss")
    ap.add_argument(
        "--response-weight",
        type=float,
        default=0.0,
        help="--film-from with --mouth-only: hold the denoiser's response to the mouth (its estimate minus the "
        "same with the mouth closed) to the starting model's with this weight, while the plain loss to the "
        "truth adapts the rest (more characters learnt without unlearning the folded mouth guidance)",
    )
    ap.add_argument(
        "--guidance-target",
        type=float,
        default=1.0,
        help="--film-from with --mouth-only: train towards the starting model run with this mouth guidance (folded in: "
        "the result runs once, with mouth_guidance 1)",
    )
    ap.add_argument(
        "--swap-inputs",
        action="store_true",
        help="--film-from with --mouth-only: train towards the starting model's estimate from a second input "
        "of each chunk, the same clip with another unrelated mouth (built and cached on first use: "
        "dataset.build_alt_inputs), so what it takes from the input's mouth averages out",
    )
    args = ap.parse_args(argv)
    if not args.crop_zoom >= 1.0:
        raise SystemExit(f"--crop-zoom {args.crop_zoom}: must be >= 1 (1 is the whole-face crop)")
    if not args.response_weight >= 0.0:
        raise SystemExit(f"--response-weight {args.response_weight}: must be >= 0 (0 leaves the response free)")
    if args.crop_zoom != 1.0 and args.mask_scale:
        raise SystemExit("--crop-zoom and --mask-scale: use one of them (the mask redraw needs whole-face crops)")
    for option, given, why in (
        ("--audio-from", args.audio_from, "the head is swapped into it"),
        ("--guidance-target", args.guidance_target != 1.0, "the model it is folded into"),
        ("--add-head-from", args.add_head_from, "the head is added to it"),
        ("--swap-inputs", args.swap_inputs, "the model whose estimates are the target"),
        ("--response-weight", args.response_weight > 0, "the model whose response is kept"),
    ):
        if given and not (args.film_from and args.mouth_only):
            raise SystemExit(f"{option}: needs --film-from CHECKPOINT --mouth-only ({why})")
    swapped = args.audio_from or args.add_head_from
    if swapped and args.steps == 0 and os.path.isfile(os.path.join(args.out, WEIGHTS_NAME)):
        raise SystemExit(f"--out {args.out}: already holds a checkpoint; choose a new folder")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    t0 = time.time()
    audio_dir = os.path.join(args.out, "audio")
    if args.film_from:
        model = converted_model(args.film_from, film=not args.no_film, mouth_only=args.mouth_only)
        if args.audio_from:
            model = with_audio_head(model, args.audio_from)
        if args.add_head_from:
            model = with_extra_head(model, args.add_head_from)
        if swapped and args.steps == 0:  # --out was checked to hold no checkpoint before any work
            save_checkpoint(model.eval(), args.out, torch.float16)
            log.info("model with the audio heads swapped or added saved to %s", args.out)
            return 0
    else:
        if not os.path.isfile(os.path.join(audio_dir, "audio_encoder.pt")):
            report = audio_train.run(
                audio_dir,
                args.utterances,
                60,
                audio_train.AudioTrainConfig(steps=args.audio_steps),
                args.cache,
                AUDIO,
                64,
            )
            log.info("audio pre-training: %s", json.dumps(report))
        model = initial_model(audio_dir, args.base)
    if args.crop_zoom != 1.0:
        model.config = dataclasses.replace(model.config, crop_zoom=args.crop_zoom)
    lat_path = latents_path(args.cache, args.clips, model.config)
    if args.mask_scale:
        h, w = (float(v) for v in args.mask_scale.split(","))
        model.config = dataclasses.replace(model.config, mask_scale=(h, w))
        scaled = latents_path(args.cache, args.clips, model.config)
        if not os.path.isfile(scaled) and os.path.isfile(lat_path):
            # default-mask latents exist: redraw their masks (cheaper than rendering and encoding again)
            paths = chunk_caches(args.cache, args.clips)
            if paths is None:
                raise SystemExit(
                    f"no chunk caches in {args.cache} cover clips 0..{args.clips}: run once without --mask-scale first"
                )
            remask_latents(model, LatentSet.load(lat_path), paths, (h, w)).save(scaled)
            log.info("latents for mask %s derived (%.0f s)", (h, w), time.time() - t0)
        lat_path = scaled
    if os.path.isfile(lat_path):
        latents = LatentSet.load(lat_path)
    else:
        # caches built in parts (for example two halves in parallel) are used as they are
        parts = chunk_caches(args.cache, args.clips, mask_tag(model.config))
        chunks = (
            ChunkSet.concat([ChunkSet.load(p) for p in parts])
            if parts
            else build(model.config, "train", range(args.clips), args.cache)
        )
        log.info("%d chunks from %d clips (%.0f s)", len(chunks), args.clips, time.time() - t0)
        latents = encode_latents(model, chunks)
        latents.save(lat_path)
        del chunks
        log.info("latents cached (%.0f s)", time.time() - t0)
    if args.swap_inputs:
        latents = with_alt_inputs(model, latents, args.cache, args.clips)
        log.info("second inputs' latents ready (%.0f s)", time.time() - t0)
    tc = FewStepConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        truth_mouth=args.truth_mouth if args.film_from else 0.0,
        pixel_weight=args.pixel_weight,
        delta_weight=args.delta_weight,
        mouth_noise=args.mouth_noise,
        freeze_audio=args.freeze_audio,
        lr=args.lr,
        guidance_target=args.guidance_target,
        swap_inputs=args.swap_inputs,
        response_weight=args.response_weight,
    )
    if args.guidance_target != 1.0:  # folded in: the trained model runs once
        model.config = dataclasses.replace(model.config, mouth_guidance=1.0)

    def progress(step: int, losses: dict[str, float]) -> None:
        if step % 25 == 0:
            log.info("step %d %s (%.0f s)", step, {k: round(v, 4) for k, v in losses.items()}, time.time() - t0)

    train_fewstep(model, latents, tc, args.out, progress)
    log.info("done in %.0f s", time.time() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
