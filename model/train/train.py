"""Training of the tiny model on synthetic chunks: first its VAE, then the denoiser (teacher).

EDM training (Karras et al. 2022): ln(sigma) ~ N(p_mean, p_std), loss weight
(sigma^2 + 1) / sigma^2, denoising error measured mostly inside the mouth mask (the rest of
the frame is given to the model). Audio and reference are each dropped for 10 % of samples so
the teacher supports classifier-free guidance. Progress is saved every ``save_every`` steps
(weights as a checkpoint + ``train_state.json``); ``resume`` continues from there (optimizer
moments restart).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model.checkpoint import load_checkpoint, save_checkpoint
from model.configs import SayAnythingConfig
from model.network import SayAnythingModel
from model.train.dataset import ChunkSet

log = logging.getLogger(__name__)
STATE = "train_state.json"


@dataclass(frozen=True)
class TrainConfig:
    vae_steps: int = 2000
    steps: int = 4000
    batch_size: int = 8
    vae_batch_size: int = 16
    lr: float = 3e-4
    vae_lr: float = 1e-3
    p_mean: float = -0.4
    p_std: float = 1.2
    drop_audio: float = 0.1
    drop_reference: float = 0.1
    save_every: int = 500
    seed: int = 0
    device: str = "cpu"


def to_tensors(data: ChunkSet, idx: np.ndarray) -> dict[str, torch.Tensor]:
    """``frames``: the targets; ``inputs``: the video the model is given (see ``dataset``)."""
    f = torch.from_numpy(data.frames[idx]).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0
    x = torch.from_numpy(data.inputs[idx]).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0
    r = torch.from_numpy(data.reference[idx]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    m = torch.from_numpy(data.masks[idx]).float()[:, :, None]
    a = torch.from_numpy(data.audio[idx].astype(np.float32))
    return {"frames": f, "inputs": x, "masks": m, "audio": a, "reference": r}


def _state(out: str) -> dict:
    path = os.path.join(out, STATE)
    if os.path.isfile(path):
        with open(path) as fh:
            return json.load(fh)
    return {"vae_step": 0, "step": 0}


def _save(model: SayAnythingModel, out: str, state: dict) -> None:
    save_checkpoint(model, out)  # (save_checkpoint copies tensors to the CPU)
    with open(os.path.join(out, STATE), "w") as fh:
        json.dump(state, fh)


def train(
    config: SayAnythingConfig,
    data: ChunkSet,
    tc: TrainConfig,
    out: str,
    resume: bool = False,
    progress: Callable[[str, int, float], None] | None = None,
) -> SayAnythingModel:
    torch.manual_seed(tc.seed)
    state = _state(out) if resume else {"vae_step": 0, "step": 0}
    model = (
        load_checkpoint(out)
        if resume and os.path.isfile(os.path.join(out, "model.safetensors"))
        else SayAnythingModel(config)
    )
    dev = torch.device(tc.device)
    model.to(dev).train()
    rng = np.random.default_rng(tc.seed + state["vae_step"] + state["step"])
    n = len(data)

    # 1) VAE: reconstruction (mouth region weighted x4) + a small KL term
    vae = model.vae.model
    opt = torch.optim.AdamW(vae.parameters(), lr=tc.vae_lr)
    while state["vae_step"] < tc.vae_steps:
        i = rng.integers(0, n, tc.vae_batch_size)
        j = rng.integers(0, data.frames.shape[1], tc.vae_batch_size)
        x = (torch.from_numpy(data.frames[i, j]).permute(0, 3, 1, 2).float() / 127.5 - 1.0).to(dev)
        w = 1.0 + 3.0 * torch.from_numpy(data.masks[i, j]).float()[:, None].to(dev)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = (w * (rec - x).abs()).mean() + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["vae_step"] += 1
        if progress:
            progress("vae", state["vae_step"], float(loss.item()))
        if state["vae_step"] % tc.save_every == 0:
            _save(model, out, state)
    model.vae.requires_grad_(False)

    # 2) denoiser: UNet + ID-guider + audio encoder
    params = [p for name, p in model.named_parameters() if not name.startswith("vae.")]
    opt = torch.optim.AdamW(params, lr=tc.lr)
    while state["step"] < tc.steps:
        b = {k: v.to(dev) for k, v in to_tensors(data, rng.integers(0, n, tc.batch_size)).items()}
        with torch.no_grad():
            x0 = model.vae.encode(b["frames"])
        cond = model.conditions(b["inputs"], b["masks"], b["audio"], model.encode_reference(b["reference"]))
        bs = x0.shape[0]
        keep_a = (torch.rand(bs, device=dev) >= tc.drop_audio).float().reshape(bs, 1, 1, 1)
        keep_r = (torch.rand(bs, device=dev) >= tc.drop_reference).float().reshape(bs, 1, 1, 1)
        cond.audio_tokens = cond.audio_tokens * keep_a
        cond.id_features = [f * keep_r for f in cond.id_features]
        sigma = torch.exp(torch.randn(bs, device=dev) * tc.p_std + tc.p_mean)
        noisy = x0 + sigma.reshape(bs, 1, 1, 1, 1) * torch.randn_like(x0)
        d = model.denoise(noisy, sigma, cond)
        lam = ((sigma**2 + 1) / sigma**2).reshape(bs, 1, 1, 1, 1)
        region = 0.1 + cond.mask_latent  # the mouth counts; the given rest a little
        loss = (lam * region * (d - x0) ** 2).sum() / (region.sum() * x0.shape[2])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        state["step"] += 1
        if progress:
            progress("denoiser", state["step"], float(loss.item()))
        if state["step"] % tc.save_every == 0:
            _save(model, out, state)
    _save(model, out, state)
    return model.cpu().eval()


def vae_psnr(model: SayAnythingModel, data: ChunkSet, n: int = 64) -> float:
    """Reconstruction PSNR (dB) of the VAE on ``n`` crops."""
    with torch.no_grad():
        x = torch.from_numpy(data.frames[:n, 0]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        rec = model.vae.decode(model.vae.encode(x[:, None]))[:, 0].clamp(-1, 1)
        mse = F.mse_loss((rec + 1) / 2, (x + 1) / 2).item()
    return float(10 * np.log10(1.0 / max(mse, 1e-10)))
