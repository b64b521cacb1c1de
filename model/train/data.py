"""Training batches from a video file and an audio file, cut exactly as the engine cuts them:
face crops, mouth masks, per-frame audio windows from the continuous 16 kHz stream."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch

from model.configs import SayAnythingConfig
from stream.audio import AudioInput, AudioRing
from stream.chunker import audio_windows
from stream.config import FaceConfig
from stream.errors import InputError
from stream.face import FaceCropper, FaceTracker
from stream.frames import AudioFrame
from stream.sources.file import probe_video, read_audio, video_timeline


def clip_chunks(
    video: str, audio: str, config: SayAnythingConfig, face: FaceConfig | None = None
) -> dict[str, torch.Tensor]:
    """All complete chunks of ``config.chunk_frames`` face frames of the clip, as tensors:
    frames (N, F, 3, R, R) and reference (N, 3, R, R) in [-1, 1], masks (N, F, 1, R, R),
    audio (N, F, n)."""
    face = face or FaceConfig()
    info = probe_video(video)
    samples, rate = read_audio(audio)
    ring = AudioRing(int(samples.shape[0] / rate * 1000) + 2000)
    inp = AudioInput(ring)
    inp.push(AudioFrame(samples, rate, 0, Fraction(1, rate)))
    inp.close()
    tracker = FaceTracker(face)
    cropper = FaceCropper(face, config.resolution_px, config.mask_scale, config.crop_zoom)
    crops, masks, times = [], [], []
    for vf in video_timeline(video, info.fps, samples.shape[0] / rate, "hold"):
        state = tracker.update(vf.image)
        if state is None:
            continue
        crops.append(cropper.crop(vf.image, state))
        masks.append(cropper.mouth_mask(state) > 0.02)
        times.append(vf.time_s)
    L = config.chunk_frames
    n = len(crops) // L
    if n == 0:
        raise InputError(
            f"video file {video} has fewer than {L} frames with a face: use a longer clip with a visible face"
        )
    a = config.audio
    win = audio_windows(ring, np.array(times[: n * L]), a.window_before_ms, a.window_after_ms)
    frames = torch.from_numpy(np.stack(crops[: n * L])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    frames = frames.reshape(n, L, 3, config.resolution_px, config.resolution_px)
    return {
        "frames": frames,
        "masks": torch.from_numpy(np.stack(masks[: n * L])).float().reshape(n, L, 1, *masks[0].shape),
        "audio": torch.from_numpy(win).reshape(n, L, -1),
        "reference": frames[:, 0].clone(),
    }
