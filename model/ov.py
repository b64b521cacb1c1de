"""The model's three heavy parts (VAE encoder, denoiser, VAE decoder) run by OpenVINO on a CPU.

On the 2-core CPUs this project targets, OpenVINO's CPU plugin runs the tiny model's
convolutions, attention and normalisations in fewer, fused kernels than eager PyTorch, and in
bfloat16 where the CPU has native BF16 (AVX-512 BF16 or AMX): see BENCHMARKS.md for the
measured ratio. The conversion traces the same ``torch.nn.Module`` code that training uses, so
there is one model definition; the weights stay those of the checkpoint. Nothing is written to
disk but a cache and nothing is downloaded: converting ``tiny`` takes 20-40 s on 2 cores, so
the converted models are kept in ``$SAYANYTHING_CACHE_DIR`` (default
``~/.cache/sayanything-live``) under a key of the weights, the model config, the model's source
code and the library versions; later loads read them in well under a second. An unwritable
cache only costs the conversion again.

Tensors cross the boundary as float32 numpy arrays. Whatever the inference precision, inputs
and outputs are float32, so the sampler state stays float32 as on the torch path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from model.checkpoint import hash_sources, hash_weights
from model.network import Conditions, SayAnythingModel
from model.pipeline import torch_threads
from stream.errors import ModelError

log = logging.getLogger(__name__)

PRECISIONS = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def _openvino() -> Any:
    hide_telemetry()
    try:
        import openvino
    except ImportError as e:  # pragma: no cover - openvino is a pinned dependency
        raise ModelError(
            f"model runtime 'openvino' is not installed ({e}): reinstall sayanything-live, or set model.runtime=torch"
        ) from None
    no_telemetry()
    return openvino


TELEMETRY = ("openvino_telemetry", "openvino_telemetry.backend", "openvino_telemetry.backend.backend_ga4")


def hide_telemetry() -> None:
    """Keep OpenVINO from reporting anything: call before ``import openvino``.

    Unless the user has opted out with its own tool, OpenVINO sends usage events to Google
    Analytics: one when the package is imported, and eight more for each model conversion. Its
    converter runs without the opt-in dialog, so nobody is asked. The events are sent from a
    process forked in a worker thread. The engine sends nothing anywhere. That fork can also
    deadlock: a CI run hung at exit when a child, forked while PyAV's slice threads were live,
    waited forever on one of their condition variables, and pytest waited for the child. OpenVINO
    falls back to its own no-op stub where its telemetry package cannot be imported, so the
    package is marked as not importable in this process (``sys.modules[name] = None``)."""
    if "openvino_telemetry" not in sys.modules:
        for name in TELEMETRY:
            sys.modules[name] = None  # type: ignore[assignment]


def no_telemetry() -> None:
    """The same for an OpenVINO imported before ``hide_telemetry`` ran: its converter's modules
    hold their telemetry module as ``tm``, and the no-op stub is put in its place (the event sent
    on import has gone by then)."""
    from openvino.tools.ovc import convert_impl, telemetry_stub, telemetry_utils, utils

    for module in (convert_impl, telemetry_utils, utils):
        module.tm = telemetry_stub  # type: ignore[attr-defined]


def native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bfloat16 natively on this CPU (AVX-512 BF16 or AMX)."""
    return "BF16" in _openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


PARTS = ("encoder", "decoder", "denoiser")
# the code a converted model is traced from: a change in any of these is a new cache key
_SOURCES = ("network.py", "unet.py", "vae.py", "conditioning.py", "ov.py")


def cache_root() -> str:
    """The project's cache folder: ``$SAYANYTHING_CACHE_DIR``, else the user cache folder."""
    return os.environ.get("SAYANYTHING_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "sayanything-live"
    )


def cache_dir() -> str:
    """Where converted models are kept (under ``cache_root``)."""
    return os.path.join(cache_root(), "openvino")


def cache_key(model: SayAnythingModel) -> str:
    """A digest of everything the converted models depend on."""
    import diffusers

    h = hashlib.sha256()
    h.update(f"{_openvino().__version__} {torch.__version__} {diffusers.__version__}".encode())
    h.update(json.dumps(dataclasses.asdict(model.config), sort_keys=True, default=str).encode())
    hash_sources(h, os.path.dirname(os.path.abspath(__file__)), _SOURCES)
    hash_weights(h, model)
    return h.hexdigest()[:32]


class _Encoder(nn.Module):
    def __init__(self, model: SayAnythingModel) -> None:
        super().__init__()
        self.vae = model.vae.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x).latent_dist.mode()


class _Decoder(nn.Module):
    def __init__(self, model: SayAnythingModel) -> None:
        super().__init__()
        self.vae = model.vae.model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z).sample


class _Denoiser(nn.Module):
    """``SayAnythingModel.denoise`` with the conditions as separate tensors."""

    def __init__(self, model: SayAnythingModel, with_mouth: bool) -> None:
        super().__init__()
        self.model, self.with_mouth = model, with_mouth

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
        masked, mask, tokens = cond[:3]
        n_levels = len(cond) - 3 - int(self.with_mouth)
        ids = list(cond[3 : 3 + n_levels])
        mouth = cond[-1] if self.with_mouth else None
        return self.model.denoise(x, sigma, Conditions(masked, mask, tokens, ids, mouth))


def _cond_inputs(cond: Conditions) -> list[torch.Tensor]:
    out = [cond.masked_latents, cond.mask_latent, cond.audio_tokens, *cond.id_features]
    return out if cond.mouth is None else [*out, cond.mouth]


# a shape met this many times on the dynamic model gets a static copy, compiled in the background
STATIC_AFTER = 3
# at most this many static copies per part (memory stays bounded whatever shapes a session meets)
MAX_STATIC = 3


class _Compiled:
    """One converted model, compiled for dynamic shapes, plus static-shape copies for the shapes
    it is called with in the steady state.

    A static copy runs 10-20 % faster on this CPU (denoiser 51 vs 62 ms per chunk), but each
    compilation takes 0.5-1.5 s and holds memory. So the shapes given to ``static`` (the
    denoiser's at one chunk of ``chunk_frames`` frames) are compiled at load, and a shape the
    dynamic model has run ``STATIC_AFTER`` times (the VAE encoder's batch of the frames a chunk
    adds, the decoder's box on a steady face) is compiled in a background thread while the
    dynamic model keeps serving it, up to ``MAX_STATIC`` copies per part. Anything else (a
    guidance batch, the degrade ladder's shorter chunks, a box seen once) stays on the dynamic
    model: compiling every shape in the worker, as an earlier version did, stalled frames and
    grew memory by 200 MB in 10 minutes of a live session."""

    def __init__(
        self, core: Any, model: Any, props: dict[str, Any], static: list[list[int]] | None = None, learn: bool = True
    ) -> None:
        self._core, self._model, self._props, self._learn = core, model, props, learn
        self._dynamic = core.compile_model(model, "CPU", props)
        self._request = self._dynamic.create_infer_request()
        self._static: dict[tuple[tuple[int, ...], ...], Any] = {}
        self._seen: dict[tuple[tuple[int, ...], ...], int] = {}
        self._pending: set[tuple[tuple[int, ...], ...]] = set()
        self._lock = threading.Lock()
        if static is not None:
            key = tuple(tuple(s) for s in static)
            self._static[key] = self._compile_static(key)

    def _compile_static(self, key: tuple[tuple[int, ...], ...]) -> Any:
        m = self._model.clone()
        m.reshape({m.inputs[i]: list(s) for i, s in enumerate(key)})
        return self._core.compile_model(m, "CPU", self._props).create_infer_request()

    def _note(self, key: tuple[tuple[int, ...], ...]) -> None:
        """Count a shape run on the dynamic model; start its static compilation when it repeats."""
        with self._lock:
            if not self._learn or key in self._pending or len(self._static) + len(self._pending) >= MAX_STATIC:
                return
            self._seen[key] = n = self._seen.get(key, 0) + 1
            if n < STATIC_AFTER:
                return
            self._pending.add(key)
        threading.Thread(target=self._compile_later, args=(key,), name="openvino-static-compile", daemon=True).start()

    def _compile_later(self, key: tuple[tuple[int, ...], ...]) -> None:
        try:
            req = self._compile_static(key)
            with self._lock:
                self._static[key] = req
        except Exception as e:  # the dynamic model keeps serving the shape
            log.warning("OpenVINO static compilation for %s failed (%s): the dynamic model serves it", key, e)
        finally:
            with self._lock:
                self._pending.discard(key)

    @property
    def static_shapes(self) -> list[tuple[tuple[int, ...], ...]]:
        return list(self._static)

    def infer(self, arrays: list[np.ndarray]) -> np.ndarray:
        key = tuple(a.shape for a in arrays)
        req = self._static.get(key)
        if req is None:
            req = self._request
            self._note(key)
        out = req.infer(arrays)[0]
        return np.array(out, dtype=np.float32)  # own copy: the request reuses its buffer

    def precision(self, asked: str) -> str:
        """The inference precision the plugin chose for ``asked`` (a CPU without native
        bfloat16 runs float32)."""
        got = str(self._dynamic.get_property("INFERENCE_PRECISION_HINT")).lower()
        return {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}.get(got, asked)


def _one_chunk_shapes(model: Any, frames: int) -> list[list[int]]:
    """The denoiser's input shapes for one chunk of ``frames`` frames (batch 1)."""
    shapes = []
    for inp in model.inputs:
        dims = [d.get_length() if d.is_static else -1 for d in inp.get_partial_shape()]
        if len(dims) == 1:  # sigma
            shapes.append([1])
        else:
            shapes.append([1, *(frames if d < 0 else d for d in dims[1:])])
    return shapes


class OpenVINOParts:
    """Compiled encoder / denoiser / decoder for one float32 ``SayAnythingModel`` on the CPU.

    ``precision``: ``float32``, ``bfloat16`` or ``float16``, the OpenVINO inference precision
    hint. The precision the plugin actually uses is in :attr:`precision` (a CPU without native
    bfloat16 runs float32)."""

    def __init__(self, model: SayAnythingModel, precision: str = "float32", threads: int | None = None) -> None:
        if precision not in PRECISIONS:
            raise ModelError(f"model dtype {precision!r} is unknown: use one of {', '.join(PRECISIONS)}")
        ov = _openvino()
        core = ov.Core()
        c = model.config
        props = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": PRECISIONS[precision],
            "INFERENCE_NUM_THREADS": int(threads or torch_threads()),
        }
        model = model.float().eval()
        parts = self._load_or_convert(ov, core, model)
        self._enc = _Compiled(core, parts["encoder"], props)
        self._dec = _Compiled(core, parts["decoder"], props)
        den = parts["denoiser"]
        self._den = _Compiled(core, den, props, static=_one_chunk_shapes(den, c.chunk_frames))
        self.precision = self._enc.precision(precision)
        self.scaling = float(c.vae.scaling_factor)

    @staticmethod
    def _load_or_convert(ov: Any, core: Any, model: SayAnythingModel) -> dict[str, Any]:
        """The three converted models, from the cache when it has them."""
        where = os.path.join(cache_dir(), cache_key(model))
        if all(os.path.isfile(os.path.join(where, f"{p}.xml")) for p in PARTS):
            try:
                return {p: core.read_model(os.path.join(where, f"{p}.xml")) for p in PARTS}
            except RuntimeError as e:  # a damaged cache entry: convert again
                log.warning("OpenVINO cache %s is unreadable (%s): converting again", where, e)
        # shown by default: the first load of a model waits on it
        log.warning("converting the model for OpenVINO, once per model (20-40 s on 2 cores); kept in %s", where)
        parts = _convert(ov, model)
        tmp = f"{where}.tmp{os.getpid()}"
        try:
            os.makedirs(tmp, exist_ok=True)
            for p, m in parts.items():
                ov.save_model(m, os.path.join(tmp, f"{p}.xml"), compress_to_fp16=False)
            if os.path.isdir(where):
                shutil.rmtree(where, ignore_errors=True)
            os.replace(tmp, where)
        except OSError as e:
            log.warning("could not keep the converted model in %s (%s): the next load converts again", where, e)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return parts

    @staticmethod
    def _run(part: _Compiled, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.from_numpy(part.infer([np.ascontiguousarray(t.detach().float().cpu().numpy()) for t in inputs]))

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, F, 3, H, W) in [-1, 1] -> scaled latents (B, F, C, h, w), as ``VideoVAE.encode``."""
        b, f = frames.shape[:2]
        z = self._run(self._enc, [frames.flatten(0, 1)])
        return (z * self.scaling).reshape(b, f, *z.shape[1:])

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, F, C, h, w) -> frames (B, F, 3, H, W), as ``VideoVAE.decode``."""
        b, f = latents.shape[:2]
        x = self._run(self._dec, [latents.flatten(0, 1) / self.scaling])
        return x.reshape(b, f, *x.shape[1:])

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """As ``SayAnythingModel.denoise``."""
        return self._run(self._den, [x, sigma, *_cond_inputs(cond)])


def _convert(ov: Any, model: SayAnythingModel) -> dict[str, Any]:
    """Trace the encoder, decoder and denoiser of a float32 model into OpenVINO models."""
    c = model.config
    r, lat, lc = c.resolution_px, c.latent_px, c.vae.latent_channels
    f = c.chunk_frames
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python control flow on shapes
        enc = ov.convert_model(
            _Encoder(model), example_input=(torch.zeros(f, 3, r, r),), input=[ov.PartialShape([-1, 3, r, r])]
        )
        dec = ov.convert_model(
            _Decoder(model),
            example_input=(torch.zeros(f, lc, lat, lat),),
            input=[ov.PartialShape([-1, lc, -1, -1])],
        )
        blank = torch.zeros(1, f, 3, r, r)
        cond = model.conditions(
            blank,
            torch.zeros(1, f, 1, r, r),
            torch.zeros(1, f, round((c.audio.window_before_ms + c.audio.window_after_ms) * 16)),
            model.encode_reference(blank[:, 0]),
        )
        example = [torch.zeros_like(cond.masked_latents), torch.full((1,), float(c.sigma_max))]
        example += _cond_inputs(cond)
        # batch (guidance variants) and frame count may vary; the latent size may not
        shapes = [ov.PartialShape([-1, -1, *t.shape[2:]]) for t in [example[0]]]
        shapes += [ov.PartialShape([-1])]
        shapes += [ov.PartialShape([-1, -1, *t.shape[2:]]) for t in example[2:5]]
        shapes += [ov.PartialShape([-1, *t.shape[1:]]) for t in cond.id_features]
        if cond.mouth is not None:
            shapes += [ov.PartialShape([-1, -1, cond.mouth.shape[-1]])]
        den = ov.convert_model(_Denoiser(model, cond.mouth is not None), example_input=tuple(example), input=shapes)
    return {"encoder": enc, "decoder": dec, "denoiser": den}
