"""Training the personal detail net (``model/detail.py``) on the user's own clip, for ``enrol``.

Pairs come from the clip itself, through the engine's own tracker, crop and mask: the input is
what the engine would blend into the frame (the model-resolution crop warped back to the
frame's pixels over the mask's box), the target is the frame's true pixels there. Half the
inputs are the true crop's plain round trip; the other half its reconstruction through the
model's VAE (with the decoder ``enrol`` just tuned on the clip), which is closer to what the
model draws. The loss is L1 weighted by the blend's mask, on random patches. The clip's last
stretch (from ``cut_s``) is held out and scored before and after, in mouth-mask PSNR over frame
pixels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from model.detail import DetailNet
from model.network import SayAnythingModel
from stream.config import FaceConfig
from stream.face import FaceCropper, FaceState, FaceTracker, blend

PATCH_PX = 48


@dataclass
class DetailData:
    """Per kept frame (variable box sizes): the true pixels, the two inputs and the blend weight
    (all uint8, the weight scaled by 255) and the frame's time."""

    target: list[np.ndarray] = field(default_factory=list)
    plain: list[np.ndarray] = field(default_factory=list)
    vae: list[np.ndarray] = field(default_factory=list)
    alpha: list[np.ndarray] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.target)


def collect(
    frames: Iterator[tuple[float, np.ndarray]],
    model: SayAnythingModel,
    face: FaceConfig,
    span_s: tuple[float, float],
    max_frames: int = 600,
) -> DetailData:
    """Track every frame of ``frames`` (an iterator of ``(time_s, rgb uint8)``) and keep up to
    ``max_frames`` evenly spaced over ``span_s`` as training pairs."""
    c = model.config
    tracker = FaceTracker(face)
    cropper = FaceCropper(face, c.resolution_px, c.mask_scale, c.crop_zoom)
    vae = model.vae.eval()
    every = max(0.0, (span_s[1] - span_s[0]) / max_frames)
    data = DetailData()
    # kept frames whose VAE reconstruction is still to make (in batches, so that memory holds
    # at most one batch of frames, whatever the clip's length and resolution)
    pending: list[tuple[np.ndarray, np.ndarray, FaceState, tuple[int, ...]]] = []

    @torch.inference_mode()
    def flush() -> None:
        x = torch.from_numpy(np.stack([p[0] for p in pending])).float().permute(0, 3, 1, 2)[None] / 127.5 - 1.0
        rec = vae.decode(vae.encode(x))[0]
        rec_u8 = ((rec.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy().astype(np.uint8)
        for r, (_, mask, state, shape) in zip(rec_u8, pending, strict=True):
            w = cropper.warped(shape, r, mask, state)
            assert w is not None  # the same box as the true crop's
            data.vae.append(np.clip(np.rint(w[1]), 0, 255).astype(np.uint8))
        pending.clear()

    next_t = span_s[0]
    try:
        for t, img in frames:
            state = tracker.update(img)
            if state is None or t < next_t - 1e-6:
                continue
            next_t = t + every
            crop = cropper.crop(img, state)
            mask = cropper.mouth_mask(state)
            w = cropper.warped(img.shape, crop, mask, state)
            if w is None:
                continue
            (x0, y0, x1, y1), gen, alpha = w
            data.target.append(np.ascontiguousarray(img[y0:y1, x0:x1]))
            data.plain.append(np.clip(np.rint(gen), 0, 255).astype(np.uint8))
            data.alpha.append(np.clip(np.rint(alpha * 255), 0, 255).astype(np.uint8))
            data.times.append(float(t))
            data.scales.append(cropper.scale(state))
            pending.append((crop, mask, state, img.shape))
            if len(pending) == 32:
                flush()
        if pending:
            flush()
    finally:
        tracker.close()
    return data


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).float().permute(2, 0, 1) / 127.5 - 1.0


def _patch(data: DetailData, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = data.target[k].shape[:2]
    ph, pw = min(PATCH_PX, h), min(PATCH_PX, w)
    y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
    src = data.plain if rng.random() < 0.5 else data.vae
    sl = (slice(y, y + ph), slice(x, x + pw))
    return src[k][sl], data.target[k][sl], data.alpha[k][sl]


def train_detail(
    data: DetailData,
    train_idx: list[int],
    minutes: float,
    channels: int = 16,
    layers: int = 3,
    batch: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
    steps: int = 0,
) -> tuple[DetailNet, int]:
    """Train a :class:`DetailNet` on ``data``'s frames ``train_idx`` for ``minutes`` (or ``steps``
    steps when > 0), the learning rate on a cosine over the time (or steps); returns the net and
    the steps taken."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = DetailNet(channels, layers, float(np.median([data.scales[k] for k in train_idx])))
    opt = torch.optim.Adam(net.parameters(), lr)
    t0, step = time.monotonic(), 0
    minutes = max(minutes, 1e-3)
    net.train()
    while (done := (step / steps if steps > 0 else (time.monotonic() - t0) / (minutes * 60))) < 1.0:
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * done))
        parts = [_patch(data, train_idx[int(rng.integers(len(train_idx)))], rng) for _ in range(batch)]
        h = min(p[0].shape[0] for p in parts)
        w = min(p[0].shape[1] for p in parts)
        x = torch.stack([_t(p[0][:h, :w]) for p in parts])
        y = torch.stack([_t(p[1][:h, :w]) for p in parts])
        a = torch.stack([torch.from_numpy(p[2][:h, :w]).float() / 255 for p in parts])[:, None]
        loss = ((net(x) - y).abs() * a).sum() / (3 * a.sum()).clamp(min=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if progress and step % 200 == 0:
            progress(step, loss.item())
    return net.eval(), step


def psnr_db(data: DetailData, idx: list[int], source: str, net: DetailNet | None = None) -> float:
    """Mean PSNR over the frames ``idx`` of the blend (weighted by the mask) of ``source``
    ("plain" or "vae"), through ``net`` when given, against the true pixels."""
    out = []
    for k in idx:
        x = getattr(data, source)[k].astype(np.float32)
        if net is not None:
            x = net.refine(x)
        a = data.alpha[k].astype(np.float32) / 255
        t = data.target[k].astype(np.float32)
        mse = float(((blend(data.target[k], x, a) - t) ** 2).sum() / max(3 * a.sum(), 1.0))
        out.append(10 * math.log10(255**2 / max(mse, 1e-10)))
    return float(np.mean(out)) if out else float("nan")


__all__ = ["DetailData", "collect", "psnr_db", "train_detail"]
