"""Samplers with a diffusers-like interface: ``set_timesteps(n)``, then ``step`` per sigma.

- :class:`EulerSampler`: the many-step teacher (Euler on the probability-flow ODE over the
  Karras et al. 2022 sigma schedule), deterministic.
- :class:`ConsistencySampler`: 1-4 step sampling of a consistency-distilled student. Each step
  predicts the clean latent; between steps it re-noises to the next sigma, either along the
  predicted noise (deterministic, default) or with fresh noise from a seeded generator
  (``stochastic=True``, as in latent consistency models).
"""

from __future__ import annotations

import torch


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """n sigmas from sigma_max down to sigma_min (Karras et al. 2022, eq. 5)."""
    if n == 1:
        return torch.tensor([sigma_max], dtype=torch.float64)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def starting_noise(
    shape: tuple[int, ...], generator: torch.Generator | None, sigma: float, shared_frames: bool
) -> torch.Tensor:
    """Noise at ``sigma`` for latents of ``shape`` (B, F, C, h, w), float32; with
    ``shared_frames`` one draw (per batch item) for every frame, so the frames differ only where
    their conditions do."""
    draw = (shape[0], 1, *shape[2:]) if shared_frames else shape
    noise = torch.randn(draw, generator=generator, dtype=torch.float32) * sigma
    return noise.expand(shape).contiguous() if shared_frames else noise


class _KarrasSampler:
    """Shared state: ``sigmas`` (descending, ending in 0) and the starting noise."""

    sigma_min: float
    sigma_max: float
    rho: float

    def __init__(self) -> None:
        self.sigmas = torch.zeros(0, dtype=torch.float64)

    @property
    def timesteps(self) -> torch.Tensor:
        return self.sigmas[:-1]

    def init_noise(
        self, shape: tuple[int, ...], generator: torch.Generator | None, shared_frames: bool = False, **kw: object
    ) -> torch.Tensor:
        return starting_noise(shape, generator, self.sigmas[0].item(), shared_frames)


class EulerSampler(_KarrasSampler):
    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> None:
        super().__init__()
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho

    def set_timesteps(self, num_inference_steps: int) -> None:
        s = karras_sigmas(num_inference_steps, self.sigma_min, self.sigma_max, self.rho)
        self.sigmas = torch.cat([s, torch.zeros(1, dtype=torch.float64)])

    def step(
        self, denoised: torch.Tensor, index: int, sample: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        s, s_next = self.sigmas[index].item(), self.sigmas[index + 1].item()
        d = (sample - denoised) / s
        return sample + (s_next - s) * d


class ConsistencySampler(_KarrasSampler):
    def __init__(
        self,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
        base_steps: int = 40,
        stochastic: bool = False,
    ) -> None:
        super().__init__()
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho
        self.base_steps = base_steps
        self.stochastic = stochastic

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Pick ``num_inference_steps`` sigmas evenly from the ``base_steps`` schedule the
        student was distilled on (always starting at sigma_max)."""
        base = karras_sigmas(self.base_steps, self.sigma_min, self.sigma_max, self.rho)
        idx = torch.linspace(0, self.base_steps - 1, num_inference_steps + 1)[:-1].round().long()
        self.sigmas = torch.cat([base[idx], torch.zeros(1, dtype=torch.float64)])

    def step(
        self, denoised: torch.Tensor, index: int, sample: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        s, s_next = self.sigmas[index].item(), self.sigmas[index + 1].item()
        if s_next == 0.0:
            return denoised
        if self.stochastic:
            noise = torch.randn(sample.shape, generator=generator, dtype=torch.float32).to(sample)
        else:
            noise = (sample - denoised) / s
        return denoised + s_next * noise
