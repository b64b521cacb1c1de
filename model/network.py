"""The whole SayAnything model: VAE, audio encoder, ID-guider and UNet, with EDM-style
preconditioning. ``denoise`` maps a noisy latent video at noise level sigma to a clean one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.conditioning import IDGuider, MouthAudioEncoder, build_audio_encoder
from model.configs import SayAnythingConfig
from model.unet import SayAnythingUNet
from model.vae import ContextHead, VideoVAE

# SVD's micro-conditioning (fps - 1, motion bucket, noise augmentation) kept at fixed values so
# that SVD's add_embedding weights stay meaningful when a full model starts from SVD.
ADDED_TIME_IDS = (24.0, 127.0, 0.0)


@dataclass
class Conditions:
    """Everything the denoiser is conditioned on for one batch of chunks."""

    masked_latents: torch.Tensor  # (B, F, C, h, w): latents of the frames with the mouth blanked
    mask_latent: torch.Tensor  # (B, F, 1, h, w): editing region at latent resolution
    audio_tokens: torch.Tensor  # (B, F, S, D)
    id_features: list[torch.Tensor]  # per UNet level, (B, C_l, h_l, w_l)
    mouth: torch.Tensor | None = None  # (B, F, 4) mouth parameters predicted from the audio (mouth_film)

    def without_audio(self) -> Conditions:
        mouth = None if self.mouth is None else torch.zeros_like(self.mouth)
        return Conditions(
            self.masked_latents, self.mask_latent, torch.zeros_like(self.audio_tokens), self.id_features, mouth
        )

    def without_reference(self) -> Conditions:
        return Conditions(
            self.masked_latents,
            self.mask_latent,
            self.audio_tokens,
            [torch.zeros_like(f) for f in self.id_features],
            self.mouth,
        )


class SayAnythingModel(nn.Module):
    def __init__(self, config: SayAnythingConfig) -> None:
        super().__init__()
        self.config = config
        self.vae = VideoVAE(config.vae, config.resolution_px)
        self.unet = SayAnythingUNet.from_config_obj(config)
        self.id_guider = IDGuider(
            config.vae.latent_channels, config.id_guider_channels, SayAnythingUNet.level_widths(config)
        )
        self.audio_encoder = build_audio_encoder(config.audio, config.unet.cross_attention_dim)
        self.context_head = (
            ContextHead(config.decoder_head, config.decoder_head_gap) if config.decoder_head > 0 else None
        )

    # -- conditioning ----------------------------------------------------------------
    def encode_reference(self, reference: torch.Tensor) -> list[torch.Tensor]:
        """reference (B, 3, H, W) in [-1, 1] -> ID-guider features."""
        return self.id_guider(self.vae.encode(reference[:, None])[:, 0])

    def conditions(
        self,
        frames: torch.Tensor,
        masks: torch.Tensor,
        audio: torch.Tensor,
        id_features: list[torch.Tensor],
        masked_latents: torch.Tensor | None = None,
        mouth_gain: float | None = None,
    ) -> Conditions:
        """frames (B, F, 3, H, W) in [-1, 1]; masks (B, F, 1, H, W) in {0, 1}; audio (B, F, n).
        ``masked_latents``: ``vae.encode(frames * (1 - masks))`` when the caller already has it.
        ``mouth_gain``: the opening's calibration (default: ``config.mouth_gain``)."""
        masked = self.vae.encode(frames * (1.0 - masks)) if masked_latents is None else masked_latents
        h, w = masked.shape[-2:]
        mask_lat = F.adaptive_max_pool2d(masks.flatten(0, 1), (h, w)).reshape(*masks.shape[:3], h, w)
        tokens, mouth = self.audio_conditions(audio, mouth_gain)
        return Conditions(masked, mask_lat.to(masked.dtype), tokens, id_features, mouth)

    def audio_conditions(
        self, audio: torch.Tensor, mouth_gain: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """audio (B, F, n) -> the denoiser's audio tokens and, for a ``mouth_film`` model, the
        mouth parameters it is given (the predicted opening times ``mouth_gain``, default
        ``config.mouth_gain``), as inference computes them."""
        enc = self.audio_encoder
        if not (self.config.mouth_film and isinstance(enc, MouthAudioEncoder)):
            return enc(audio), None
        tokens, mouth = enc.features(audio)
        gain = self.config.mouth_gain if mouth_gain is None else mouth_gain
        if gain != 1.0:
            mouth = torch.cat([mouth[..., :1] * gain, mouth[..., 1:]], dim=-1)
            if enc.config.mouth_only:
                tokens = enc.tokens_from_mouth(mouth)
        return tokens, mouth

    def rest_conditions(self, cond: Conditions) -> Conditions | None:
        """``cond`` with the mouth's opening set to 0 (the other mouth parameters as given): the
        closed mouth that ``mouth_guidance`` extrapolates away from. None for a model whose
        denoiser does not hear the mouth parameters alone (``mouth_only``)."""
        enc = self.audio_encoder
        if cond.mouth is None or not (self.config.hears_mouth_only and isinstance(enc, MouthAudioEncoder)):
            return None
        mouth = torch.cat([torch.zeros_like(cond.mouth[..., :1]), cond.mouth[..., 1:]], dim=-1)
        tokens = enc.tokens_from_mouth(mouth).to(cond.audio_tokens.dtype)
        return Conditions(cond.masked_latents, cond.mask_latent, tokens, cond.id_features, mouth)

    # -- denoiser --------------------------------------------------------------------
    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """D(x; sigma): the clean latent estimate (v-prediction preconditioning as in SVD).

        For a consistency student (``config.consistency``), the boundary-condition wrapper
        f(x, sigma) = c_skip_cm x + c_out_cm D(x; sigma) makes f(x, sigma_min) = x exactly."""
        b = x.shape[0]
        s = sigma.reshape(b, 1, 1, 1, 1).to(x.dtype)
        c_in = 1.0 / torch.sqrt(s**2 + 1.0)
        c_skip = 1.0 / (s**2 + 1.0)
        c_out = -s / torch.sqrt(s**2 + 1.0)
        c_noise = (0.25 * torch.log(sigma.float())).to(x.dtype).reshape(b)
        inp = torch.cat([c_in * x, cond.masked_latents, cond.mask_latent], dim=2)
        ids = torch.tensor(ADDED_TIME_IDS, device=x.device, dtype=x.dtype).expand(b, 3)
        out = self.unet.denoise_forward(inp, c_noise, cond.audio_tokens, ids, cond.id_features, cond.mouth)
        d = c_skip * x + c_out * out
        if not self.config.consistency:
            return d
        smin, sd = self.config.sigma_min, self.config.sigma_data
        cs = sd**2 / ((s - smin) ** 2 + sd**2)
        co = (s - smin) * sd / torch.sqrt(s**2 + sd**2)
        return cs * x + co * d

    def guided_denoise(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        cond: Conditions,
        guidance: float = 1.0,
        reference_guidance: float = 1.0,
        denoise: Callable[[torch.Tensor, torch.Tensor, Conditions], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Classifier-free guidance on audio and, optionally, on the reference:

        D = D(-a, -r) + w_r (D(-a, r) - D(-a, -r)) + w_a (D(a, r) - D(-a, r))

        (audio dropped = zero tokens, reference dropped = zero ID features). With w_r = 1 this
        is plain audio guidance, D(-a, r) + w_a (D(a, r) - D(-a, r)); with both 1, one call.
        ``denoise``: what computes D (another runtime's copy of :meth:`denoise`); this model's by default."""
        denoise = denoise or self.denoise
        if guidance == 1.0 and reference_guidance == 1.0:
            return denoise(x, sigma, cond)
        no_audio = cond.without_audio()
        variants = [cond, no_audio]
        if reference_guidance != 1.0:
            variants.append(no_audio.without_reference())
        k = len(variants)
        out = denoise(torch.cat([x] * k), torch.cat([sigma] * k), _cat(*variants)).chunk(k)
        d_full, d_ref = out[0], out[1]
        base = d_ref if k == 2 else out[2] + reference_guidance * (d_ref - out[2])
        return base + guidance * (d_full - d_ref)

    def parameter_count(self) -> dict[str, int]:
        parts: list[tuple[str, nn.Module]] = [
            ("unet", self.unet),
            ("vae", self.vae),
            ("id_guider", self.id_guider),
            ("audio_encoder", self.audio_encoder),
        ]
        if self.context_head is not None:
            parts.append(("context_head", self.context_head))
        return {name: sum(p.numel() for p in mod.parameters()) for name, mod in parts}


def _cat(*conds: Conditions) -> Conditions:
    return Conditions(
        torch.cat([c.masked_latents for c in conds]),
        torch.cat([c.mask_latent for c in conds]),
        torch.cat([c.audio_tokens for c in conds]),
        [torch.cat(level) for level in zip(*(c.id_features for c in conds), strict=True)],
        None if conds[0].mouth is None else torch.cat([c.mouth for c in conds]),  # type: ignore[misc]
    )
