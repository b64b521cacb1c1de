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
    ap.add_argument("--english-utterances", type=int, default=1000, help="eSpeak NG English voices, English words")
    ap.add_argument("--steps", type=int, default=4000)
    args = ap.parse_args(argv)
    if os.path.isfile(os.path.join(args.out, "audio_encoder.pt")):
        raise SystemExit(f"--out {args.out}: already holds an audio_encoder.pt; choose a new folder")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
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


if __name__ == "__main__":
    raise SystemExit(main())
