"""Model configurations: ``full`` (Stable Video Diffusion size) and ``tiny`` (real time on CPU).

A config is plain data; it is saved next to every checkpoint as ``config.json`` and a
checkpoint only loads into the config it was saved with.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from stream.errors import ModelError


@dataclass(frozen=True)
class UNetConfig:
    """The spatio-temporal UNet (diffusers ``UNetSpatioTemporalConditionModel`` arguments)."""

    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = (
        "CrossAttnDownBlockSpatioTemporal",
        "CrossAttnDownBlockSpatioTemporal",
        "CrossAttnDownBlockSpatioTemporal",
        "DownBlockSpatioTemporal",
    )
    up_block_types: tuple[str, ...] = (
        "UpBlockSpatioTemporal",
        "CrossAttnUpBlockSpatioTemporal",
        "CrossAttnUpBlockSpatioTemporal",
        "CrossAttnUpBlockSpatioTemporal",
    )
    layers_per_block: int = 2
    num_attention_heads: tuple[int, ...] = (5, 10, 20, 20)
    cross_attention_dim: int = 1024
    addition_time_embed_dim: int = 256


@dataclass(frozen=True)
class VAEConfig:
    """``svd``: SVD's temporal-decoder VAE (8x down, 4 latent channels). ``small``: a diffusers
    ``AutoencoderKL`` with few channels (``2 ** (len(block_out_channels) - 1)`` x down)."""

    kind: Literal["svd", "small"] = "svd"
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    scaling_factor: float = 0.18215


@dataclass(frozen=True)
class AudioEncoderConfig:
    """Per-frame audio features. ``mel``: a small encoder over a log-mel window around each frame.
    ``whisper``: a Whisper encoder loaded from a local folder (``whisper_path``).
    ``mouth``: a deeper log-mel encoder with a head that predicts the frame's mouth parameters
    (open, width, round, lip bite), pre-trained on them directly (``model/train/audio.py``); its
    prediction is part of every token."""

    kind: Literal["mel", "whisper", "mouth"] = "mel"
    n_mels: int = 40
    window_before_ms: int = 200
    window_after_ms: int = 80
    hidden: int = 256
    tokens_per_frame: int = 4
    whisper_path: str = ""
    # ``mouth`` only: the tokens carry the predicted mouth parameters alone (embedded per frame),
    # not the trunk's features, so the denoiser cannot lean on cues of the training voices and
    # language: what reaches it is what the head predicts, which holds on unseen languages
    mouth_only: bool = False
    # ``mouth`` + ``mouth_only``: this many more trunks with their heads, each from its own audio
    # pre-training; the mouth parameters are the mean of every head's prediction (an ensemble: heads
    # trained on different speech err differently, and their mean reads the opening better than
    # either; BENCHMARKS.md, "Two audio heads averaged")
    extra_heads: int = 0


@dataclass(frozen=True)
class SayAnythingConfig:
    name: str = "full"
    resolution_px: int = 512
    chunk_frames: int = 8
    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    id_guider_channels: tuple[int, ...] = (64, 128, 256, 256)  # one per UNet down block
    consistency: bool = False  # True: a distilled few-step student (consistency parameterisation)
    # True (with the ``mouth`` audio kind): the mouth parameters the audio encoder predicts are
    # also embedded into each frame's time embedding, which every UNet resnet reads (a per-frame
    # FiLM), not only into the cross-attention tokens
    mouth_film: bool = False
    # (``mouth`` audio kind) the predicted mouth opening is multiplied by this before the
    # denoiser reads it: the calibration of a model that renders less opening than it is asked
    # for on faces it has not seen (chosen on a development split, never on the test splits)
    mouth_gain: float = 1.0
    # (``mouth_only`` denoiser) the denoiser also runs with the opening set to 0 and the output is
    # taken this many times as far from that closed mouth (``SayAnythingPipeline.sample``): the
    # mouth the audio asks for gains weight against what the input's own mouth leaks through both
    # runs; 1: off (one run). Chosen on the development split, with ``mouth_gain``
    mouth_guidance: float = 1.0
    # (height, width) multipliers of the engine's lower-face mask (``stream.face.FaceCropper``)
    # that the model was trained with; the engine builds its mask with them (``face.mask_*_scale``
    # multiply on top), so a model always gets the editing region it learned to fill
    mask_scale: tuple[float, float] = (1.0, 1.0)
    # how much closer than the engine's whole-face crop the model's crop is (``FaceCropper``):
    # 1 is the whole face; above 1 the crop closes in on the lower face (the mask's centre at
    # 2), so the mouth gets zoom^2 more of the model's pixels at the same cost
    crop_zoom: float = 1.0
    # the engine pastes the model's pixels with weight min(1, paste_gain x face.mask_paste_gain x
    # the feathered mask): above 1 its pixels replace more of the input's mouth in the feather
    # (the original speaker's, when dubbing); the region the model paints is unchanged. Measured
    # with the model, like ``mouth_gain``; 1: the feathered mask as it is
    paste_gain: float = 1.0
    # channels of the context head after the VAE decoder (``model/vae.py``, ``ContextHead``): a
    # small convolution net at the crop's resolution that corrects the decoded mask region from
    # what the engine has there in pixels, not latents: the input crop around the mask, the mask,
    # and the reference crop with the decoder's own error on it. 0: no head (the decoder's pixels)
    decoder_head: int = 0
    # pixels of the input crop blanked around the mask before the context head reads it (beyond
    # the mask itself): when dubbing, the input just outside the mask is the original speaker's
    # jaw and lips. 0: only the mask is blanked; the crop's size or more: the head reads no input
    decoder_head_gap: int = 0
    distill_guidance: float = 0.0  # the audio guidance folded into a student
    distill_base_steps: int = 40  # the teacher schedule a student was distilled on (its sampler picks from it)
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 1.0

    @property
    def hears_mouth_only(self) -> bool:
        """The denoiser hears the four mouth parameters alone (tokens and FiLM): what mouth
        guidance needs, since only then can the same conditions ask for a closed mouth."""
        return self.mouth_film and self.audio.kind == "mouth" and self.audio.mouth_only

    @property
    def latent_px(self) -> int:
        down = 8 if self.vae.kind == "svd" else 2 ** (len(self.vae.block_out_channels) - 1)
        return self.resolution_px // down

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SayAnythingConfig:
        try:
            sub = {"unet": UNetConfig, "vae": VAEConfig, "audio": AudioEncoderConfig}
            kwargs: dict[str, Any] = {}
            for k, v in data.items():
                if k in sub:
                    kwargs[k] = sub[k](**{kk: tuple(vv) if isinstance(vv, list) else vv for kk, vv in v.items()})
                else:
                    kwargs[k] = tuple(v) if isinstance(v, list) else v
            config = cls(**kwargs)
        except (TypeError, AttributeError) as e:  # AttributeError: a section that is not an object
            raise ModelError(
                f"model config has an unknown or missing field ({e}): use a config.json saved by this version"
            ) from None
        if not (isinstance(config.crop_zoom, int | float) and config.crop_zoom >= 1.0):
            raise ModelError(f"model config crop_zoom {config.crop_zoom!r}: must be a number >= 1 (1: the whole face)")
        if not (isinstance(config.paste_gain, int | float) and config.paste_gain >= 1.0):
            raise ModelError(f"model config paste_gain {config.paste_gain!r}: must be a number >= 1 (1: off)")
        return config


FULL = SayAnythingConfig()

TINY = SayAnythingConfig(
    name="tiny",
    resolution_px=64,
    chunk_frames=8,
    unet=UNetConfig(
        block_out_channels=(32, 64, 96),
        down_block_types=(
            "CrossAttnDownBlockSpatioTemporal",
            "CrossAttnDownBlockSpatioTemporal",
            "DownBlockSpatioTemporal",
        ),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        layers_per_block=1,
        num_attention_heads=(2, 4, 4),
        cross_attention_dim=64,
        addition_time_embed_dim=16,
    ),
    vae=VAEConfig(
        kind="small", latent_channels=4, block_out_channels=(32, 64, 64), layers_per_block=1, scaling_factor=1.0
    ),
    audio=AudioEncoderConfig(kind="mel", n_mels=32, hidden=64, tokens_per_frame=2),
    id_guider_channels=(16, 32, 32),
)

PRESETS = {"full": FULL, "tiny": TINY}
