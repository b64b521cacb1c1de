"""Checkpoints: a folder with ``config.json`` and ``model.safetensors``.

Loading is strict: every key must be present with the expected shape and no extra key may
appear; the first problem is reported in one line naming the file, the key and what was
expected. Pickles (``torch.load``) are never read.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.configs import SayAnythingConfig
from model.network import SayAnythingModel
from stream.errors import ModelError


def hash_weights(h: Any, model: torch.nn.Module, skip: tuple[str, ...] = ()) -> None:
    """Feed every weight of ``model`` (name and float32 bytes, in name order) into the hashlib
    object ``h``, leaving out the names that start with one of ``skip``."""
    for name, t in sorted(model.state_dict().items()):
        if not name.startswith(skip):
            h.update(name.encode())
            h.update(t.detach().float().cpu().contiguous().numpy().tobytes())


def hash_sources(h: Any, folder: str, names: tuple[str, ...]) -> None:
    """Feed the bytes of the files ``names`` in ``folder`` into the hashlib object ``h`` (the
    code a cached result was made by)."""
    for name in names:
        with open(os.path.join(folder, name), "rb") as fh:
            h.update(fh.read())


CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_checkpoint(model: SayAnythingModel, folder: str, dtype: torch.dtype | None = None) -> None:
    """Write ``config.json`` + ``model.safetensors``; ``dtype`` (e.g. float16) shrinks the file
    (loading casts back to the model's dtype)."""
    os.makedirs(folder, exist_ok=True)
    state = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    tmp = os.path.join(folder, WEIGHTS_NAME + ".tmp")
    save_file(state, tmp, metadata={"format": "pt", "config": model.config.to_json()})
    os.replace(tmp, os.path.join(folder, WEIGHTS_NAME))
    save_config(model.config, folder)


def save_config(config: SayAnythingConfig, folder: str) -> None:
    """Write ``config.json`` (alone: e.g. a calibration that changes no weight)."""
    with open(os.path.join(folder, CONFIG_NAME), "w") as fh:
        fh.write(config.to_json())


def load_config(folder: str) -> SayAnythingConfig:
    path = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(path):
        raise ModelError(f"checkpoint config {path} does not exist: pass a folder saved by sayanything-live")
    try:
        with open(path) as fh:
            data = json.load(fh)
    except json.JSONDecodeError as e:
        raise ModelError(f"checkpoint config {path} is not valid JSON ({e}): re-save the checkpoint") from None
    if not isinstance(data, dict):
        raise ModelError(f"checkpoint config {path} is not a JSON object: re-save the checkpoint")
    try:
        return SayAnythingConfig.from_dict(data)
    except ModelError as e:
        raise ModelError(f"checkpoint config {path}: {e}") from None


def check_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: str) -> None:
    """Strict key and shape check; raises ModelError on the first mismatch."""
    for key, ref in expected.items():
        if key not in state:
            raise ModelError(
                f"checkpoint {path} lacks key {key} (expected shape {tuple(ref.shape)}): wrong model config?"
            )
        if tuple(state[key].shape) != tuple(ref.shape):
            raise ModelError(
                f"checkpoint {path} key {key} has shape {tuple(state[key].shape)}, expected {tuple(ref.shape)}: "
                "the checkpoint was saved with another config"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ModelError(f"checkpoint {path} has unexpected key {extra[0]} ({len(extra)} in all): wrong model config?")


def read_weights(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise ModelError(f"checkpoint weights {path} do not exist: pass a folder holding {WEIGHTS_NAME}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(
            f"checkpoint weights {path} cannot be read ({e}): the file is truncated or not safetensors"
        ) from None


def load_checkpoint(
    folder: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> SayAnythingModel:
    config = load_config(folder)
    model = SayAnythingModel(config)
    path = os.path.join(folder, WEIGHTS_NAME)
    state = read_weights(path)
    check_state(state, model.state_dict(), path)
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval()


# -- Stable Video Diffusion weights ------------------------------------------------------
# A diffusers-format SVD folder: unet/ and vae/, each with diffusion_pytorch_model[.fp16].safetensors.
# Key map, SVD -> this model:
#   unet.<key>          -> unet.<key>           same shape, except:
#   unet.conv_in.weight -> unet.conv_in.weight  (C, 8, 3, 3) -> (C, 9, 3, 3): input channels 0-3
#                          (noisy latents) and 4-7 (SVD's conditioning-image latent -> here the
#                          masked-frame latents) copied; channel 8 (mask) zero
#   vae.<key>           -> vae.model.<key>      same shape
# ID-guider and audio encoder keys have no SVD counterpart and keep their initialisation.
SVD_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")


def _svd_file(folder: str, sub: str) -> str:
    for name in SVD_WEIGHT_FILES:
        path = os.path.join(folder, sub, name)
        if os.path.isfile(path):
            return path
    raise ModelError(
        f"SVD folder {folder} lacks {sub}/{SVD_WEIGHT_FILES[0]}: pass a diffusers-format Stable Video Diffusion folder"
    )


def map_svd_state(svd: dict[str, torch.Tensor], part: str, ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map one SVD part ("unet" or "vae") onto this model's keys (see the table above)."""
    prefix = "unet." if part == "unet" else "vae.model."
    out: dict[str, torch.Tensor] = {}
    for key, value in svd.items():
        target = prefix + key
        if target == "unet.conv_in.weight" and target in ours:
            ref = ours[target]
            if value.shape[1] != 8 or ref.shape[1] != 9 or value.shape[0] != ref.shape[0]:
                raise ModelError(
                    f"SVD key conv_in.weight has shape {tuple(value.shape)}, expected ({ref.shape[0]}, 8, 3, 3): "
                    "not an SVD image-to-video UNet of this size"
                )
            w = torch.zeros(ref.shape, dtype=value.dtype)
            w[:, :8] = value
            value = w
        out[target] = value
    return out


def load_svd_weights(model: SayAnythingModel, folder: str) -> None:
    """Load a diffusers-format SVD folder's UNet and VAE into ``model`` (strict per part)."""
    ours = model.state_dict()
    for part in ("unet", "vae"):
        path = _svd_file(folder, part)
        mapped = map_svd_state(read_weights(path), part, ours)
        prefix = "unet." if part == "unet" else "vae.model."
        expected = {k: v for k, v in ours.items() if k.startswith(prefix)}
        check_state(mapped, expected, path)
        model.load_state_dict({**ours, **{k: v.to(ours[k].dtype) for k, v in mapped.items()}}, strict=True)
        ours = model.state_dict()
