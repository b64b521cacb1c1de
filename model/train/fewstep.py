"""Direct few-step training of the tiny model (v2 recipe), on cached VAE latents.

The model is trained at the noise levels its few-step sampler actually visits (sigma_max for
the first step, the second step's sigma, and some log-normal draws around them) to predict the
clean latent, with the consistency parameterisation the engine's sampler expects. With the
masked frame, the reference and the mouth parameters predicted from the audio all given, the
mouth is close to a deterministic function of the conditions, and regressing it at the
sampler's own sigmas is what the few steps need; Garcia et al. 2024 ("Fine-tuning
image-conditional diffusion models is easier than you think", arXiv 2409.11355) found the same
for deterministic single-step use of a diffusion model. It needs no teacher.

Losses: mouth-weighted latent MSE + an auxiliary loss on the audio encoder's mouth head (the
truth is known). AdamW with warm-up and cosine decay, EMA weights (what is saved and shipped).

Budget: the VAE is frozen, so the latents of the targets, of the masked inputs and of the
references are computed once (``LatentSet``, cached as .npz) and a training step runs only the
UNet, the ID-guider and the audio encoder. Every ``save_every`` steps the run writes its EMA
weights as a checkpoint plus ``fewstep_state.pt`` (weights, EMA, optimizer, step, RNG); run
again with the same ``out`` and it resumes there.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model.checkpoint import save_checkpoint
from model.conditioning import MouthAudioEncoder
from model.network import Conditions, SayAnythingModel
from model.sampler import ConsistencySampler
from model.train.audio import mouth_loss
from model.train.dataset import ChunkSet, NpzRecord

log = logging.getLogger(__name__)
STATE = "fewstep_state.pt"


@dataclass
class LatentSet(NpzRecord):
    """A ChunkSet's frozen-VAE latents, plus what training needs besides them."""

    target: np.ndarray  # (N, L, C, h, w) float16 latents of the true frames
    masked: np.ndarray  # (N, L, C, h, w) float16 latents of the input frames with the mask blanked
    mask: np.ndarray  # (N, L, 1, h, w) uint8 mask at latent resolution (max-pooled)
    reference: np.ndarray  # (N, C, h, w) float16 latent of the reference crop
    audio: np.ndarray  # (N, L, n) float16 windows
    mouth: np.ndarray  # (N, L, 4) float32 truth

    def __len__(self) -> int:
        return self.target.shape[0]


def _px(a: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]."""
    t = torch.from_numpy(a).float() / 127.5 - 1.0
    return t.movedim(-1, -3)


@torch.inference_mode()
def encode_latents(model: SayAnythingModel, data: ChunkSet, batch: int = 16) -> LatentSet:
    vae = model.vae.eval()
    tgt, msk, mlat, ref = [], [], [], []
    for k in range(0, len(data), batch):
        sl = slice(k, k + batch)
        frames, inputs = _px(data.frames[sl]), _px(data.inputs[sl])
        m = torch.from_numpy(data.masks[sl]).float()[:, :, None]
        tgt.append(vae.encode(frames).half().numpy())
        masked = vae.encode(inputs * (1.0 - m))
        msk.append(masked.half().numpy())
        h, w = masked.shape[-2:]
        mlat.append(F.adaptive_max_pool2d(m.flatten(0, 1), (h, w)).reshape(*m.shape[:3], h, w).to(torch.uint8).numpy())
        ref.append(vae.encode(_px(data.reference[sl])[:, None])[:, 0].half().numpy())
    return LatentSet(
        np.concatenate(tgt), np.concatenate(msk), np.concatenate(mlat), np.concatenate(ref), data.audio, data.mouth
    )


@dataclass(frozen=True)
class FewStepConfig:
    steps: int = 1500
    batch_size: int = 4
    lr: float = 2e-4
    audio_lr: float = 5e-4
    warmup: int = 50
    ema_decay: float = 0.995
    aux_weight: float = 0.5  # the audio encoder's mouth-head loss
    p_first: float = 0.5  # share of samples at sigma_max (the first step)
    p_second: float = 0.3  # ... at the second step's sigma; the rest log-normal
    save_every: int = 100
    seed: int = 0
    # mouth_film models: the share of samples whose FiLM is given the true mouth parameters
    # instead of the audio head's prediction, so the UNet learns to follow them exactly
    truth_mouth: float = 0.0
    # weight of an L1 loss in pixels on the mask's box (both latents through the frozen decoder)
    pixel_weight: float = 0.0


def _sigmas(model: SayAnythingModel, n: int, tc: FewStepConfig, gen: torch.Generator) -> torch.Tensor:
    c = model.config
    s = ConsistencySampler(c.sigma_min, c.sigma_max, base_steps=c.distill_base_steps)
    s.set_timesteps(2)
    first, second = float(s.timesteps[0]), float(s.timesteps[1])
    u = torch.rand(n, generator=gen)
    lognormal = torch.exp(torch.randn(n, generator=gen) * 1.2 + 0.5).clamp(c.sigma_min * 10, c.sigma_max)
    return torch.where(u < tc.p_first, first, torch.where(u < tc.p_first + tc.p_second, second, lognormal))


def _lr(step: int, tc: FewStepConfig) -> float:
    if step < tc.warmup:
        return (step + 1) / tc.warmup
    t = (step - tc.warmup) / max(1, tc.steps - tc.warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def train_fewstep(
    model: SayAnythingModel,
    data: LatentSet,
    tc: FewStepConfig,
    out: str,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> SayAnythingModel:
    """Train ``model`` (a consistency-parameterised SayAnythingModel) in place; return the EMA."""
    os.makedirs(out, exist_ok=True)
    model.vae.requires_grad_(False)
    audio_params = list(model.audio_encoder.parameters())
    other = [p for n, p in model.named_parameters() if not n.startswith(("vae.", "audio_encoder."))]
    opt = torch.optim.AdamW(
        [{"params": other, "lr": tc.lr}, {"params": audio_params, "lr": tc.audio_lr}], weight_decay=1e-4
    )
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    step = 0
    gen = torch.Generator().manual_seed(tc.seed)
    path = os.path.join(out, STATE)
    if os.path.isfile(path):
        st = torch.load(path, weights_only=False)
        model.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        step = int(st["step"])
        log.info("resumed %s at step %d", out, step)
    model.train()
    model.vae.eval()
    enc = model.audio_encoder
    n = len(data)
    while step < tc.steps:
        for g, base in zip(opt.param_groups, (tc.lr, tc.audio_lr), strict=True):
            g["lr"] = base * _lr(step, tc)
        idx = torch.randint(0, n, (tc.batch_size,), generator=gen).numpy()
        x0 = torch.from_numpy(data.target[idx]).float()
        masked = torch.from_numpy(data.masked[idx]).float()
        mlat = torch.from_numpy(data.mask[idx]).float()
        audio = torch.from_numpy(data.audio[idx].astype(np.float32))
        mouth = torch.from_numpy(data.mouth[idx])
        ref = torch.from_numpy(data.reference[idx]).float()
        film = None
        if isinstance(enc, MouthAudioEncoder):
            tokens, pred_mouth = enc.features(audio)
            aux = mouth_loss(pred_mouth, mouth)
            if model.config.mouth_film:
                forced = (torch.rand(tc.batch_size, generator=gen) < tc.truth_mouth).float().reshape(-1, 1, 1)
                film = forced * mouth + (1 - forced) * pred_mouth
        else:
            tokens, aux = enc(audio), torch.zeros(())
        cond = Conditions(masked, mlat, tokens, model.id_guider(ref), film)
        sigma = _sigmas(model, tc.batch_size, tc, gen)
        noise = torch.randn(x0.shape, generator=gen)
        d = model.denoise(x0 + sigma.reshape(-1, 1, 1, 1, 1) * noise, sigma, cond)
        region = 0.05 + mlat
        rec = (region * (d - x0) ** 2).sum() / (region.sum() * x0.shape[2])
        loss = rec + tc.aux_weight * aux
        pix = _pixel_loss(model, d, x0, mlat) if tc.pixel_weight > 0 else torch.zeros(())
        loss = loss + tc.pixel_weight * pix
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            decay = min(tc.ema_decay, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - decay)
        if progress:
            progress(
                step,
                {"loss": float(loss.item()), "rec": float(rec.item()), "aux": float(aux.item()), "pix": float(pix.item())},
            )
        if step % tc.save_every == 0 or step == tc.steps:
            _save(model, ema, opt, gen, step, out)
    return ema


def _pixel_loss(model: SayAnythingModel, d: torch.Tensor, x0: torch.Tensor, mlat: torch.Tensor) -> torch.Tensor:
    """Mask-weighted L1 in pixels over the box holding the batch's masks (plus the decoder's
    margin), prediction and target through the same frozen decoder."""
    from model.pipeline import DECODE_MARGIN

    lat = mlat.amax(dim=(0, 1, 2))
    rows, cols = torch.nonzero(lat.sum(1)).flatten(), torch.nonzero(lat.sum(0)).flatten()
    if rows.numel() == 0:
        return torch.zeros(())
    h, w = lat.shape
    k = DECODE_MARGIN
    y0, y1 = max(0, int(rows[0]) - k), min(h, int(rows[-1]) + 1 + k)
    x0_, x1 = max(0, int(cols[0]) - k), min(w, int(cols[-1]) + 1 + k)
    box = (..., slice(y0, y1), slice(x0_, x1))
    pred = model.vae.decode(d[box].contiguous())
    with torch.no_grad():
        tgt = model.vae.decode(x0[box].contiguous())
    f = pred.shape[-1] // (x1 - x0_)
    m = F.interpolate(mlat[box].flatten(0, 1), scale_factor=f, mode="nearest").reshape(*pred.shape[:2], 1, *pred.shape[-2:])
    return (m * (pred - tgt).abs()).sum() / (m.sum() * 3 + 1e-6)


def _save(
    model: SayAnythingModel,
    ema: SayAnythingModel,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    step: int,
    out: str,
) -> None:
    save_checkpoint(ema, out)
    tmp = os.path.join(out, STATE + ".tmp")
    torch.save(
        {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
         "step": step},
        tmp,
    )  # fmt: skip
    os.replace(tmp, os.path.join(out, STATE))
