"""How much of the input video's mouth reaches the output, in pixels, per decoding.

    python benchmarks/input_dependence.py --checkpoints model/weights/tiny,CK... [--clips 16]

Development clips (seeds 50000+ of the training voices, never used by ``eval``) are cut twice,
with the input video re-rendered with two different unrelated mouth tracks (another development
clip's each, as ``eval`` dubs) and the same tracker states, so the two inputs differ only in the
mouth; crop, mask, target, audio and reference are shared (``dataset.paired_chunks``). The first
checkpoint's denoiser makes its one-step estimates from each input, as the engine samples, and
every checkpoint decodes both over the engine's latent box (``fewstep.decode_chunk_box``, with
its context head if it has one), so only the decoding differs; ``--own-denoiser``: each
checkpoint makes its own estimates, to compare denoisers. Per clip, in the mask: the mean
absolute difference between the two outputs (8-bit levels: what the input's mouth changes) and
the PSNR against the true frames. Mean +- spread over clips; a diagnostic, not a
quality claim. The leak|truth of ``eval`` is a correlation; this is the size of the dependence.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from model.checkpoint import load_checkpoint  # noqa: E402
from model.train.dataset import ChunkSet, paired_chunks  # noqa: E402
from model.train.fewstep import LatentSet, _px, decode_chunk_box, encode_latents, predicted_latents  # noqa: E402
from model.train.speech import ESpeak  # noqa: E402
from model.train.synth import cycled, make_clip  # noqa: E402
from stream.config import FaceConfig  # noqa: E402
from stream.face import MediaPipeFaceDetector  # noqa: E402

FIRST_SEED = 50000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", required=True, help="comma-separated; the first one's denoiser for all")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--json", default=None, help="write the per-clip figures here")
    ap.add_argument(
        "--own-denoiser",
        action="store_true",
        help="each checkpoint makes its own estimates (compares denoisers; without it only the decoding differs)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    names = args.checkpoints.split(",")
    base = load_checkpoint(names[0]).float().eval()
    engine, detector, face = ESpeak(), MediaPipeFaceDetector(), FaceConfig()
    clips: list[tuple[ChunkSet, ChunkSet, LatentSet, LatentSet, np.ndarray, np.ndarray]] = []
    for s in range(FIRST_SEED, FIRST_SEED + args.clips):
        clip = make_clip(s, "train", engine)
        n = len(clip.frames)
        tracks = [cycled(make_clip(s + k * 1000, "train", engine).mouth, n) for k in (1, 2)]
        got = paired_chunks(clip, base.config, detector, face, tracks)
        if got is None:
            continue
        a, (b_inputs,) = got
        b = ChunkSet(a.frames, b_inputs, a.masks, a.audio, a.reference, a.mouth, a.speech)
        la, lb = encode_latents(base, a), encode_latents(base, b)
        clips.append((a, b, la, lb, predicted_latents(base, la), predicted_latents(base, lb)))
    print(f"{len(clips)} development clips, {sum(len(c[0]) for c in clips)} chunks")
    report: dict[str, dict[str, list[float]]] = {}
    for name in names:
        model = load_checkpoint(name).float().eval()
        diff, psnr = [], []
        for a, b, la, lb, pa, pb in clips:
            if args.own_denoiser and name != names[0]:  # the VAE encoder is the same: only the estimates differ
                pa, pb = predicted_latents(model, la), predicted_latents(model, lb)
            d, se, cnt = 0.0, 0.0, 0
            for i in range(len(a)):
                with torch.inference_mode():
                    got_a = decode_chunk_box(model, torch.from_numpy(pa[i : i + 1]).float(), a, la, i)
                    got_b = decode_chunk_box(model, torch.from_numpy(pb[i : i + 1]).float(), b, la, i)
                if got_a is None or got_b is None:
                    continue
                oa, box, m = got_a
                oa, ob = oa.clamp(-1, 1), got_b[0].clamp(-1, 1)
                w = m.bool().expand_as(oa)
                tgt = _px(a.frames[i][:, box[0], box[1]])
                d += float((oa - ob).abs()[w].sum()) * 127.5
                se += float(((oa - tgt) ** 2)[w].sum()) * 127.5**2
                cnt += int(w.sum())
            diff.append(d / cnt)
            psnr.append(10 * np.log10(255**2 / (se / cnt)))
        report[name] = {"abs_diff": diff, "psnr_db": psnr}
        print(
            f"{name}: |out(input 1) - out(input 2)| in the mask {np.mean(diff):.2f} +- {np.std(diff):.2f} levels; "
            f"PSNR {np.mean(psnr):.2f} +- {np.std(psnr):.2f} dB"
        )
        if name != names[0]:
            ratio = np.asarray(diff) / np.asarray(report[names[0]]["abs_diff"])
            gain = np.asarray(psnr) - np.asarray(report[names[0]]["psnr_db"])
            se = lambda v: float(np.std(v, ddof=1) / np.sqrt(len(v)))  # noqa: E731
            print(
                f"  against {names[0]}, per clip: difference x{ratio.mean():.3f} +- {se(ratio):.3f} "
                f"(lower on {int((ratio < 1).sum())} of {len(ratio)}); PSNR {gain.mean():+.2f} +- {se(gain):.2f} dB "
                f"(higher on {int((gain > 0).sum())} of {len(gain)})"
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
