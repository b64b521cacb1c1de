"""Checkpoints: a folder with ``config.json`` and ``model.safetensors``.

Loading is strict: every key must be present with the expected shape and no extra key may
appear; the first problem is reported in one line naming the file, the key and what was
expected. Pickles (``torch.load``) are never read.
"""

from __future__ import annotations

import json
import os

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.configs import SayAnythingConfig
from model.network import SayAnythingModel
from stream.errors import ModelError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_checkpoint(model: SayAnythingModel, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = os.path.join(folder, WEIGHTS_NAME + ".tmp")
    save_file(state, tmp, metadata={"format": "pt", "config": model.config.to_json()})
    os.replace(tmp, os.path.join(folder, WEIGHTS_NAME))
    with open(os.path.join(folder, CONFIG_NAME), "w") as fh:
        fh.write(model.config.to_json())


def load_config(folder: str) -> SayAnythingConfig:
    path = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(path):
        raise ModelError(f"checkpoint config {path} does not exist: pass a folder saved by sayanything-live")
    try:
        with open(path) as fh:
            data = json.load(fh)
    except json.JSONDecodeError as e:
        raise ModelError(f"checkpoint config {path} is not valid JSON ({e}): re-save the checkpoint") from None
    return SayAnythingConfig.from_dict(data)


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
