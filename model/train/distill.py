"""Latent consistency distillation (LCD): a few-step student from a many-step teacher.

Following latent consistency models (Luo et al. 2023, arXiv 2310.04378) on the EDM sigma
schedule: the student ``f`` (same architecture, consistency parameterisation, initialised
from the teacher) is trained so that f(x_hi, sigma_hi) matches an EMA copy of itself at
x_lo, sigma_lo, where x_lo is the teacher's guided ODE solution from x_hi (Euler over the
teacher's own schedule, ``skip`` intervals). The audio guidance scale is folded in: the
student needs one network call per step and no guidance at inference.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from model.network import Conditions, SayAnythingModel
from model.sampler import karras_sigmas
from model.train.dataset import ChunkSet
from model.train.shards import ShardStream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillConfig:
    iterations: int = 2000
    lr: float = 1e-4
    base_steps: int = 40  # the teacher schedule the student is distilled on (N)
    skip: int = 10  # teacher intervals per consistency step (k)
    guidance: float = 2.0  # audio guidance folded into the student
    ema_decay: float = 0.95
    huber_c: float = 0.001
    seed: int = 0


@dataclass
class Batch:
    latents: torch.Tensor  # (B, F, C, h, w) clean target latents
    cond: Conditions  # teacher-side conditions
    frames: torch.Tensor  # (B, F, 3, H, W) in [-1, 1] input video, to build the student's own conditions
    masks: torch.Tensor  # (B, F, 1, H, W)
    audio: torch.Tensor  # (B, F, n)
    reference: torch.Tensor  # (B, 3, H, W)


def make_student(teacher: SayAnythingModel, guidance: float, base_steps: int = 40) -> SayAnythingModel:
    config = dataclasses.replace(
        teacher.config, consistency=True, distill_guidance=guidance, distill_base_steps=base_steps
    )
    student = SayAnythingModel(config)
    student.load_state_dict(teacher.state_dict())
    student.vae.requires_grad_(False)  # the latent space is the teacher's
    return student


def teacher_solve(
    teacher: SayAnythingModel, x: torch.Tensor, sigmas: torch.Tensor, n: int, m: int, cond: Conditions, w: float
) -> torch.Tensor:
    """Euler from sigmas[n] down to sigmas[m] along the teacher's schedule, guided."""
    for i in range(n, m):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        sig = torch.full((x.shape[0],), s)
        d = teacher.guided_denoise(x, sig, cond, w)
        x = x + (s_next - s) * (x - d) / s
    return x


def distill(
    teacher: SayAnythingModel,
    batches: Callable[[int], Batch],
    config: DistillConfig,
    progress: Callable[[int, float], None] | None = None,
) -> SayAnythingModel:
    """Train and return the student. ``batches(i)`` gives the training batch of iteration i."""
    teacher = teacher.eval().requires_grad_(False)
    student = make_student(teacher, config.guidance, config.base_steps).train()
    target = copy.deepcopy(student).eval().requires_grad_(False)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    sigmas = karras_sigmas(config.base_steps, teacher.config.sigma_min, teacher.config.sigma_max).float()
    gen = torch.Generator().manual_seed(config.seed)
    N = config.base_steps
    for it in range(config.iterations):
        b = batches(it)
        n = int(torch.randint(0, N - 1, (1,), generator=gen))
        m = min(n + config.skip, N - 1)
        noise = torch.randn(b.latents.shape, generator=gen)
        x_hi = b.latents + float(sigmas[n]) * noise
        with torch.no_grad():
            x_lo = teacher_solve(teacher, x_hi, sigmas, n, m, b.cond, config.guidance)
            t_cond = target.conditions(b.frames, b.masks, b.audio, target.encode_reference(b.reference))
            y = target.denoise(x_lo, torch.full((x_lo.shape[0],), float(sigmas[m])), t_cond)
        s_cond = student.conditions(b.frames, b.masks, b.audio, student.encode_reference(b.reference))
        pred = student.denoise(x_hi, torch.full((x_hi.shape[0],), float(sigmas[n])), s_cond)
        loss = (torch.sqrt((pred - y) ** 2 + config.huber_c**2) - config.huber_c).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            for p_t, p_s in zip(target.parameters(), student.parameters(), strict=True):
                p_t.lerp_(p_s, 1.0 - config.ema_decay)
        if progress is not None:
            progress(it, loss.item())
    return target.eval()


def clip_batches(
    teacher: SayAnythingModel, chunks: dict[str, torch.Tensor], batch_size: int, seed: int = 0
) -> Callable[[int], Batch]:
    """Batches drawn from clip chunks; the clean latents are the real frames' latents."""
    n = chunks["frames"].shape[0]
    gen = torch.Generator().manual_seed(seed)

    def get(_: int) -> Batch:
        idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
        f, m, a, r = (chunks[k][idx] for k in ("frames", "masks", "audio", "reference"))
        with torch.no_grad():
            latents = teacher.vae.encode(f)
            cond = teacher.conditions(f, m, a, teacher.encode_reference(r))
        return Batch(latents, cond, f, m, a, r)

    return get


@torch.no_grad()
def trajectory_errors(
    teacher: SayAnythingModel,
    student: SayAnythingModel,
    chunks: dict[str, torch.Tensor],
    config: DistillConfig,
    steps: int = 2,
    seed: int = 1234,
) -> dict[str, float]:
    """Mean squared latent distance to the teacher's ``base_steps`` output from the same noise,
    for: the student at ``steps`` (``student``), the teacher at ``steps`` on its own Karras
    schedule (``teacher``) and the teacher at ``steps`` on the student's sigmas
    (``teacher_same_sigmas``, the fairer baseline: what the student would do untrained)."""
    from model.sampler import ConsistencySampler, EulerSampler

    f = chunks.get("inputs", chunks["frames"])  # the video the model is shown
    m, a, r = (chunks[k] for k in ("masks", "audio", "reference"))

    def run(model: SayAnythingModel, sampler: EulerSampler | ConsistencySampler, n: int, w: float) -> torch.Tensor:
        cond = model.conditions(f, m, a, model.encode_reference(r))
        sampler.set_timesteps(n)
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(cond.masked_latents.shape, generator=gen) * float(sampler.sigmas[0])
        for i, s in enumerate(sampler.timesteps):
            d = model.guided_denoise(x, torch.full((x.shape[0],), float(s)), cond, w)
            x = sampler.step(d, i, x)
        return x

    c = teacher.config
    ref = run(teacher, EulerSampler(c.sigma_min, c.sigma_max), config.base_steps, config.guidance)
    same = ConsistencySampler(c.sigma_min, c.sigma_max, base_steps=config.base_steps)
    out = {
        "teacher": run(teacher, EulerSampler(c.sigma_min, c.sigma_max), steps, config.guidance),
        "teacher_same_sigmas": run(
            make_student(teacher, config.guidance, config.base_steps), same, steps, config.guidance
        ),
        "student": run(student, same, steps, 1.0),
    }
    return {k: float((v - ref).pow(2).mean()) for k, v in out.items()}


def _batch(teacher: SayAnythingModel, data: ChunkSet, idx: np.ndarray) -> Batch:
    """The teacher's latents and conditions of chunks ``idx`` (uint8 storage, converted here)."""
    from model.train.train import to_tensors

    t = to_tensors(data, idx)
    f, m, a, r = t["inputs"], t["masks"], t["audio"], t["reference"]
    with torch.no_grad():
        latents = teacher.vae.encode(t["frames"])
        cond = teacher.conditions(f, m, a, teacher.encode_reference(r))
    return Batch(latents, cond, f, m, a, r)


def chunkset_batches(
    teacher: SayAnythingModel, data: ChunkSet, batch_size: int, seed: int = 0
) -> Callable[[int], Batch]:
    """Batches drawn from synthetic chunks."""
    rng = np.random.default_rng(seed)
    return lambda _: _batch(teacher, data, rng.integers(0, len(data), batch_size))


def stream_batches(teacher: SayAnythingModel, stream: ShardStream, batch_size: int) -> Callable[[int], Batch]:
    """Batches streamed from prepared shards (real video: the model is given the frame itself)."""

    def get(_: int) -> Batch:
        data = stream.next(batch_size)
        return _batch(teacher, data, np.arange(len(data)))

    return get
