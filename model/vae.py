"""VAEs: SVD's temporal-decoder VAE for ``full``; a small diffusers AutoencoderKL for ``tiny``; and
the context head that corrects what the decoder draws in the mask from the pixels around it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


class ContextHead(nn.Module):
    """A residual correction of the decoded mask region, at the crop's resolution, from what the
    engine has in pixels: the decoder loses detail and colour in the 4x-smaller latent (its own
    round trip of a crop's mask region measured 25.6 dB on development chunks), and what it loses
    is partly in the pixels the engine holds anyway. Per frame it reads the decoded pixels, the
    input crop with the mask blanked and the mask (the skin and light around the mouth; when
    dubbing the input's jaw shows another mouth, so training feeds an unrelated mouth there), and
    the reference crop with its own decoder error (reference pixels minus the decoder's drawing
    of the reference's latent: what this face loses in the decoder, as a pattern to undo). Three
    3x3 convolutions; the last starts at zero, so an untrained head changes nothing. ``gap``:
    pixels of the input blanked beyond the mask as well."""

    IN_CHANNELS = 3 + 3 + 1 + 3 + 3

    def __init__(self, channels: int, gap: int = 0) -> None:
        super().__init__()
        self.gap = gap
        self.conv_in = nn.Conv2d(self.IN_CHANNELS, channels, 3, padding=1)
        self.conv_mid = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_out = nn.Conv2d(channels, 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)  # type: ignore[arg-type]

    def forward(
        self,
        decoded: torch.Tensor,
        frames: torch.Tensor,
        masks: torch.Tensor,
        ref: torch.Tensor,
        ref_decoded: torch.Tensor,
    ) -> torch.Tensor:
        """decoded, frames (N, 3, H, W) in [-1, 1]; masks (N, 1, H, W) in {0, 1}; ref, ref_decoded
        (N or 1, 3, H, W): the reference crop and the decoder's drawing of its latent, over the
        same box -> the corrected decoded pixels (N, 3, H, W)."""
        n = decoded.shape[0]
        ref, ref_decoded = ref.expand(n, -1, -1, -1), ref_decoded.expand(n, -1, -1, -1)
        blank = masks
        if self.gap > 0:
            g = min(self.gap, max(masks.shape[-2:]))
            blank = F.max_pool2d(masks, 2 * g + 1, stride=1, padding=g)
        x = torch.cat([decoded, frames * (1.0 - blank), masks, ref, ref - ref_decoded], dim=1)
        return decoded + self.conv_out(F.silu(self.conv_mid(F.silu(self.conv_in(x)))))
