"""Conditioning modules: audio encoders (per-frame tokens for cross-attention) and the
ID-guider (identity features from the reference frame). Tensors in, tensors out."""

from __future__ import annotations

import math

import torch
from torch import nn

from model.configs import AudioEncoderConfig
from stream.errors import ModelError

SAMPLE_RATE_HZ = 16000


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int = SAMPLE_RATE_HZ) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale."""
    hz_to_mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
    mels = torch.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (bins[None] - lo) / (mid - lo)
    down = (hi - bins[None]) / (hi - mid)
    return torch.clamp(torch.minimum(up, down), min=0.0)


class MelAudioEncoder(nn.Module):
    """Log-mel window around each frame -> ``tokens_per_frame`` tokens of ``dim``.

    Input (B, F, n_samples) 16 kHz windows (``window_before_ms`` + ``window_after_ms`` long);
    output (B, F, tokens_per_frame, dim)."""

    def __init__(self, config: AudioEncoderConfig, dim: int) -> None:
        super().__init__()
        self.config = config
        self.n_fft, self.hop = 400, 160  # 25 ms windows every 10 ms
        self.fbank: torch.Tensor
        self.window: torch.Tensor
        self.register_buffer("fbank", mel_filterbank(self.n_fft, config.n_mels), persistent=False)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        h = config.hidden
        self.net = nn.Sequential(
            nn.Conv1d(config.n_mels, h, 3, padding=1),
            nn.SiLU(),
            nn.Conv1d(h, h, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv1d(h, h, 3, stride=2, padding=1),
            nn.SiLU(),
        )
        self.pool = nn.AdaptiveAvgPool1d(config.tokens_per_frame)
        self.proj = nn.Linear(h, dim)
        self.norm = nn.LayerNorm(dim)

    def log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        x = audio.reshape(-1, audio.shape[-1]).float()
        # the buffers follow model.to(dtype); the STFT and filterbank always run in float32
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window.float(), center=True, return_complex=True)
        mel = self.fbank.float() @ spec.abs().pow(2)
        return torch.log(mel + 1e-6)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        b, f = audio.shape[:2]
        mel = self.log_mel(audio).to(self.proj.weight.dtype)
        h = self.pool(self.net(mel)).transpose(1, 2)  # (B*F, tokens, hidden)
        return self.norm(self.proj(h)).reshape(b, f, self.config.tokens_per_frame, -1)


class WhisperAudioEncoder(nn.Module):
    """A Whisper encoder loaded from a local folder (``config.whisper_path``, a transformers
    Whisper checkpoint). Each frame's window is encoded; the hidden states are pooled to
    ``tokens_per_frame`` tokens and projected to ``dim``. Nothing is downloaded."""

    def __init__(self, config: AudioEncoderConfig, dim: int) -> None:
        super().__init__()
        import os

        if not config.whisper_path or not os.path.isdir(config.whisper_path):
            raise ModelError(
                f"audio encoder 'whisper' needs audio.whisper_path = a local Whisper folder, got "
                f"{config.whisper_path!r}: set it, or use audio kind 'mel'"
            )
        try:
            from transformers import WhisperFeatureExtractor, WhisperModel
        except ImportError:
            raise ModelError("audio encoder 'whisper' needs transformers: pip install transformers") from None
        self.extractor = WhisperFeatureExtractor.from_pretrained(config.whisper_path, local_files_only=True)
        self.encoder = WhisperModel.from_pretrained(config.whisper_path, local_files_only=True).encoder
        self.encoder.requires_grad_(False)
        self.config = config
        self.pool = nn.AdaptiveAvgPool1d(config.tokens_per_frame)
        self.proj = nn.Linear(self.encoder.config.d_model, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        b, f, n = audio.shape
        feats = self.extractor(
            list(audio.reshape(b * f, n).float().cpu().numpy()), sampling_rate=SAMPLE_RATE_HZ, return_tensors="pt"
        ).input_features.to(audio.device, self.proj.weight.dtype)
        hidden = self.encoder(feats).last_hidden_state  # (B*F, 1500, d) for 30 s padding
        used = max(1, math.ceil(n / SAMPLE_RATE_HZ * 50))  # Whisper encoder frames are 20 ms
        h = self.pool(hidden[:, :used].transpose(1, 2)).transpose(1, 2)
        return self.norm(self.proj(h)).reshape(b, f, self.config.tokens_per_frame, -1)


MOUTH_PARAMS = 4  # open, width, round, lip_bite (model/train/synth.py)


def _mouth_trunk(config: AudioEncoderConfig) -> tuple[nn.Sequential, nn.ModuleList, nn.Sequential]:
    """The ``mouth`` encoder's conv trunk (5 layers, residual) and its head."""
    h = config.hidden
    net = nn.Sequential(
        nn.Conv1d(config.n_mels, h, 5, padding=2),
        nn.SiLU(),
        nn.Conv1d(h, h, 3, stride=2, padding=1),
        nn.SiLU(),
    )
    blocks = nn.ModuleList(
        nn.Sequential(nn.Conv1d(h, h, 3, padding=1), nn.SiLU(), nn.Conv1d(h, h, 3, padding=1)) for _ in range(2)
    )
    head = nn.Sequential(nn.Linear(2 * h, h), nn.SiLU(), nn.Linear(h, MOUTH_PARAMS))
    return net, blocks, head


class _MouthTrunk(nn.Module):
    """One more trunk and head of a ``mouth`` encoder (``AudioEncoderConfig.extra_heads``)."""

    def __init__(self, config: AudioEncoderConfig) -> None:
        super().__init__()
        self.net, self.blocks, self.head = _mouth_trunk(config)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return _predict(self.net, self.blocks, self.head, mel)[1]


def _predict(
    net: nn.Module, blocks: nn.ModuleList, head: nn.Module, mel: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised log-mel (B*F, n_mels, T) -> the trunk's features and the head's mouth parameters (B*F, 4)."""
    x = net(mel)
    for blk in blocks:
        x = x + blk(x)
    x = torch.nn.functional.silu(x)
    centre = x[:, :, (x.shape[-1] * 5) // 7]  # the frame's own time (200 of 280 ms into the window)
    return x, head(torch.cat([x.mean(dim=-1), centre], dim=-1))


class MouthAudioEncoder(MelAudioEncoder):
    """Log-mel window -> (tokens, mouth parameters). A deeper conv trunk than ``mel`` (5 layers,
    residual), a head predicting the frame's 4 mouth parameters, and tokens that carry both the
    pooled trunk features and that prediction (embedded and added to every token), so the
    denoiser is told the opening outright and can still read finer cues from the features.

    The head is what the audio pre-training supervises (``model/train/audio.py``) and what the
    diffusion training keeps honest with an auxiliary loss."""

    def __init__(self, config: AudioEncoderConfig, dim: int) -> None:
        super().__init__(config, dim)
        if config.extra_heads and not config.mouth_only:
            raise ModelError(
                "audio.extra_heads needs audio.mouth_only = true (the tokens then carry the mean "
                "prediction alone): set extra_heads = 0"
            )
        self.net, self.blocks, self.head = _mouth_trunk(config)
        # more trunks and heads (``extra_heads``); the mouth parameters are every head's mean
        self.extra = nn.ModuleList(_MouthTrunk(config) for _ in range(config.extra_heads))
        self.mouth_embed = nn.Linear(MOUTH_PARAMS, dim)
        if config.mouth_only:
            # per-token detail on top of ``mouth_embed``; zero at the start, so a model converted
            # from a trained ``mouth`` one starts from that model's mouth part of its tokens
            last = nn.Linear(dim, config.tokens_per_frame * dim)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.mouth_tokens = nn.Sequential(nn.Linear(MOUTH_PARAMS, dim), nn.SiLU(), last)

    def features(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (B, F, n) -> tokens (B, F, tokens_per_frame, dim), mouth (B, F, 4)."""
        b, f = audio.shape[:2]
        mel = self.log_mel(audio).to(self.proj.weight.dtype)
        mel = (mel + 5.0) / 4.0  # log-mel of speech spans about -13..3: bring it near unit scale
        x, mouth = _predict(self.net, self.blocks, self.head, mel)
        if self.extra:
            preds = [mouth, *(e(mel) for e in self.extra)]
            mouth = torch.stack(preds).mean(dim=0)
        mouth = mouth.reshape(b, f, MOUTH_PARAMS)
        if self.config.mouth_only:
            return self.tokens_from_mouth(mouth), mouth
        tok = self.proj(self.pool(x).transpose(1, 2)) + self.mouth_embed(mouth.flatten(0, 1))[:, None]
        return self.norm(tok).reshape(b, f, self.config.tokens_per_frame, -1), mouth

    def tokens_from_mouth(self, mouth: torch.Tensor) -> torch.Tensor:
        """``mouth_only``: mouth parameters (B, F, 4) -> tokens (B, F, tokens_per_frame, dim)."""
        b, f = mouth.shape[:2]
        n = self.config.tokens_per_frame
        tok = self.mouth_embed(mouth)[:, :, None] + self.mouth_tokens(mouth).reshape(b, f, n, -1)
        return self.norm(tok)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.features(audio)[0]


def build_audio_encoder(config: AudioEncoderConfig, dim: int) -> nn.Module:
    if config.kind == "whisper":
        return WhisperAudioEncoder(config, dim)
    if config.kind == "mouth":
        return MouthAudioEncoder(config, dim)
    return MelAudioEncoder(config, dim)


class IDGuider(nn.Module):
    """Identity features from the reference frame's latent, one per UNet resolution level.

    A small conv encoder; each level ends in a zero-initialised 1x1 projection to the width of
    the UNet input at that level, so a fresh ID-guider leaves the UNet's output unchanged and
    training learns how strongly identity is injected. ``scale`` weighs it at inference."""

    def __init__(self, latent_channels: int, channels: tuple[int, ...], unet_widths: tuple[int, ...]) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        self.proj = nn.ModuleList()
        c_in = latent_channels
        for i, (c, w) in enumerate(zip(channels, unet_widths, strict=True)):
            self.stages.append(
                nn.Sequential(
                    nn.Conv2d(c_in, c, 3, stride=1 if i == 0 else 2, padding=1),
                    nn.SiLU(),
                    nn.Conv2d(c, c, 3, padding=1),
                    nn.SiLU(),
                )
            )
            p = nn.Conv2d(c, w, 1)
            nn.init.zeros_(p.weight)
            assert p.bias is not None
            nn.init.zeros_(p.bias)
            self.proj.append(p)
            c_in = c

    def forward(self, ref_latent: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        h = ref_latent
        for stage, proj in zip(self.stages, self.proj, strict=True):
            h = stage(h)
            feats.append(proj(h))
        return feats
