"""Lip-sync models for the sayanything-live engine. ``load_model`` builds the one a config names."""

from __future__ import annotations

import dataclasses
import os

from stream.config import Config
from stream.errors import ConfigError
from stream.worker import LipSyncModel

# the weights in the repository: "tiny", the default, and "tiny-voices", the same model with the
# audio head pre-trained on more voices (better on unseen voices and real speech, not on every
# measured row: model/weights/tiny-voices/README.md)
SHIPPED_WEIGHTS = {
    name: os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", name) for name in ("tiny", "tiny-voices")
}


def load_model(config: Config) -> LipSyncModel:
    """Build (and warm up) the model named by ``config.model.name``: ``identity``, ``tiny`` or
    ``tiny-voices`` (the weights shipped in model/weights/NAME; a ``model.checkpoint`` given with
    it, such as an ``enrol`` output, is used instead) or ``sayanything`` (``model.checkpoint``)."""
    mc = config.model
    if mc.name == "identity":
        from model.identity import IdentityModel

        return IdentityModel()
    if mc.name in SHIPPED_WEIGHTS and mc.checkpoint:
        model = load_model(dataclasses.replace(config, model=dataclasses.replace(mc, name="sayanything")))
        model.name = f"sayanything-{mc.name} ({os.path.basename(os.path.normpath(mc.checkpoint))})"  # type: ignore[misc]
        return model
    if mc.name in SHIPPED_WEIGHTS:
        path = SHIPPED_WEIGHTS[mc.name]
        if not os.path.isfile(os.path.join(path, "model.safetensors")):
            raise ConfigError(
                f"config key model.name = {mc.name!r}: the shipped weights are missing from this install ({path}): "
                "reinstall sayanything-live"
            )
        config = dataclasses.replace(config, model=dataclasses.replace(mc, name="sayanything", checkpoint=path))
        model = load_model(config)
        model.name = f"sayanything-{mc.name} (shipped)"  # type: ignore[misc]
        return model
    if mc.name == "sayanything":
        if not mc.checkpoint or not os.path.isdir(mc.checkpoint):
            raise ConfigError(
                f"config key model.checkpoint = {mc.checkpoint!r} is not a folder: set it to a local "
                "SayAnything checkpoint (config.json + model.safetensors)"
            )
        from model.checkpoint import load_checkpoint
        from model.pipeline import SayAnythingPipeline

        net = load_checkpoint(mc.checkpoint)
        a = net.config.audio
        for key, have, want in [
            ("chunk.audio_before_ms", config.chunk.audio_before_ms, a.window_before_ms),
            ("chunk.audio_after_ms", config.chunk.audio_after_ms, a.window_after_ms),
        ]:
            if have != want:
                raise ConfigError(
                    f"config key {key} = {have} does not match the checkpoint's audio window "
                    f"({want} ms): set {key}={want}"
                )
        pipe = SayAnythingPipeline.from_config(net, mc)
        if mc.detail == "auto":
            from model.detail import load_detail

            pipe.detail = load_detail(mc.checkpoint)
        pipe.warmup(mc.steps)
        return pipe
    raise ConfigError(
        f"config key model.name = {mc.name!r} is unknown: allowed 'identity', 'tiny', 'tiny-voices', 'sayanything'"
    )
