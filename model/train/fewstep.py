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
import dataclasses
import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.checkpoint import save_checkpoint
from model.conditioning import MouthAudioEncoder
from model.network import Conditions, SayAnythingModel
from model.sampler import ConsistencySampler, starting_noise
from model.train.audio import mouth_loss
from model.train.dataset import ChunkSet, NpzRecord
from model.train.shards import ShardStream
from stream.errors import InputError

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


@dataclass
class PairedLatentSet(LatentSet):
    """A LatentSet with the masked-input latents of a second input per chunk: the same clip with
    another unrelated mouth, the same crop and mask (``dataset.build_alt_inputs``)."""

    masked_alt: np.ndarray  # (N, L, C, h, w) float16


@torch.inference_mode()
def encode_masked(model: SayAnythingModel, inputs: np.ndarray, masks: np.ndarray, batch: int = 16) -> np.ndarray:
    """The frozen VAE's latents of ``inputs`` (N, L, R, R, 3) uint8 with ``masks`` (N, L, R, R)
    blanked, as ``encode_latents``' ``masked``."""
    vae = model.vae.eval()
    out = []
    for k in range(0, len(inputs), batch):
        m = torch.from_numpy(np.asarray(masks[k : k + batch])).float()[:, :, None]
        out.append(vae.encode(_px(np.asarray(inputs[k : k + batch])) * (1.0 - m)).half().numpy())
    return np.concatenate(out)


def _px(a: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]."""
    t = torch.from_numpy(a).float() / 127.5 - 1.0
    return t.movedim(-1, -3)


@torch.inference_mode()
def encode_latents(
    model: SayAnythingModel, data: ChunkSet, batch: int = 16, device: torch.device | str = "cpu"
) -> LatentSet:
    vae = model.vae.eval()
    tgt, msk, mlat, ref = [], [], [], []
    cpu = lambda t: t.half().cpu().numpy()  # noqa: E731
    for k in range(0, len(data), batch):
        sl = slice(k, k + batch)
        frames, inputs = _px(data.frames[sl]).to(device), _px(data.inputs[sl]).to(device)
        m = torch.from_numpy(data.masks[sl]).float()[:, :, None].to(device)
        tgt.append(cpu(vae.encode(frames)))
        masked = vae.encode(inputs * (1.0 - m))
        msk.append(cpu(masked))
        h, w = masked.shape[-2:]
        mlat.append(
            F.adaptive_max_pool2d(m.flatten(0, 1), (h, w)).reshape(*m.shape[:3], h, w).to(torch.uint8).cpu().numpy()
        )
        ref.append(cpu(vae.encode(_px(data.reference[sl])[:, None].to(device))[:, 0]))
    return LatentSet(
        np.concatenate(tgt), np.concatenate(msk), np.concatenate(mlat), np.concatenate(ref), data.audio, data.mouth
    )


def _feathered(mask: np.ndarray, feather_px: float) -> np.ndarray:
    """The engine's feather (``FaceCropper.mouth_mask``) and the training threshold (> 0.02)."""
    import cv2

    if feather_px > 0:
        k = 2 * math.ceil(2 * feather_px) + 1
        mask = cv2.GaussianBlur(mask, (k, k), feather_px)
    return (mask > 0.02).astype(np.uint8)


def _ellipse(size: int, centre: tuple[float, float], axes: tuple[float, float]) -> np.ndarray:
    import cv2

    m = np.zeros((size, size), np.float32)
    ax = (max(1, round(axes[0])), max(1, round(axes[1])))
    cv2.ellipse(m, (round(centre[0]), round(centre[1])), ax, 0, 0, 360, 1.0, -1)
    return m


@functools.lru_cache(maxsize=8)
def _extent(feather_px: float) -> tuple[float, float]:
    """How far the feather's 0.02 threshold reaches beyond the ellipse, (x, y) pixels."""
    ys, xs = np.nonzero(_feathered(_ellipse(64, (32, 32), (12, 9)), feather_px))
    return (xs.max() - xs.min()) / 2 - 12, (ys.max() - ys.min()) / 2 - 9


def rescaled_mask(mask: np.ndarray, scale: tuple[float, float], feather_px: float) -> np.ndarray:
    """A cached {0, 1} training mask (the engine's feathered ellipse above 0.02) redrawn for a
    mask ``scale`` (height, width) times larger, as ``FaceCropper.mouth_mask`` draws it: the
    ellipse's centre and axes are read from the mask's extent, less the feather's reach.
    Measured on tracked faces at 64 px: identical at scale 1; intersection-over-union 0.99
    (worst 0.95) with the engine's own mask at 1.2 x 1.2."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return mask
    ex, ey = _extent(feather_px)
    centre = ((xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2)
    ax, ay = (xs.max() - xs.min()) / 2 - ex, (ys.max() - ys.min()) / 2 - ey
    return _feathered(_ellipse(mask.shape[0], centre, (ax * scale[1], ay * scale[0])), feather_px)


@torch.inference_mode()
def remask_latents(
    model: SayAnythingModel, latents: LatentSet, chunk_paths: list[str], scale: tuple[float, float], batch: int = 16
) -> LatentSet:
    """``latents`` for a larger mask: the masked-input latents and latent masks re-encoded from
    the chunk caches behind them (in order), with every mask redrawn by ``rescaled_mask``; the
    targets, references, audio and truth are kept. Only a third of ``encode_latents``' work."""
    from stream.config import FaceConfig

    vae = model.vae.eval()
    feather = FaceConfig().mask_feather_px * model.config.resolution_px / 256
    msk, mlat = [], []
    for path in chunk_paths:
        with np.load(path, mmap_mode="r") as z:
            inputs, masks = z["inputs"], z["masks"]
            for k in range(0, len(masks), batch):
                new = np.stack([[rescaled_mask(m, scale, feather) for m in ch] for ch in masks[k : k + batch]])
                m = torch.from_numpy(new).float()[:, :, None]
                lat = vae.encode(_px(np.asarray(inputs[k : k + batch])) * (1.0 - m))
                msk.append(lat.half().numpy())
                h, w = lat.shape[-2:]
                pooled = F.adaptive_max_pool2d(m.flatten(0, 1), (h, w)).reshape(*m.shape[:3], h, w)
                mlat.append(pooled.to(torch.uint8).numpy())
    masked = np.concatenate(msk)
    if masked.shape != latents.masked.shape:
        raise InputError(f"the chunk caches hold {len(masked)} chunks, the latents {len(latents)}: rebuild both")
    return LatentSet(latents.target, masked, np.concatenate(mlat), latents.reference, latents.audio, latents.mouth)


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
    # Gaussian noise added to the mouth parameters the denoiser is given (mouth_film or
    # mouth_only): the head's errors on unseen voices, which training on its own voices never shows
    mouth_noise: float = 0.0
    # keep the audio encoder's trunk and head as they are (pre-trained on many languages; the
    # video clips speak a few English voices only); the mouth_only token embedding still trains
    freeze_audio: bool = False
    # weight of an L1 loss in pixels on the mask's box (both latents through the frozen decoder)
    pixel_weight: float = 0.0
    # weight of a loss on frame-to-frame latent differences in the mask (the motion, without the
    # static appearance that dominates the plain loss on unseen faces)
    delta_weight: float = 0.0
    accum: int = 1  # gradient accumulation: micro-batches per optimizer step
    bf16: bool = False  # bfloat16 autocast (GPU training of the full model)
    grad_checkpoint: bool = False  # recompute UNet activations in the backward pass
    minutes: float = 0.0  # > 0: stop (and save) after this much wall-clock time
    # non-empty: only the parameters whose names start with one of these train (the rest stay
    # fixed); enrolment trains the ID-guider alone, which sees only the reference frame and so
    # can adapt the appearance but cannot learn to read the mouth from the input video
    train_only: tuple[str, ...] = ()
    # != 1: the target is not the true latent but the starting model (frozen) run with this mouth
    # guidance, D(closed) + g (D(asked) - D(closed)) (``SayAnythingPipeline.sample``), so one
    # run of the trained model does what two of the starting model did (guidance folded in, as
    # in a distilled student); mouth_only models
    guidance_target: float = 1.0
    # > 0: the denoiser's response to the mouth (its estimate minus the same with the mouth
    # closed) is held to the frozen starting model's, with this weight, while the plain loss
    # adapts the rest: enrolment on one clip learns the face without unlearning the audio
    response_weight: float = 0.0
    # the target is the frozen starting model's estimate from the chunk's *other* input (a
    # PairedLatentSet: the same chunk with another unrelated mouth; which of the two the trained
    # model sees is drawn per sample), so what the starting model takes from the input's mouth
    # differs between input and target and averages out, and the rest of what it does is kept;
    # mouth_only models
    swap_inputs: bool = False


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


Batches = Callable[[int, torch.Generator], LatentSet]


def cached_batches(data: LatentSet) -> Batches:
    """Random batches of a cached LatentSet."""

    def get(n: int, gen: torch.Generator) -> LatentSet:
        return data.take(torch.randint(0, len(data), (n,), generator=gen).numpy())

    return get


def stream_batches(model: SayAnythingModel, stream: ShardStream) -> Batches:
    """Batches of streamed chunks (prepared real video), encoded by the frozen VAE per batch."""

    def get(n: int, gen: torch.Generator) -> LatentSet:
        dev = next(model.parameters()).device
        return encode_latents(model, stream.next(n), device=dev)

    return get


class _Step(nn.Module):
    """One training step's loss as a module, so DistributedDataParallel can wrap it (it
    all-reduces the gradients of whatever its forward used)."""

    def __init__(self, model: SayAnythingModel, tc: FewStepConfig, teacher: SayAnythingModel | None = None) -> None:
        super().__init__()
        self.model, self.tc = model, tc
        self._teacher = [teacher]  # in a list: not a submodule (DDP and the optimizer leave it alone)

    @torch.no_grad()
    def _teacher_estimate(
        self, xn: torch.Tensor, sigma: torch.Tensor, b: dict[str, torch.Tensor], given: torch.Tensor
    ) -> torch.Tensor:
        """The frozen starting model's estimate for these inputs and mouth parameters."""
        t = self._teacher[0]
        assert t is not None and isinstance(t.audio_encoder, MouthAudioEncoder)
        tokens = t.audio_encoder.tokens_from_mouth(given)
        cond = Conditions(b["masked"], b["mask"], tokens, t.id_guider(b["reference"]), given)
        return t.denoise(xn, sigma, cond).float()

    @torch.no_grad()
    def _teacher_pair(
        self, xn: torch.Tensor, sigma: torch.Tensor, b: dict[str, torch.Tensor], given: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen starting model's estimate for these inputs and mouth parameters, and the
        same with the mouth closed (the opening at 0)."""
        t = self._teacher[0]
        assert t is not None and isinstance(t.audio_encoder, MouthAudioEncoder)
        ids = t.id_guider(b["reference"])
        cond = Conditions(b["masked"], b["mask"], t.audio_encoder.tokens_from_mouth(given), ids, given)
        rest = t.rest_conditions(cond)
        assert rest is not None
        return t.denoise(xn, sigma, cond).float(), t.denoise(xn, sigma, rest).float()

    def _guided(
        self, xn: torch.Tensor, sigma: torch.Tensor, b: dict[str, torch.Tensor], given: torch.Tensor
    ) -> torch.Tensor:
        """The frozen starting model's mouth-guided estimate for these inputs and mouth parameters."""
        if self.tc.guidance_target == 1.0:  # no guidance: the estimate alone
            return self._teacher_estimate(xn, sigma, b, given.detach())
        d, d0 = self._teacher_pair(xn, sigma, b, given.detach())
        return d0 + self.tc.guidance_target * (d - d0)

    def _response(
        self,
        d: torch.Tensor,
        xn: torch.Tensor,
        sigma: torch.Tensor,
        b: dict[str, torch.Tensor],
        given: torch.Tensor,
        cond: Conditions,
    ) -> torch.Tensor:
        """Mask-weighted squared difference between the model's response to the mouth (``d``
        minus its estimate with the opening set to 0) and the frozen starting model's."""
        # the mouth closed as inference's mouth guidance closes it (a UNet without FiLM ignores ``mouth``)
        c0 = self.model.rest_conditions(dataclasses.replace(cond, mouth=given))
        assert c0 is not None
        d0 = self.model.denoise(xn, sigma, c0).float()
        td, td0 = self._teacher_pair(xn, sigma, b, given.detach())
        want = td - td0
        region = cond.mask_latent
        err = region * ((d - d0) - want) ** 2
        return (err.sum(dim=(1, 2, 3, 4)) / (region.sum(dim=(1, 2, 3, 4)) * d.shape[2] + 1e-6)).mean()

    def forward(
        self, b: dict[str, torch.Tensor], sigma: torch.Tensor, noise: torch.Tensor, forced: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        model, tc = self.model, self.tc
        enc = model.audio_encoder
        if tc.swap_inputs:
            # which of the two inputs the trained model sees (the teacher sees the other): drawn
            # per sample by the training loop, as ``b["swap"]`` (1: the second input)
            pick = b["swap"].reshape(-1, 1, 1, 1, 1) > 0.5
            b = dict(b, masked=torch.where(pick, b["masked_alt"], b["masked"]),
                     masked_other=torch.where(pick, b["masked"], b["masked_alt"]))  # fmt: skip
        x0, mlat, mouth = b["target"], b["mask"], b["mouth"]
        known = torch.isfinite(mouth).all(-1)  # real video: no mouth-parameter truth
        film = None
        if isinstance(enc, MouthAudioEncoder):
            tokens, pred_mouth = enc.features(b["audio"])
            aux = mouth_loss(pred_mouth[known], mouth[known]) if bool(known.any()) else pred_mouth.sum() * 0
            if model.config.mouth_film or enc.config.mouth_only:
                f = forced.reshape(-1, 1, 1) * known[..., None]
                given = pred_mouth.detach() if tc.freeze_audio else pred_mouth
                given = f * torch.nan_to_num(mouth) + (1 - f) * given
                if tc.mouth_noise > 0:
                    given = given + tc.mouth_noise * torch.randn_like(given)
                film = given if model.config.mouth_film else None
                if enc.config.mouth_only:
                    tokens = enc.tokens_from_mouth(given)
        else:
            tokens, aux = enc(b["audio"]), torch.zeros((), device=x0.device)
        cond = Conditions(b["masked"], mlat, tokens, model.id_guider(b["reference"]), film)
        xn = x0 + sigma.reshape(-1, 1, 1, 1, 1) * noise
        d = model.denoise(xn, sigma, cond).float()
        resp = torch.zeros((), device=x0.device)
        if tc.response_weight > 0:
            resp = self._response(d, xn, sigma, b, given, cond)
        if tc.swap_inputs:
            x0 = self._guided(xn, sigma, dict(b, masked=b["masked_other"]), given)
        elif self._teacher[0] is not None and not (tc.response_weight > 0 and tc.guidance_target == 1.0):
            # the target: the starting model's guided estimate (a teacher kept for the response
            # anchor alone leaves the target the truth)
            x0 = self._guided(xn, sigma, b, given)
        region = 0.05 + mlat
        # per sample, then averaged: the mean over ranks of per-rank means is the global mean
        rec = ((region * (d - x0) ** 2).sum(dim=(1, 2, 3, 4)) / (region.sum(dim=(1, 2, 3, 4)) * x0.shape[2])).mean()
        pix = _pixel_loss(model, d, x0, mlat) if tc.pixel_weight > 0 else torch.zeros((), device=x0.device)
        loss = rec + tc.aux_weight * aux + tc.pixel_weight * pix + tc.response_weight * resp
        if tc.delta_weight > 0 and x0.shape[1] > 1:
            rm = torch.maximum(mlat[:, 1:], mlat[:, :-1])
            err = ((d[:, 1:] - d[:, :-1]) - (x0[:, 1:] - x0[:, :-1])) ** 2
            delta = ((rm * err).sum(dim=(1, 2, 3, 4)) / (rm.sum(dim=(1, 2, 3, 4)) * x0.shape[2] + 1e-6)).mean()
            loss = loss + tc.delta_weight * delta
        return loss, rec, aux, pix


def _tensors(batch: LatentSet, device: torch.device) -> dict[str, torch.Tensor]:
    extra = {}
    if isinstance(batch, PairedLatentSet):
        extra["masked_alt"] = torch.from_numpy(batch.masked_alt).float().to(device)
    return extra | {
        "target": torch.from_numpy(batch.target).float().to(device),
        "masked": torch.from_numpy(batch.masked).float().to(device),
        "mask": torch.from_numpy(batch.mask).float().to(device),
        "audio": torch.from_numpy(batch.audio.astype(np.float32)).to(device),
        "mouth": torch.from_numpy(batch.mouth.astype(np.float32)).to(device),
        "reference": torch.from_numpy(batch.reference).float().to(device),
    }


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def fixed_loss(model: SayAnythingModel, batch: LatentSet, tc: FewStepConfig, seed: int = 1234) -> float:
    """The training loss on a fixed batch with fixed noise and sigmas (a comparable curve)."""
    gen = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    b = _tensors(batch, dev)
    sigma = _sigmas(model, len(batch), tc, gen).to(dev)
    noise = torch.randn(b["target"].shape, generator=gen).to(dev)
    was = model.training
    model.eval()
    # against the truth: the starting model that swapped inputs are scored by is not kept here
    plain = dataclasses.replace(tc, swap_inputs=False, guidance_target=1.0, response_weight=0.0)
    loss = _Step(model, plain)(b, sigma, noise, torch.zeros(len(batch), device=dev))[0]
    model.train(was)
    return float(loss)


def train_fewstep(
    model: SayAnythingModel,
    data: LatentSet | Batches,
    tc: FewStepConfig,
    out: str,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    validation: LatentSet | None = None,
) -> SayAnythingModel:
    """Train ``model`` in place on ``data`` (a cached LatentSet or a batch provider); return the EMA.

    Under ``torchrun`` (``torch.distributed`` initialised) each rank trains on its own
    batches of ``batch_size / world`` and DistributedDataParallel averages the gradients, so a
    step sees the same global batch on 1 or N processes; rank 0 writes checkpoints and the log
    (``log.jsonl``: step, loss, and with ``validation`` the loss on that fixed batch).
    ``tc.minutes`` > 0 stops at that wall-clock budget (saving first)."""
    rank, world = _world()
    if tc.batch_size % (world * tc.accum):
        raise InputError(
            f"batch size {tc.batch_size} does not split over {world} processes x {tc.accum} accumulation steps: "
            "make it a multiple of their product"
        )
    micro = tc.batch_size // (world * tc.accum)
    batches = cached_batches(data) if isinstance(data, LatentSet) else data
    dev = next(model.parameters()).device
    os.makedirs(out, exist_ok=True)
    model.vae.requires_grad_(False)
    if tc.grad_checkpoint:
        model.unet.enable_gradient_checkpointing()
    if tc.freeze_audio:
        enc = model.audio_encoder
        enc.requires_grad_(False)
        for name in ("mouth_tokens", "mouth_embed", "norm"):
            if hasattr(enc, name):
                getattr(enc, name).requires_grad_(True)
    if tc.train_only:
        for n, p in model.named_parameters():
            p.requires_grad_(n.startswith(tc.train_only))
    audio_params = [p for p in model.audio_encoder.parameters() if p.requires_grad]
    other = [p for n, p in model.named_parameters() if not n.startswith(("vae.", "audio_encoder.")) and p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": other, "lr": tc.lr}, {"params": audio_params, "lr": tc.audio_lr}], weight_decay=1e-4
    )
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    teacher = None
    if tc.swap_inputs and not isinstance(data, PairedLatentSet):
        raise InputError(
            "swap_inputs needs a second input per chunk: train on a PairedLatentSet (recipe_v2 --swap-inputs)"
        )
    if tc.guidance_target != 1.0 or tc.response_weight > 0 or tc.swap_inputs:
        if not model.config.hears_mouth_only:
            raise InputError(
                "a guidance target, a response anchor or swapped inputs need a mouth_only model "
                "(recipe_v2 --film-from CK --mouth-only)"
            )
        teacher = copy.deepcopy(model).eval().requires_grad_(False)  # the starting model, before any resume
    step = 0
    path = os.path.join(out, STATE)
    if os.path.isfile(path):
        st = torch.load(path, weights_only=False, map_location=dev)
        model.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        step = int(st["step"])
        log.info("resumed %s at step %d", out, step)
    # each rank draws its own noise and batches; a resumed run continues from a fresh seed
    gen = torch.Generator().manual_seed(hash((tc.seed, rank, step)) % 2**62)
    module: nn.Module = _Step(model, tc, teacher)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        module = DistributedDataParallel(
            module, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=True
        )
    model.train()
    model.vae.eval()
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=tc.bf16)
    t0 = time.monotonic()
    if rank == 0 and validation is not None and step == 0:
        _log(out, {"step": 0, "val": fixed_loss(model, validation, tc)})
    while step < tc.steps:
        for g, base in zip(opt.param_groups, (tc.lr, tc.audio_lr), strict=True):
            g["lr"] = base * _lr(step, tc)
        opt.zero_grad(set_to_none=True)
        sums = torch.zeros(4)
        for _ in range(tc.accum):
            b = _tensors(batches(micro, gen), dev)
            sigma = _sigmas(model, micro, tc, gen).to(dev)
            noise = torch.randn(b["target"].shape, generator=gen).to(dev)
            forced = (torch.rand(micro, generator=gen) < tc.truth_mouth).float().to(dev)
            if tc.swap_inputs:
                b["swap"] = (torch.rand(micro, generator=gen) < 0.5).float().to(dev)
            with amp:
                parts = module(b, sigma, noise, forced)
            (parts[0] / tc.accum).backward()
            sums += torch.stack([p.detach().float().cpu() for p in parts]) / tc.accum
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            decay = min(tc.ema_decay, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - decay)
        losses = dict(zip(("loss", "rec", "aux", "pix"), (float(v) for v in sums), strict=True))
        if progress and rank == 0:
            progress(step, losses)
        out_of_time = tc.minutes > 0 and (time.monotonic() - t0) / 60 >= tc.minutes
        if world > 1 and tc.minutes > 0:  # every rank stops at the same step
            import torch.distributed as dist

            flag = torch.tensor([float(out_of_time)], device=dev)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        if step % tc.save_every == 0 or step == tc.steps or out_of_time:
            if rank == 0:
                _save(model, ema, opt, step, out)
                rec = {"step": step, **{k: round(v, 5) for k, v in losses.items()}}
                if validation is not None:
                    rec["val"] = fixed_loss(model, validation, tc)
                _log(out, rec)
            if world > 1:
                import torch.distributed as dist

                dist.barrier()
        if out_of_time:
            log.info("time budget of %.1f min reached at step %d", tc.minutes, step)
            break
    return ema


def _log(out: str, rec: dict[str, float]) -> None:
    with open(os.path.join(out, "log.jsonl"), "a") as f:
        f.write(json.dumps(rec) + "\n")


def _pixel_loss(model: SayAnythingModel, d: torch.Tensor, x0: torch.Tensor, mlat: torch.Tensor) -> torch.Tensor:
    """Mask-weighted L1 in pixels over the box holding the batch's masks (plus the decoder's
    margin), prediction and target through the same frozen decoder."""
    from model.pipeline import latent_box

    found = latent_box(mlat.amax(dim=(0, 1, 2)))
    if found is None:
        return torch.zeros(())
    y0, y1, x0_, x1 = found
    box = (..., slice(y0, y1), slice(x0_, x1))
    pred = model.vae.decode(d[box].contiguous())
    with torch.no_grad():
        tgt = model.vae.decode(x0[box].contiguous())
    f = pred.shape[-1] // (x1 - x0_)
    m = F.interpolate(mlat[box].flatten(0, 1), scale_factor=f, mode="nearest").reshape(
        *pred.shape[:2], 1, *pred.shape[-2:]
    )
    return (m * (pred - tgt).abs()).sum() / (m.sum() * 3 + 1e-6)


def _save(model: SayAnythingModel, ema: SayAnythingModel, opt: torch.optim.Optimizer, step: int, out: str) -> None:
    save_checkpoint(ema, out)
    tmp = os.path.join(out, STATE + ".tmp")
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step}, tmp)
    os.replace(tmp, os.path.join(out, STATE))


@torch.no_grad()
def predicted_latents(
    model: SayAnythingModel,
    latents: LatentSet,
    batch: int = 16,
    seed: int = 0,
    shared_noise: bool = True,
    true_mouth: bool = False,
) -> np.ndarray:
    """The model's own one-step estimates of ``latents``' clean latents (float16, the shape of
    ``latents.target``), sampled as the engine samples a chunk at one step: noise at sigma_max,
    the reference through the ID-guider, the audio through the audio encoder with the model's
    ``mouth_gain``, and the engine's starting noise (the pipeline draws the same noise from
    ``seed`` for every chunk, and with ``shared_noise``, its default, one draw for every frame).
    What the engine's decoder is actually given. ``true_mouth``: the chunk's true mouth parameters
    instead of the audio head's (a ``mouth_only`` model; a diagnostic of the rendering alone)."""
    enc = model.audio_encoder
    heard = enc if isinstance(enc, MouthAudioEncoder) and enc.config.mouth_only else None
    if true_mouth and heard is None:
        raise ValueError("predicted_latents(true_mouth=True): needs a mouth_only model")
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    smax = float(model.config.sigma_max)
    one = (1, *latents.target.shape[1:])  # the noise of one chunk, the same for every chunk
    noise = starting_noise(one, torch.Generator().manual_seed(seed), smax, shared_noise)
    out = []
    try:
        for k in range(0, len(latents), batch):
            b = _tensors(latents.take(slice(k, k + batch)), dev)
            mouth: torch.Tensor | None
            if true_mouth and heard is not None:
                mouth = b["mouth"]
                tokens = heard.tokens_from_mouth(mouth)
            else:
                tokens, mouth = model.audio_conditions(b["audio"])
            cond = Conditions(b["masked"], b["mask"], tokens, model.id_guider(b["reference"]), mouth)
            x = noise.expand_as(b["target"]).to(dev)
            d = model.denoise(x, torch.full((x.shape[0],), smax, device=dev), cond)
            out.append(d.half().cpu().numpy())
    finally:
        model.train(was)
    return np.concatenate(out)


def decode_chunk_box(
    model: SayAnythingModel,
    lat: torch.Tensor,
    chunks: ChunkSet,
    latents: LatentSet,
    i: int,
    decoder_grad: bool = True,
) -> tuple[torch.Tensor, tuple[slice, slice], torch.Tensor] | None:
    """Chunk ``i``'s latents ``lat`` (1, L, C, h, w) decoded as the engine decodes them: over the
    latent box of the chunk's masks (``latent_box``), and through the context head when the model
    has one, given what the engine gives it (the chunk's input crops, its mask, and the reference
    crop with its latent decoded over the same box, in the same call). Returns the pixels (L, 3,
    H', W') in [-1, 1] (not clamped), the box's pixel slices and the mask over it (L, 1, H', W');
    None when the chunk has no mask. ``decoder_grad=False`` decodes without gradients (the head's
    still flow)."""
    from model.pipeline import latent_box

    found = latent_box(torch.from_numpy(latents.mask[i]).amax(dim=(0, 1)))
    if found is None:
        return None
    y0, y1, x0, x1 = found
    dev = lat.device
    f = chunks.frames.shape[-2] // latents.mask.shape[-1]
    px = (slice(y0 * f, y1 * f), slice(x0 * f, x1 * f))
    m = torch.from_numpy(chunks.masks[i][:, px[0], px[1]]).float()[:, None].to(dev)
    z = lat[..., y0:y1, x0:x1]
    head = model.context_head
    with torch.set_grad_enabled(decoder_grad and torch.is_grad_enabled()):
        if head is None:
            return model.vae.decode(z.contiguous())[0], px, m
        ref_z = torch.from_numpy(latents.reference[i : i + 1, None, :, y0:y1, x0:x1]).float().to(dev)
        both = model.vae.decode(torch.cat([z, ref_z], dim=1).contiguous())[0]
    n = z.shape[1]
    ins, ref = _px(chunks.inputs[i][:, px[0], px[1]]).to(dev), _px(chunks.reference[i][None, px[0], px[1]]).to(dev)
    return head(both[:n], ins, m, ref, both[n:]), px, m


def tune_decoder(
    model: SayAnythingModel,
    chunks: ChunkSet,
    latents: LatentSet,
    minutes: float,
    lr: float = 2e-4,
    outside: float = 0.05,
    seed: int = 0,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    predicted: np.ndarray | None = None,
    p_predicted: float = 0.5,
    steps: int = 0,
    true_context: bool = True,
    head_only: bool = False,
) -> int:
    """Fine-tune the VAE decoder (in place) to reconstruct ``chunks``' true frames from their
    frozen-encoder latents (``latents.target``), for ``minutes`` of wall-clock time (or
    ``steps`` steps when > 0); return the steps taken. Each step is one chunk decoded as the
    engine decodes it (the latent box of the chunk's masks plus ``DECODE_MARGIN``), with an L1
    loss in pixels weighted 1 in the mask and ``outside`` elsewhere in the box. The decoder only
    turns latents into pixels, so it learns the person's colours and texture and nothing about
    when the mouth opens.

    ``predicted``: the model's own estimates of the same latents (``predicted_latents``); a
    share ``p_predicted`` of the steps decodes those instead of the true latents, so the
    decoder also learns what the denoiser's output looks like, not only the encoder's.
    ``true_context=False``: the true latents' steps keep the truth inside the mask only and take
    the model's estimate around it, so the decoder cannot learn to read the mouth from the
    context (the jaw and cheeks around the mask, which when dubbing show the original
    speaker's mouth).

    A model with a context head (``ContextHead``) trains it with the decoder, given what the
    engine gives it: the chunk's input crops (an unrelated mouth, as when dubbing, so it cannot
    learn to take the opening from the jaw around the mask), the mask, and the reference crop
    with its latent decoded over the same box (``decode_chunk_box``). ``head_only``: the head
    alone is trained, over the frozen decoder (decoded without gradients, so a step costs about
    a third)."""
    vae = model.vae.model
    head = model.context_head
    if head_only and head is None:
        raise ValueError("tune_decoder(head_only=True): the model has no context head to train; give it one first")
    tuned = () if head_only else ("decoder.", "post_quant_conv.")
    params = [p for n, p in vae.named_parameters() if tuned and n.startswith(tuned)]
    if head is not None:  # trained with the decoder, on what the engine gives it (``SayAnythingPipeline.sample``)
        params += list(head.parameters())
        head.requires_grad_(True)
        head.train()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    model.vae.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    if not head_only:
        vae.decoder.train()
    t0, step = time.monotonic(), 0
    try:
        while (steps > 0 and step < steps) or (steps <= 0 and (time.monotonic() - t0) / 60 < minutes):
            i = int(torch.randint(0, len(latents), (1,), generator=gen))
            use_pred = predicted is not None and float(torch.rand((), generator=gen)) < p_predicted
            source = predicted if use_pred else latents.target
            lat = torch.from_numpy(source[i : i + 1]).float().to(dev)  # type: ignore[index]
            if predicted is not None and not use_pred and not true_context:
                # the truth inside the mask only: around it, what the engine's decoder sees there
                inside = torch.from_numpy(latents.mask[i : i + 1]).float().to(dev)
                lat = inside * lat + (1 - inside) * torch.from_numpy(predicted[i : i + 1]).float().to(dev)
            got = decode_chunk_box(model, lat, chunks, latents, i, decoder_grad=not head_only)
            if got is None:
                continue
            pred, px, m = got
            target = _px(chunks.frames[i][:, px[0], px[1]])[None].to(dev)
            weight = outside + (1 - outside) * m[None]
            pred = pred[None]
            loss = (weight * (pred - target).abs()).sum() / (weight.sum() * 3)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if progress:
                progress(step, {"loss": float(loss.detach())})
    finally:
        model.vae.requires_grad_(False)
        model.vae.eval()
        if head is not None:
            head.requires_grad_(False)
            head.eval()
    return step
