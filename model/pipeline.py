"""The SayAnything pipeline: load once, warm up, then ``generate(chunk)`` per chunk.

Implements the engine's ``LipSyncModel`` protocol: numpy crops in, numpy crops out; inside,
tensors on the configured device and dtype. Pixels outside the editing mask are returned as
they came in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from model.detail import DetailNet
from model.network import Conditions, SayAnythingModel
from model.sampler import ConsistencySampler, EulerSampler
from stream.config import ModelConfig
from stream.errors import ModelError
from stream.worker import ModelChunk

log = logging.getLogger(__name__)

# latent pixels decoded around the mask's box: the decoder's convolutions see this much context
DECODE_MARGIN = 2


def latent_box(mask: torch.Tensor, margin: int = DECODE_MARGIN) -> tuple[int, int, int, int] | None:
    """The box (y0, y1, x0, x1) holding the nonzero pixels of a (h, w) latent mask, grown by
    ``margin`` and clipped to the latent; None for an empty mask. What the engine decodes, and
    so what training that goes through the decoder decodes too."""
    rows, cols = torch.nonzero(mask.sum(1)).flatten(), torch.nonzero(mask.sum(0)).flatten()
    if rows.numel() == 0:
        return None
    h, w = mask.shape
    return (
        max(0, int(rows[0]) - margin),
        min(h, int(rows[-1]) + 1 + margin),
        max(0, int(cols[0]) - margin),
        min(w, int(cols[-1]) + 1 + margin),
    )


_glue = threading.local()


def torch_threads() -> int:
    """torch's intra-op thread count as configured for this thread, outside any
    ``one_torch_thread`` scope."""
    return getattr(_glue, "saved", 0) or torch.get_num_threads()


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run this thread's torch ops on one intra-op thread inside the scope (nested scopes keep
    it; the count is restored when the outermost ends).

    With the OpenVINO runtime torch only does the glue around the compiled parts (the audio
    encoder's small convolutions, the sampler, tensor copies and compositing), on tensors too
    small to split. Its OpenMP threads gained nothing there and competed for the 2 cores with
    OpenVINO's: the model measured 11-17 % faster per frame with the glue on one thread
    (BENCHMARKS.md). torch keeps the count per thread once a thread has used it, so other
    threads (the VAD's) keep theirs; a thread whose first torch op falls inside the scope
    starts with one."""
    if getattr(_glue, "saved", 0):
        yield
        return
    _glue.saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(_glue.saved)
        _glue.saved = 0


COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
RUNTIMES = ("auto", "torch", "openvino")


@dataclass
class Reference:
    id_features: list[torch.Tensor]
    # a model with a context head (``ContextHead``) also keeps the reference crop, (1, 3, H, W) in
    # [-1, 1], and its latent, (1, C, h, w): the head reads the decoder's error on them
    pixels: torch.Tensor | None = None
    latent: torch.Tensor | None = None


class SayAnythingPipeline:
    """Few-step (student) or many-step (teacher) generation of lip-synced face crops."""

    @classmethod
    def from_config(cls, model: SayAnythingModel, mc: ModelConfig, **overrides: Any) -> SayAnythingPipeline:
        """The pipeline the ``[model]`` config section describes (device, dtype, runtime, guidance,
        seed, compile, decode); ``overrides`` replace single constructor arguments."""
        kwargs: dict[str, Any] = dict(
            device=mc.device,
            dtype=mc.dtype,
            guidance=mc.guidance,
            reference_guidance=mc.reference_guidance,
            seed=mc.seed,
            compile=mc.compile,
            runtime=mc.runtime,
            decode_box=mc.decode == "box",
            mouth_gain=mc.mouth_gain or None,
            mouth_guidance=mc.mouth_guidance or None,
            shared_noise=mc.frame_noise == "shared",
        )
        kwargs.update(overrides)
        return cls(model, **kwargs)

    def __init__(
        self,
        model: SayAnythingModel,
        device: str = "cpu",
        dtype: str = "float32",
        guidance: float = 1.0,
        reference_guidance: float = 1.0,
        seed: int = 0,
        compile: str = "none",
        name: str | None = None,
        reuse_overlap: bool = True,
        decode_box: bool = True,
        runtime: str = "torch",
        mouth_gain: float | None = None,
        mouth_guidance: float | None = None,
        shared_noise: bool = True,
    ) -> None:
        """``reuse_overlap`` / ``decode_box``: the two savings of ``generate`` (reusing the latents
        of frames the previous chunk encoded; decoding only the mask's box); off, every frame is
        encoded and the whole latent decoded, as before them. The box is not free: the decoder's
        group norms and mid-block attention then see only the box, which moves the mouth pixels
        by 16 grey levels on average from a full decode of the same latents; over 8 held-out
        clips a full decode measured openness correlation 0.785 vs 0.762 and mouth PSNR 22.2 vs
        21.9 dB, for 17 % more time (``model.decode = full`` in the config).

        ``runtime``: ``torch``; ``openvino`` (CPU only: the encoder, denoiser and decoder run
        by OpenVINO, see ``model/ov.py``); ``auto``: OpenVINO on the CPU unless ``compile`` asks
        for torch.compile, torch elsewhere. ``dtype`` ``auto``: bfloat16 on OpenVINO when the CPU
        runs it natively, float32 otherwise."""
        if dtype not in (*DTYPES, "auto"):
            raise ModelError(f"model dtype {dtype!r} is unknown: use one of auto, {', '.join(DTYPES)}")
        if runtime not in RUNTIMES:
            raise ModelError(f"model runtime {runtime!r} is unknown: use one of {', '.join(RUNTIMES)}")
        if runtime == "auto":
            runtime = "openvino" if device == "cpu" and compile == "none" else "torch"
        if runtime == "openvino" and device != "cpu":
            raise ModelError(f"model runtime 'openvino' runs on the CPU, not {device!r}: set model.runtime=torch")
        if runtime == "openvino" and compile != "none":
            raise ModelError("model.compile is a torch runtime option: set model.runtime=torch or model.compile=none")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelError(f"model device {device!r} is not available (no CUDA): use device = 'cpu'")
        if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
            raise ModelError(
                f"model device {device!r} is not available: this machine has {torch.cuda.device_count()} GPU(s), "
                f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
        if device == "mps" and not torch.backends.mps.is_available():
            raise ModelError("model device 'mps' is not available (no Apple GPU): use device = 'cpu'")
        c = model.config
        guide = c.mouth_guidance if mouth_guidance is None else float(mouth_guidance)
        if guide != 1.0 and not c.hears_mouth_only:
            raise ModelError(
                f"model.mouth_guidance needs a model whose denoiser hears only the mouth parameters "
                f"({name or c.name} does not): set model.mouth_guidance = 1"
            )
        self.device = torch.device(device)
        self._ov = None
        if runtime == "openvino":
            from model.ov import OpenVINOParts, native_bf16

            if dtype == "auto":
                dtype = "bfloat16" if native_bf16() else "float32"
            # the torch side (audio encoder, reference, sampler) stays float32
            self._ov = OpenVINOParts(model.float().eval(), precision=dtype)
            dtype = "float32"
        elif dtype == "auto":
            dtype = "float32"
        self.dtype = DTYPES[dtype]
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.runtime = "torch" if self._ov is None else f"openvino {self._ov.precision}"
        self.config = model.config
        self.name = name or f"sayanything-{self.config.name}"
        self.resolution_px = self.config.resolution_px
        self.mask_scale = (float(self.config.mask_scale[0]), float(self.config.mask_scale[1]))
        self.crop_zoom = float(self.config.crop_zoom)
        self.paste_gain = float(self.config.paste_gain)
        self.detail: DetailNet | None = None  # an enrolled checkpoint's (model/detail.py); the engine pastes with it
        # a distilled student has its guidance folded in: one call per step, no guidance
        self.guidance = 1.0 if self.config.consistency else guidance
        self.reference_guidance = 1.0 if self.config.consistency else reference_guidance
        self.seed = seed
        self.shared_noise = shared_noise
        self.mouth_gain = mouth_gain
        self.mouth_guidance = guide
        self.reuse_overlap, self.decode_box = reuse_overlap, decode_box
        # (times, latents, frames, masks) of the last chunk's masked frames, for the overlap
        self._last_encoded: tuple[list[float], torch.Tensor, np.ndarray, np.ndarray] | None = None
        c = self.config
        self.sampler: EulerSampler | ConsistencySampler = (
            ConsistencySampler(c.sigma_min, c.sigma_max, base_steps=c.distill_base_steps)
            if c.consistency
            else EulerSampler(c.sigma_min, c.sigma_max)
        )
        if compile not in COMPILE_MODES:
            raise ModelError(f"model compile mode {compile!r} is unknown: use one of {', '.join(COMPILE_MODES)}")
        if compile != "none":
            # "reduce-overhead" captures CUDA graphs (fixed shapes: keep the chunk length constant)
            self.model.unet = torch.compile(self.model.unet, mode=compile)  # type: ignore[assignment]

    # -- the heavy parts, on this pipeline's runtime -------------------------------------
    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.vae.encode(frames) if self._ov is None else self._ov.encode(frames).to(self.dtype)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.model.vae.decode(latents) if self._ov is None else self._ov.decode(latents).to(self.dtype)

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditions) -> torch.Tensor:
        return self.model.denoise(x, sigma, cond) if self._ov is None else self._ov.denoise(x, sigma, cond)

    # -- tensors --------------------------------------------------------------------
    def _to_tensor(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        return (x.permute(0, 3, 1, 2).to(self.dtype) / 127.5 - 1.0)[None]

    @torch.inference_mode()
    def sample(
        self,
        frames: torch.Tensor,
        masks: torch.Tensor,
        audio: torch.Tensor,
        reference: Reference,
        steps: int,
        masked_latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """frames (B, F, 3, H, W) in [-1, 1], masks (B, F, 1, H, W) in {0, 1}, audio (B, F, n) ->
        generated frames (B, F, 3, H, W) in [-1, 1], composited so unmasked pixels are the input's.

        ``masked_latents``: the masked frames' latents when the caller has them (see
        ``generate``). Only the latent box holding every frame's mask (plus ``DECODE_MARGIN``
        latent pixels for the decoder's receptive field) is decoded: the rest of the output is
        the input's anyway."""
        m = self.model
        if masked_latents is None:
            masked_latents = self._encode(frames * (1.0 - masks))
        cond = m.conditions(frames, masks, audio, reference.id_features, masked_latents, self.mouth_gain)
        rest = m.rest_conditions(cond) if self.mouth_guidance != 1.0 else None
        self.sampler.set_timesteps(steps)
        gen = torch.Generator().manual_seed(self.seed)
        # the sampler state stays float32 (as diffusers' schedulers upcast): in bfloat16 an Euler
        # step from sigma_max, x + (s_next - s) (x - d) / s with |x| ~ 80, cancels away the signal
        shape = tuple(cond.masked_latents.shape)
        x = self.sampler.init_noise(shape, gen, shared_frames=self.shared_noise).to(self.device)
        for i, s in enumerate(self.sampler.timesteps):
            sigma = torch.full((x.shape[0],), float(s), device=self.device, dtype=torch.float32)
            d = m.guided_denoise(
                x.to(self.dtype), sigma, cond, self.guidance, self.reference_guidance, denoise=self._denoise
            )
            if rest is not None:  # away from the closed mouth: D(rest) + g (D(mouth) - D(rest))
                d0 = m.guided_denoise(
                    x.to(self.dtype), sigma, rest, self.guidance, self.reference_guidance, denoise=self._denoise
                )
                d = d0 + self.mouth_guidance * (d - d0)
            x = self.sampler.step(d.float(), i, x, gen)
        return self.decode_into(frames, masks, x, cond.mask_latent, reference)

    def decode_into(
        self,
        frames: torch.Tensor,
        masks: torch.Tensor,
        x: torch.Tensor,
        mask_latent: torch.Tensor,
        reference: Reference,
    ) -> torch.Tensor:
        """Clean latents ``x`` (B, F, C, h, w) decoded over the latent box of ``mask_latent``
        (B, F, 1, h, w; plus ``DECODE_MARGIN``, or the whole latent when ``decode_box`` is off),
        through the context head when the model has one, and composited into ``frames`` where
        ``masks`` is 1."""
        m = self.model
        out = frames.clone()
        lat = mask_latent.amax(dim=(0, 1, 2))  # (h, w): any frame's mask
        h, w = lat.shape
        found = latent_box(lat, DECODE_MARGIN if self.decode_box else max(h, w))
        if found is None:
            return out
        y0, y1, x0, x1 = found
        f = frames.shape[-1] // w  # the VAE's down factor
        box = (..., slice(y0 * f, y1 * f), slice(x0 * f, x1 * f))
        mb = masks[box]
        z = x[..., y0:y1, x0:x1].to(self.dtype)
        head = m.context_head
        if head is None or reference.latent is None or reference.pixels is None:
            dec = self._decode(z.contiguous()).clamp(-1, 1)
        else:  # the reference's latent decoded over the same box, as one more frame of the call
            n = z.shape[1]
            ref_z = reference.latent[..., y0:y1, x0:x1].to(self.dtype)[:, None].expand(z.shape[0], 1, -1, -1, -1)
            both = self._decode(torch.cat([z, ref_z], dim=1).contiguous())
            b, _, ch, hh, ww = both.shape
            dec = head(
                both[:, :n].reshape(b * n, ch, hh, ww),
                frames[box].reshape(b * n, ch, hh, ww),
                mb.reshape(b * n, 1, hh, ww),
                reference.pixels[box].to(self.dtype),
                both[:1, n],
            )
            dec = dec.reshape(b, n, ch, hh, ww).clamp(-1, 1)
        out[box] = frames[box] * (1 - mb) + dec.to(frames.dtype) * mb
        return out

    # -- LipSyncModel protocol ---------------------------------------------------------
    def _glue(self) -> Any:
        """The scope torch work runs in: one thread when OpenVINO runs the heavy parts."""
        return one_torch_thread() if self._ov is not None else nullcontext()

    def probe_reference(self, reference: Reference) -> Reference | None:
        """For a model with a context head: ``reference`` without the crop the head reads, so
        the model draws with its decoder alone. The session renders the reference with it to
        judge whether the model can draw the face (``model.texture = "auto"``): with the head,
        the reference itself comes out almost exact whatever the face. None without a head."""
        if self.model.context_head is None:
            return None
        return Reference(reference.id_features)

    @torch.inference_mode()
    def encode_reference(self, crop: np.ndarray) -> Any:
        with self._glue():
            ref = self._to_tensor(crop[None])[:, 0]
            if self.model.context_head is None:
                return Reference(self.model.encode_reference(ref))
            lat = self.model.vae.encode(ref[:, None])[:, 0]
            return Reference(self.model.id_guider(lat), ref, lat)

    @torch.inference_mode()
    def _masked_latents(self, chunk: ModelChunk, frames: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Latents of the masked frames; frames the previous chunk already encoded (the chunk
        overlap: same media time, same pixels, same mask) are taken from it, not re-encoded."""
        n = frames.shape[1]
        prev = self._last_encoded if self.reuse_overlap else None
        reuse = 0
        if prev is not None:
            times, lat, px, mk = prev
            while (
                reuse < n
                and reuse < len(times)
                and chunk.times_s[reuse] in times
                and np.array_equal(chunk.frames[reuse], px[times.index(chunk.times_s[reuse])])
                and np.array_equal(chunk.masks[reuse], mk[times.index(chunk.times_s[reuse])])
            ):
                reuse += 1
        parts = []
        if reuse:
            times, lat, _, _ = prev  # type: ignore[misc]
            parts.append(lat[:, [times.index(t) for t in chunk.times_s[:reuse]]])
        if reuse < n:
            parts.append(self._encode((frames * (1.0 - masks))[:, reuse:]))
        out = torch.cat(parts, dim=1)
        self._last_encoded = (list(chunk.times_s), out, chunk.frames, chunk.masks)
        return out

    def generate(self, chunk: ModelChunk, reference: Any, steps: int) -> np.ndarray:
        with self._glue():
            return self._generate(chunk, reference, steps)

    def _generate(self, chunk: ModelChunk, reference: Any, steps: int) -> np.ndarray:
        frames = self._to_tensor(chunk.frames)
        masks = torch.from_numpy((chunk.masks > 0.02).astype(np.float32)).to(self.device, self.dtype)[None, :, None]
        audio = torch.from_numpy(chunk.audio).to(self.device, self.dtype)[None]
        out = self.sample(frames, masks, audio, reference, steps, self._masked_latents(chunk, frames, masks))
        img = ((out[0].float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return img.permute(0, 2, 3, 1).cpu().numpy()

    def warmup(self, steps: int = 1) -> None:
        """One generation on a blank chunk (first-call allocations, compilation)."""
        c = self.config
        r, n = c.resolution_px, round((c.audio.window_before_ms + c.audio.window_after_ms) * 16)
        chunk = ModelChunk(
            np.zeros((c.chunk_frames, r, r, 3), np.uint8),
            np.ones((c.chunk_frames, r, r), np.float32),
            np.zeros((c.chunk_frames, n), np.float32),
            np.zeros(c.chunk_frames, bool),
            np.zeros(c.chunk_frames),
        )
        self.generate(chunk, self.encode_reference(chunk.frames[0]), steps)
