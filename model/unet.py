"""The SayAnything denoiser network: Stable Video Diffusion's spatio-temporal UNet with

- editing control: input channels = noisy latents + masked-frame latents + latent mask;
- identity: ID-guider features added to the UNet input of each resolution level;
- audio: per-frame audio tokens as the cross-attention context of every frame (in SVD the
  context is one CLIP image embedding repeated over frames).
"""

from __future__ import annotations

import torch
from diffusers import UNetSpatioTemporalConditionModel
from torch import nn

from model.configs import SayAnythingConfig


class SayAnythingUNet(UNetSpatioTemporalConditionModel):
    """diffusers' ``UNetSpatioTemporalConditionModel`` plus :meth:`denoise_forward`, which takes
    per-frame cross-attention tokens and ID-guider residuals."""

    @classmethod
    def from_config_obj(cls, config: SayAnythingConfig) -> SayAnythingUNet:
        u = config.unet
        lc = config.vae.latent_channels
        unet = cls(
            sample_size=config.latent_px,
            in_channels=2 * lc + 1,
            out_channels=lc,
            down_block_types=u.down_block_types,
            up_block_types=u.up_block_types,
            block_out_channels=u.block_out_channels,
            addition_time_embed_dim=u.addition_time_embed_dim,
            projection_class_embeddings_input_dim=3 * u.addition_time_embed_dim,
            layers_per_block=u.layers_per_block,
            cross_attention_dim=u.cross_attention_dim,
            num_attention_heads=u.num_attention_heads,
            num_frames=config.chunk_frames,
        )
        if config.mouth_film:
            from model.conditioning import MOUTH_PARAMS

            # zero-initialised: a UNet trained without it is unchanged until training moves it
            emb = nn.Linear(MOUTH_PARAMS, u.block_out_channels[0] * 4)
            nn.init.zeros_(emb.weight)
            nn.init.zeros_(emb.bias)
            unet.mouth_embedding = emb
        return unet

    @staticmethod
    def level_widths(config: SayAnythingConfig) -> tuple[int, ...]:
        """Channel width of the UNet input at each down block (what the ID-guider adds to)."""
        c = config.unet.block_out_channels
        return (c[0], *c[:-1])

    def denoise_forward(
        self,
        sample: torch.Tensor,
        c_noise: torch.Tensor,
        context: torch.Tensor,
        added_time_ids: torch.Tensor,
        id_features: list[torch.Tensor] | None = None,
        mouth: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """sample (B, F, C_in, h, w); c_noise (B,); context (B, F, S, D) per-frame tokens;
        added_time_ids (B, 3); id_features: per level (B, C_l, h_l, w_l), shared by all frames;
        mouth (B, F, 4): per-frame mouth parameters, for a UNet built with ``mouth_film``.
        Returns (B, F, C_out, h, w)."""
        b, f = sample.shape[:2]
        t_emb = self.time_proj(c_noise.reshape(-1).expand(b)).to(sample.dtype)
        emb = self.time_embedding(t_emb)
        aug = self.add_time_proj(added_time_ids.flatten()).reshape(b, -1).to(emb.dtype)
        emb = (emb + self.add_embedding(aug)).repeat_interleave(f, dim=0)
        film = getattr(self, "mouth_embedding", None)
        if film is not None and mouth is not None:
            emb = emb + film(mouth.reshape(b * f, -1).to(emb.dtype))
        ctx = context.reshape(b * f, context.shape[2], context.shape[3])
        indicator = torch.zeros(b, f, dtype=sample.dtype, device=sample.device)

        h = self.conv_in(sample.flatten(0, 1))
        skips: tuple[torch.Tensor, ...] = (h,)
        for i, block in enumerate(self.down_blocks):
            if id_features is not None:
                h = h + id_features[i].repeat_interleave(f, dim=0)
            if getattr(block, "has_cross_attention", False):
                h, res = block(hidden_states=h, temb=emb, encoder_hidden_states=ctx, image_only_indicator=indicator)
            else:
                h, res = block(hidden_states=h, temb=emb, image_only_indicator=indicator)
            skips += res
        h = self.mid_block(hidden_states=h, temb=emb, encoder_hidden_states=ctx, image_only_indicator=indicator)
        for block in self.up_blocks:
            res = skips[-len(block.resnets) :]
            skips = skips[: -len(block.resnets)]
            if getattr(block, "has_cross_attention", False):
                h = block(
                    hidden_states=h,
                    temb=emb,
                    res_hidden_states_tuple=res,
                    encoder_hidden_states=ctx,
                    image_only_indicator=indicator,
                )
            else:
                h = block(hidden_states=h, temb=emb, res_hidden_states_tuple=res, image_only_indicator=indicator)
        h = self.conv_out(self.conv_act(self.conv_norm_out(h)))
        return h.reshape(b, f, *h.shape[1:])
