"""VAEs: SVD's temporal-decoder VAE for ``full``; a small diffusers AutoencoderKL for ``tiny``."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder
from torch import nn

from model.configs import VAEConfig


class VideoVAE(nn.Module):
    """Encodes/decodes (B, F, 3, H, W) frames in [-1, 1] to/from scaled latents (B, F, C, h, w)."""

    def __init__(self, config: VAEConfig, resolution_px: int) -> None:
        super().__init__()
        self.config = config
        self.model: AutoencoderKL | AutoencoderKLTemporalDecoder
        if config.kind == "svd":
            self.model = AutoencoderKLTemporalDecoder(
                block_out_channels=config.block_out_channels,
                down_block_types=("DownEncoderBlock2D",) * len(config.block_out_channels),
                layers_per_block=config.layers_per_block,
                latent_channels=config.latent_channels,
                sample_size=resolution_px,
                scaling_factor=config.scaling_factor,
            )
        else:
            n = len(config.block_out_channels)
            self.model = AutoencoderKL(
                down_block_types=("DownEncoderBlock2D",) * n,
                up_block_types=("UpDecoderBlock2D",) * n,
                block_out_channels=config.block_out_channels,
                layers_per_block=config.layers_per_block,
                latent_channels=config.latent_channels,
                norm_num_groups=min(32, min(config.block_out_channels)),
                sample_size=resolution_px,
                scaling_factor=config.scaling_factor,
            )

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        b, f = frames.shape[:2]
        mean = self.model.encode(frames.flatten(0, 1)).latent_dist.mode()
        return (mean * self.config.scaling_factor).reshape(b, f, *mean.shape[1:])

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        b, f = latents.shape[:2]
        z = latents.flatten(0, 1) / self.config.scaling_factor
        if isinstance(self.model, AutoencoderKLTemporalDecoder):
            x = self.model.decode(z, num_frames=f).sample
        else:
            x = self.model.decode(z).sample
        return x.reshape(b, f, *x.shape[1:])
