"""Lip-sync models for the sayanything-live engine. ``load_model`` builds the one a config names."""

from __future__ import annotations

from stream.config import ModelConfig
from stream.errors import ConfigError
from stream.worker import LipSyncModel


def load_model(config: ModelConfig) -> LipSyncModel:
    """Build (and warm up) the model named by ``config.name``."""
    if config.name == "identity":
        from model.identity import IdentityModel

        return IdentityModel()
    raise ConfigError(f"config key model.name = {config.name!r} is unknown: allowed 'identity'")
