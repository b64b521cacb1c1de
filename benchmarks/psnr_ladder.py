"""Where the mouth PSNR is lost: the engine's mouth-region PSNR (``eval``'s definition) for a
ladder of renderings of the same development clips, each rung adding one source of error.

    python benchmarks/psnr_ladder.py --checkpoint model/weights/tiny --clips 8

Rungs, every one run through the real engine (face tracking, crop, mask, paste) on the clip's
audio:

- ``crop``: the clip's own video as input, and a model that returns its input crop unchanged:
  what the crop's resolution and the paste lose (the ceiling of any model at this crop size).
- ``vae``: the same, the input crop's masked region sent through the checkpoint's VAE (encode,
  then decode of the mask's latent box, as the engine decodes, with its context head if it has
  one): the ceiling of this VAE.
- ``truth``: the model, given the clip's true mouth parameters instead of the audio head's, on
  its own video (nothing it sees contradicts the truth).
- ``own``: the model from the audio, on its own video.
- ``dubbed``: the model from the audio, on a video of another mouth track, as ``eval`` runs it.
- ``perfect``: the same dubbed video with the *true* frames pasted through the engine's mask, as
  a model that drew the truth exactly would show them. The mask is measured per frame by two
  engine runs on the dubbed video whose model slot returns a white and a black crop (VAD off, so
  every frame is pasted; texture ``model``): alpha = (white - black) / 255. Its leak is what the
  read-out takes from the input outside the mask, the floor of any model on this engine.

For the dubbed rungs it also prints ``eval``'s leak|truth and leak slope.

Development clips (seeds 50000+) of the training voices or of ``--split``; never ``eval``'s.
Prints per-rung mean +- spread over the clips; a diagnostic, not a quality claim.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from model.checkpoint import load_checkpoint  # noqa: E402
from model.conditioning import MouthAudioEncoder  # noqa: E402
from model.pipeline import SayAnythingPipeline  # noqa: E402
from model.train.evaluate import engine_output, score  # noqa: E402
from model.train.speech import ESpeak  # noqa: E402
from model.train.synth import FPS, cycled, make_clip, rerender  # noqa: E402
from stream.config import load  # noqa: E402
from stream.worker import ModelChunk  # noqa: E402

DEV_SEED = 50_000
RUNGS = ("crop", "vae", "truth", "own", "dubbed", "perfect")
DUBBED = ("dubbed", "perfect")  # the rungs whose input shows another mouth
# the engine settings under which a FlatModel measures the paste: every frame, the model's own pixels
PROBE = ["model.steps=1", "vad.enabled=false", "model.texture=model", "model.match_colour=false"]


class CropModel:
    """The engine's model slot filled by the crop itself (``vae``: through the VAE). A
    measuring device: it makes no lips follow any audio."""

    def __init__(self, pipe: SayAnythingPipeline, vae: bool) -> None:
        self.pipe, self.vae = pipe, vae
        self.name = "crop+vae" if vae else "crop"
        self.resolution_px, self.mask_scale, self.crop_zoom = pipe.resolution_px, pipe.mask_scale, pipe.crop_zoom
        self.paste_gain = pipe.paste_gain

    def encode_reference(self, crop: np.ndarray) -> Any:
        return self.pipe.encode_reference(crop)

    @torch.inference_mode()
    def generate(self, chunk: ModelChunk, reference: Any, steps: int) -> np.ndarray:
        if not self.vae:
            return chunk.frames.copy()
        p = self.pipe
        frames = p._to_tensor(chunk.frames)
        masks = torch.from_numpy((chunk.masks > 0.02).astype(np.float32))[None, :, None]
        lat = p._encode(frames)
        mask_lat = F.adaptive_max_pool2d(masks.flatten(0, 1), lat.shape[-2:]).reshape(*masks.shape[:3], *lat.shape[-2:])
        out = p.decode_into(frames, masks, lat, mask_lat, reference)
        img = ((out[0].float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return img.permute(0, 2, 3, 1).numpy()


class FlatModel:
    """The engine's model slot filled by one flat grey level: with 255 and 0 on the same input,
    the two outputs differ by 255 times the mask the engine pasted through. A measuring device."""

    def __init__(self, pipe: SayAnythingPipeline, level: int) -> None:
        self.pipe, self.level, self.name = pipe, level, f"flat {level}"
        self.resolution_px, self.mask_scale, self.crop_zoom = pipe.resolution_px, pipe.mask_scale, pipe.crop_zoom
        self.paste_gain = pipe.paste_gain

    def encode_reference(self, crop: np.ndarray) -> Any:
        return self.pipe.encode_reference(crop)

    def generate(self, chunk: ModelChunk, reference: Any, steps: int) -> np.ndarray:
        return np.full_like(chunk.frames, self.level)


def paste_alpha(
    clip: Any, video: np.ndarray, cfg: Any, pipe: SayAnythingPipeline, feed: Callable[[], Any] = nullcontext
) -> np.ndarray:
    """Per frame, pixel and channel, the share the engine pastes over ``video`` (0-1): two runs of a
    ``FlatModel``, white and black, VAD off so every frame is pasted, texture ``model``, with
    ``cfg``'s face and chunk settings; ``feed``: a context entered around each run."""
    probe = dataclasses.replace(load(None, PROBE), face=cfg.face, chunk=cfg.chunk)
    flat = []
    for level in (255, 0):
        with feed():
            got, _ = engine_output(clip, video, probe, FlatModel(pipe, level))
        flat.append(got.astype(np.float32))
    return (flat[0] - flat[1]) / 255.0


def perfect_output(
    clip: Any, video: np.ndarray, cfg: Any, pipe: SayAnythingPipeline, alpha: np.ndarray | None = None
) -> np.ndarray:
    """``video`` with ``clip``'s true frames pasted through the engine's mask (``paste_alpha``,
    measured here unless given)."""
    if alpha is None:
        alpha = paste_alpha(clip, video, cfg, pipe)
    n = len(alpha)
    out = video[:n].astype(np.float32) * (1.0 - alpha) + clip.frames[:n].astype(np.float32) * alpha
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--split", default="train", choices=("train", "test_languages", "test_engines", "test_real"))
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--rungs", default=",".join(RUNGS), help=f"comma-separated, of {', '.join(RUNGS)}")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an engine config override")
    args = ap.parse_args()
    rungs = [r for r in args.rungs.split(",") if r]
    if bad := set(rungs) - set(RUNGS):
        raise SystemExit(f"--rungs {sorted(bad)}: choose from {', '.join(RUNGS)}")
    cfg = load(None, ["model.steps=1", *args.set])
    pipe = SayAnythingPipeline.from_config(load_checkpoint(args.checkpoint), cfg.model)
    enc = pipe.model.audio_encoder
    if "truth" in rungs and not (isinstance(enc, MouthAudioEncoder) and enc.config.mouth_only):
        raise SystemExit(f"--checkpoint {args.checkpoint}: the truth rung needs a mouth_only model (v2.2 or later)")
    state: dict[str, np.ndarray | None] = {"truth": None, "times": None}
    generate = pipe.generate

    def remember_times(chunk, ref, steps):  # noqa: ANN001, ANN202
        state["times"] = np.asarray(chunk.times_s)
        return generate(chunk, ref, steps)

    if isinstance(enc, MouthAudioEncoder) and enc.config.mouth_only:
        features = enc.features

        def forced(audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            truth, times = state["truth"], state["times"]
            if truth is None or times is None:
                return features(audio)
            idx = np.clip(np.round(times * FPS).astype(int), 0, len(truth) - 1)
            m = torch.from_numpy(truth[idx]).to(torch.float32)[None]
            return enc.tokens_from_mouth(m), m

        enc.features = forced  # type: ignore[method-assign]
    pipe.generate = remember_times  # type: ignore[method-assign]

    engine = ESpeak()
    speaker = engine if args.split in ("train", "test_languages") else None
    models = {"crop": CropModel(pipe, vae=False), "vae": CropModel(pipe, vae=True)}
    got: dict[str, list[float]] = {r: [] for r in rungs}
    leaks: dict[str, list[tuple[float, float]]] = {r: [] for r in rungs if r in DUBBED}
    for i in range(args.clips):
        clip = make_clip(DEV_SEED + i, args.split, speaker)
        other = make_clip(DEV_SEED + 1000 + i, "train", engine)
        shown = cycled(other.mouth, len(clip.frames))
        for r in rungs:
            dubbed = r in DUBBED
            video = rerender(clip, shown) if dubbed else clip.frames
            state["truth"] = clip.mouth.astype(np.float32) if r == "truth" else None
            pipe._last_encoded = None  # the runs share no latents
            if r == "perfect":
                out = perfect_output(clip, video, cfg, pipe)
            else:
                out, _ = engine_output(clip, video, cfg, models.get(r, pipe))
            sc = score(out, clip, cfg.chunk.chunk_frames, cfg.chunk.overlap_frames, shown[:, 0] if dubbed else None)
            got[r].append(sc.psnr_db)
            if dubbed:
                leaks[r].append((sc.leak_partial, sc.leak_slope))
        print(f"clip {i}: " + "  ".join(f"{r} {got[r][-1]:.2f}" for r in rungs), flush=True)
    print(
        f"{args.split}, {args.clips} development clips, mouth PSNR (dB): "
        + "  ".join(f"{r} {np.mean(v):.2f} +- {np.std(v):.2f}" for r, v in got.items())
    )
    for r, v in leaks.items():
        if v:
            lp, sl = np.asarray(v).T
            print(f"{r}: leak|truth {lp.mean():.3f} +- {lp.std():.3f}  leak slope {sl.mean():.3f} +- {sl.std():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
