"""Training on prepared real video (``train --data``), on one CPU, one GPU or many under
``torchrun``, and personal enrolment from one clip (``enrol``).

Both use the direct few-step objective of ``model/train/fewstep.py`` (the shipped student is a
consistency-parameterised model; a teacher checkpoint, e.g. ``init --svd``, gets the same
denoising regression at log-normal noise levels).

Many GPUs or nodes: PyTorch DDP under torchrun, the same command on every node::

    torchrun --nnodes 2 --nproc-per-node 8 --node-rank R --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 -m stream.cli train --data DATA --out runs/x --device cuda

Each rank streams its own shards; rank 0 writes the checkpoint, ``fewstep_state.pt`` and
``log.jsonl``; run the same command again to resume.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.detail import DetailNet, save_detail
from model.network import SayAnythingModel
from model.train.dataset import ChunkSet
from model.train.detail import collect as collect_detail
from model.train.detail import psnr_db as detail_psnr
from model.train.detail import train_detail
from model.train.fewstep import (
    FewStepConfig,
    LatentSet,
    encode_latents,
    stream_batches,
    train_fewstep,
    tune_decoder,
)
from model.train.prepare import MANIFEST, PrepareConfig, Shard, load_manifest, mouth_darkness, prepare, shard_paths
from model.train.prepare import _frames as prepare_frames
from model.train.shards import ShardStream
from stream.config import FaceConfig
from stream.errors import InputError

log = logging.getLogger(__name__)
# ``enrol --detail``: the detail net's share of the training time (the share measured in BENCHMARKS.md)
DETAIL_SHARE = 0.12
SHIPPED = os.path.join(os.path.dirname(__file__), "..", "weights", "tiny")


def _distributed(device: str) -> tuple[int, int, str]:
    """Join the torchrun process group when launched by it; returns rank, world, device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), world, device


def _check_data(model: SayAnythingModel, dirs: list[str]) -> None:
    for d in dirs:
        s = load_manifest(d)["settings"]
        c = model.config
        if s["resolution_px"] != c.resolution_px or s["chunk_frames"] != c.chunk_frames:
            raise InputError(
                f"{d} was prepared for {s['resolution_px']} px, {s['chunk_frames']}-frame chunks but the model takes "
                f"{c.resolution_px} px, {c.chunk_frames}: prepare it with --preset {c.name}"
            )


def train_on_data(
    dirs: list[str],
    out: str,
    init: str = SHIPPED,
    tc: FewStepConfig | None = None,
    device: str = "cpu",
    synthetic: LatentSet | None = None,
    synthetic_share: float = 0.0,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> SayAnythingModel:
    """Train from checkpoint ``init`` on prepared datasets ``dirs`` (plus, with
    ``synthetic_share`` > 0, that share of every batch from cached synthetic latents)."""
    tc = tc or FewStepConfig()
    rank, world, device = _distributed(device)
    model = load_checkpoint(init).float().to(device)
    if not model.config.consistency:  # a teacher: plain denoising regression at log-normal sigmas
        tc = dataclasses.replace(tc, p_first=0.0, p_second=0.0)
    _check_data(model, dirs)
    paths = [p for d in dirs for p in shard_paths(d)]
    if not paths:
        raise InputError(f"{' '.join(dirs)}: no clip was kept when preparing (see manifest.json): nothing to train on")
    # a fixed validation batch from the last shard, held out of training when there are others
    val_shard = Shard.load(paths[-1]).chunks()
    train_paths = paths[:-1] if len(paths) > world else paths
    validation = encode_latents(model, val_shard.take(slice(0, 4)), device=device)
    stream = ShardStream(train_paths, rank=rank, world=world, seed=tc.seed)
    real = stream_batches(model, stream)
    batches = real
    if synthetic is not None and synthetic_share > 0:
        from model.train.fewstep import cached_batches

        synth = cached_batches(synthetic)

        def batches(n: int, gen: torch.Generator) -> LatentSet:
            k = int(torch.binomial(torch.tensor([float(n)]), torch.tensor([synthetic_share]), generator=gen).item())
            parts = ([synth(k, gen)] if k else []) + ([real(n - k, gen)] if n - k else [])
            return LatentSet.concat(parts)

    return train_fewstep(model, batches, tc, out, progress, validation=validation)


# -- enrolment -----------------------------------------------------------------------------
def swap_mouths(chunks: ChunkSet, times: np.ndarray, seed: int = 0, min_gap_s: float = 1.0) -> ChunkSet:
    """The chunks with each one's input video showing the lower face of another moment of the
    same clip (at least ``min_gap_s`` away), and that moment's mask: real video's stand-in for
    the synthetic recipe's re-render with an unrelated mouth track. On the clip's own frames
    the visible ring around the mask (jaw, cheeks) and the mask's shape, which follows the
    tracked mouth, tell the denoiser the true opening, so a denoiser trained on them learns to
    read the video instead of the audio; with the swap, only the audio says how the mouth opens.
    The crops are face-aligned by the tracker, so another moment's lower face lands in place.
    The targets (``frames``), audio and reference are unchanged."""
    import cv2

    n = len(chunks)
    if n < 2:
        return chunks
    rng = np.random.default_rng(seed)
    start = times[:, 0]
    R = chunks.frames.shape[2]
    grow = max(1, R // 16)
    kernel = np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)
    sigma = max(1.0, R / 64)
    inputs = chunks.inputs.copy()
    masks = chunks.masks.copy()
    for i in range(n):
        far = np.nonzero(np.abs(start - start[i]) >= min_gap_s)[0]
        j = int(rng.choice(far)) if far.size else int(np.argmax(np.abs(start - start[i])))
        for k in range(chunks.frames.shape[1]):
            both = np.maximum(chunks.masks[i, k], chunks.masks[j, k])
            b = cv2.GaussianBlur(cv2.dilate(both, kernel).astype(np.float32), (0, 0), sigma)
            b = np.maximum(b, both)[..., None]  # all of the other moment inside both masks
            mixed = chunks.frames[i, k] * (1 - b) + chunks.frames[j, k] * b
            inputs[i, k] = np.clip(np.round(mixed), 0, 255).astype(np.uint8)
            masks[i, k] = chunks.masks[j, k]
    return dataclasses.replace(chunks, inputs=inputs, masks=masks)


def _load_all(data_dir: str) -> Shard:
    shards = [Shard.load(p) for p in shard_paths(data_dir)]
    return Shard.concat(shards)


@torch.inference_mode()
def held_out_scores(model: SayAnythingModel, data: Shard, steps: int = 1) -> dict[str, float]:
    """The model on real held-out chunks (the mouth masked, driven by the clip's own audio):
    mouth PSNR and SSIM against the real frames in the mask region, and the correlation of
    the mouth's darkness (it rises as the mouth opens) with the audio energy, for the output
    and, as the reference, for the real frames."""
    from model.pipeline import SayAnythingPipeline
    from model.train.evaluate import ssim

    pipe = SayAnythingPipeline(model)
    psnr, ss, dark_out, dark_real, energy = [], [], [], [], []
    for i in range(len(data)):
        frames = pipe._to_tensor(data.frames[i])
        masks = torch.from_numpy(data.masks[i].astype(np.float32))[None, :, None]
        audio = torch.from_numpy(data.audio[i].astype(np.float32))[None]
        ref = pipe.encode_reference(data.reference[i])
        out = pipe.sample(frames, masks, audio, ref, steps)
        img = ((out[0].float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for k in range(img.shape[0]):
            m = data.masks[i, k] > 0
            if not m.any():
                continue
            a, b = img[k][m].astype(np.float64), data.frames[i, k][m].astype(np.float64)
            mse = float(np.mean((a - b) ** 2))
            psnr.append(10 * math.log10(255**2 / max(mse, 1e-10)))
            ss.append(ssim(img[k][m].mean(-1), data.frames[i, k][m].mean(-1)))
            dark_out.append(mouth_darkness(img[k], data.keypoints[i, k]))
            dark_real.append(mouth_darkness(data.frames[i, k], data.keypoints[i, k]))
            w = data.audio[i, k].astype(np.float64)
            centre = len(w) * 5 // 7  # the frame's own time in its window (200 of 280 ms)
            seg = w[max(0, centre - 320) : centre + 320]
            energy.append(10 * math.log10(float(np.mean(seg**2)) + 1e-10))

    def corr(x: list[float]) -> float:
        return float(np.corrcoef(x, energy)[0, 1]) if np.std(x) > 1e-9 and np.std(energy) > 1e-9 else 0.0

    return {
        "psnr_db": float(np.mean(psnr)),
        "psnr_std": float(np.std(psnr)),
        "ssim": float(np.mean(ss)),
        "corr_audio": corr(dark_out),
        "corr_audio_real_frames": corr(dark_real),
        "frames": len(psnr),
    }


PARTS = ("appearance", "all", "anchored")
RESPONSE_WEIGHT = 2.0  # parts="anchored": FewStepConfig.response_weight


def enrol(
    video: str,
    out: str,
    base: str = SHIPPED,
    minutes: float = 10.0,
    hold_out: float = 0.2,
    steps: int = 1,
    lr: float | None = None,
    batch_size: int = 4,
    min_seconds: float = 10.0,
    progress: Callable[[str, float, float], None] | None = None,
    parts: str = "appearance",
    decoder_share: float = 0.5,
    detail_share: float = 0.0,
) -> dict[str, Any]:
    """Fine-tune ``base`` on one clip of the user within ``minutes`` (preparation included),
    holding out the last ``hold_out`` of the clip to report before/after scores. Writes the
    checkpoint to ``out`` (via ``out.partial``, renamed when done) with ``enrol_report.json``.

    ``parts="appearance"`` (the default) trains only what cannot learn when the mouth opens:
    the VAE decoder (``decoder_share`` of the training time, reconstructing the clip's frames)
    and then the ID-guider (the denoising loss; it sees only the reference frame, and trains on
    inputs whose lower face comes from another moment of the clip, ``swap_mouths``, so that
    the frozen UNet is not steered towards reading the input's own mouth). The user's
    clip shows the true mouth around the mask (jaw, cheeks, the mask's own shape from the
    tracked mouth), so a denoiser fine-tuned on it learns to read the opening from the input
    video instead of the audio, which a dubbed or re-voiced input then contradicts.
    ``parts="all"`` tunes the decoder the same way, then fine-tunes the UNet and ID-guider (the
    audio path stays fixed) on inputs whose lower face comes from another moment of the clip
    (``swap_mouths``), so that only the audio tells the opening. ``parts="anchored"`` is
    ``all`` with the denoiser's response to the mouth (its estimate minus the same with the
    mouth closed) held to the starting model's (``FewStepConfig.response_weight``), so the
    plain loss adapts the face while what the mouth parameters do stays the general one.

    With ``detail_share`` > 0 (``enrol --detail``: ``DETAIL_SHARE``), that share of the training
    time (after the decoder, whatever ``parts``) trains the personal detail net
    (``model/detail.py``, ``model/train/detail.py``): the model's crop brought to the frame's
    resolution with the clip's own fine detail. It is saved only if it raises the held-out
    stretch's mouth PSNR on the VAE's reconstructions (the report's ``detail``). Measured when
    dubbed: a mouth twice as sharp at the same PSNR, and a little more motion in silence, so it
    is an option (BENCHMARKS.md)."""
    if parts not in PARTS:
        raise InputError(f"enrol: parts must be one of {', '.join(PARTS)}, not {parts!r}")
    t0 = time.monotonic()
    if os.path.exists(os.path.join(out, "config.json")):
        raise InputError(f"enrol: {out} already holds a checkpoint: choose another --out or remove it")
    work = out + ".partial"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    try:
        model = load_checkpoint(base).float()
        data_dir = os.path.join(work, "data")
        prepare([video], data_dir, preset=model.config, pc=PrepareConfig(min_seconds=min_seconds))
        m = load_manifest(data_dir)
        res = next(iter(m["clips"].values()))
        if res["status"] != "kept":
            raise InputError(
                f"enrol: {video} cannot be used ({res['reason']}); record 30-120 s of yourself talking, face to "
                "the camera, in steady light"
            )
        chunks = _load_all(data_dir)
        chunks = chunks.take(np.argsort(chunks.times[:, 0]))
        times = chunks.times
        t_lo, t_hi = float(times[0, 0]), float(times[-1, -1])
        cut = t_lo + (1 - hold_out) * (t_hi - t_lo)
        train_idx = np.nonzero(times[:, -1] < cut)[0]
        test_idx = np.nonzero(times[:, 0] >= cut)[0]
        if len(train_idx) < 4 or len(test_idx) < 2:
            raise InputError(f"enrol: {video} has too few usable face chunks ({len(times)}): record a longer clip")
        test = chunks.take(test_idx)
        if progress:
            progress("scoring the base model", time.monotonic() - t0, 0.0)
        before = held_out_scores(model, test, steps)
        train = chunks.take(train_idx).chunks()
        # the clip's own latents: the decoder stage's targets (nothing else uses them)
        lat = encode_latents(model, train) if decoder_share > 0 else None
        # the denoiser (or, for "appearance", the ID-guider) trains on inputs whose mouth says nothing
        # of the audio
        den_lat = encode_latents(model, swap_mouths(train, times[train_idx]))
        used = (time.monotonic() - t0) / 60
        # leave room for scoring after training (about what scoring before took) and saving
        score_min = 1.5 * used / 2
        budget = max(0.5, minutes - used - score_min)
        start = time.monotonic()
        detail_min = detail_share * budget  # a share of the whole training time, as the decoder's
        budget -= detail_min
        dec_steps = 0
        if lat is not None:
            dec_min = decoder_share * budget

            def dec_progress(step: int, losses: dict[str, float]) -> None:
                if progress and step % 50 == 0:
                    el = time.monotonic() - start
                    progress(f"decoder step {step} loss {losses['loss']:.4f}", el, max(0.0, budget * 60 - el))

            dec_steps = tune_decoder(model, train, lat, dec_min, progress=dec_progress)
            budget = max(0.25, budget - (time.monotonic() - start) / 60)
            start = time.monotonic()
        detail, detail_report = None, None
        if detail_share > 0:
            detail, detail_report = _enrol_detail(video, model, (t_lo, t_hi), cut, detail_min, progress)
            # an overrun (tracking a long clip) comes out of what is left
            budget = max(0.25, budget - max(0.0, (time.monotonic() - start) / 60 - detail_min))
            start = time.monotonic()
        tc = FewStepConfig(
            steps=100_000,
            batch_size=batch_size,
            lr=lr if lr is not None else (3e-4 if parts == "appearance" else 1e-4),
            audio_lr=0.0,  # the audio-to-mouth mapping stays the general one: only appearance adapts
            warmup=20,
            ema_decay=0.99,
            save_every=10**9,
            minutes=budget,
            train_only=("id_guider.",) if parts == "appearance" else (),
            response_weight=RESPONSE_WEIGHT if parts == "anchored" else 0.0,
        )

        def step_progress(step: int, losses: dict[str, float]) -> None:
            if progress and step % 10 == 0:
                el = time.monotonic() - start
                progress(f"fine-tuning step {step} loss {losses['loss']:.4f}", el, max(0.0, budget * 60 - el))

        ema = train_fewstep(model, den_lat, dataclasses.replace(tc, steps=tc.steps), os.path.join(work, "train"),
                            step_progress)  # fmt: skip
        after = held_out_scores(ema, test, steps)
        save_checkpoint(ema, work)
        if detail is not None:
            save_detail(detail, work)
        report = {
            "video": os.path.abspath(video),
            "base": os.path.abspath(base),
            "train_chunks": int(len(train_idx)),
            "held_out_chunks": int(len(test_idx)),
            "held_out_from_s": round(cut, 2),
            "parts": parts,
            "decoder_steps": dec_steps,
            "detail": detail_report,
            "train_steps": _steps_done(os.path.join(work, "train")),
            "minutes": round((time.monotonic() - t0) / 60, 2),
            "before": before,
            "after": after,
        }
        with open(os.path.join(work, "enrol_report.json"), "w") as f:
            json.dump(report, f, indent=1)
        shutil.rmtree(os.path.join(work, "train"), ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)
        if os.path.isdir(out) and not os.listdir(out):
            os.rmdir(out)
        os.replace(work, out)
        return report
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _enrol_detail(
    video: str,
    model: SayAnythingModel,
    span_s: tuple[float, float],
    cut_s: float,
    minutes: float,
    progress: Callable[[str, float, float], None] | None,
) -> tuple[DetailNet | None, dict[str, Any]]:
    """The personal detail net trained on ``video`` before ``cut_s`` for about ``minutes`` in all
    (collecting the pairs included), and its held-out scores; the net is None unless it raised
    the held-out mouth PSNR of the VAE's reconstructions."""
    t0 = time.monotonic()
    if progress:
        progress("detail net: tracking the clip", 0.0, minutes * 60)
    data = collect_detail(prepare_frames(video), model, FaceConfig(), span_s)
    train_idx = [k for k, t in enumerate(data.times) if t < cut_s]
    test_idx = [k for k, t in enumerate(data.times) if t >= cut_s]
    if len(train_idx) < 8 or not test_idx:
        return None, {"kept": False, "reason": f"too few tracked frames ({len(data)})"}
    left = max(0.1, minutes - (time.monotonic() - t0) / 60)

    def show(step: int, loss: float) -> None:
        if progress:
            el = time.monotonic() - t0
            progress(f"detail net step {step} loss {loss:.4f}", el, max(0.0, minutes * 60 - el))

    net, steps = train_detail(data, train_idx, left, progress=show)
    rep: dict[str, Any] = {"steps": steps, "train_frames": len(train_idx), "held_out_frames": len(test_idx)}
    for src in ("plain", "vae"):
        rep[f"{src}_before_db"] = round(detail_psnr(data, test_idx, src), 2)
        rep[f"{src}_after_db"] = round(detail_psnr(data, test_idx, src, net), 2)
    rep["kept"] = rep["vae_after_db"] > rep["vae_before_db"]
    return (net if rep["kept"] else None), rep


def _steps_done(train_dir: str) -> int:
    try:
        with open(os.path.join(train_dir, "log.jsonl")) as f:
            return int(json.loads(f.readlines()[-1])["step"])
    except (OSError, IndexError, KeyError, ValueError):
        return 0


def print_progress(what: str, elapsed: float, left: float) -> None:
    print(f"enrol: {what} ({elapsed:.0f} s, ~{left:.0f} s left)", file=sys.stderr)


__all__ = ["MANIFEST", "enrol", "held_out_scores", "train_on_data"]
