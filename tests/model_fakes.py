"""Tiny random-weight SayAnything configs and inputs for fast model tests.

The UNet's block widths must be multiples of 32 (SVD's UNet uses 32 GroupNorm groups); the
small VAE uses ``min(32, min(widths))`` groups, so 8/16 channels are fine there.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from model.configs import TINY, SayAnythingConfig
from stream.worker import ModelChunk

AUDIO_SAMPLES = (TINY.audio.window_before_ms + TINY.audio.window_after_ms) * 16  # 16 kHz window per frame


def micro_config(resolution_px: int = 32, chunk_frames: int = 2, **changes: object) -> SayAnythingConfig:
    """A two-level UNet (32, 32), a three-level (4x down) VAE with 8/16 channels, a 16-wide
    mel encoder; the audio window is TINY's (200 ms before, 80 ms after: the engine default)."""
    return dataclasses.replace(
        TINY,
        name="micro",
        resolution_px=resolution_px,
        chunk_frames=chunk_frames,
        unet=dataclasses.replace(
            TINY.unet,
            block_out_channels=(32, 32),
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            num_attention_heads=(2, 2),
            cross_attention_dim=16,
            addition_time_embed_dim=8,
        ),
        vae=dataclasses.replace(TINY.vae, block_out_channels=(8, 16, 16)),
        audio=dataclasses.replace(TINY.audio, hidden=16, n_mels=16),
        id_guider_channels=(8, 16),
        **changes,  # type: ignore[arg-type]
    )


def box_mask(frames: int, size: int, box: tuple[int, int, int, int], value: float = 1.0) -> np.ndarray:
    """(frames, size, size) float32 masks: ``value`` inside box = (x0, y0, x1, y1), 0 outside."""
    x0, y0, x1, y1 = box
    m = np.zeros((frames, size, size), np.float32)
    m[:, y0:y1, x0:x1] = value
    return m


def make_chunk(
    config: SayAnythingConfig,
    seed: int = 0,
    box: tuple[int, int, int, int] | None = None,
    audio_seed: int | None = None,
) -> ModelChunk:
    """Random uint8 crops, a rectangular mouth mask (default: the lower-middle of the crop) and
    random 16 kHz audio windows (from ``audio_seed``, default ``seed``)."""
    L, R = config.chunk_frames, config.resolution_px
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (L, R, R, 3), dtype=np.uint8)
    if box is None:
        box = (R // 4, R // 2, 3 * R // 4, 7 * R // 8)
    arng = np.random.default_rng(seed if audio_seed is None else audio_seed)
    audio = (0.1 * arng.standard_normal((L, AUDIO_SAMPLES))).astype(np.float32)
    return ModelChunk(frames, box_mask(L, R, box), audio, np.ones(L, bool), np.arange(L) / 25.0)


def with_audio(chunk: ModelChunk, audio: np.ndarray) -> ModelChunk:
    return dataclasses.replace(chunk, audio=audio)


def with_mask(chunk: ModelChunk, masks: np.ndarray) -> ModelChunk:
    return dataclasses.replace(chunk, masks=masks)
