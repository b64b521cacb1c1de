"""Personal enrolment on 2 CPU cores: a clip of a character the model never saw, prepared and
fine-tuned within the budget, scored on the held-out last 20 % of the clip against the shipped
(generic) model, in the same run.

    python benchmarks/enrol.py [--seconds 60] [--minutes 12] [--seed 11] [--also KEY=VALUE ...] [--write]

The clip is rendered from a held-out character style and voice (``test`` split) so the truth
is known: the held-out stretch is dubbed as in ``eval`` (the input video shows an unrelated
mouth track, the clip's own speech drives it) through the real engine, and scored by
analysis by synthesis (openness correlation with the truth) and mouth PSNR / SSIM against the
true frames. Wall time covers everything ``enrol`` does (prepare, scoring, fine-tuning, saving).
``--also KEY=VALUE`` scores the shipped and the enrolled model once more each with that engine
setting (for example ``face.mask_paste_gain=2``), on the same held-out stretch.

Every model row is also scored on the held-out stretch as it was filmed (``held_out_own``: the
input video is the clip's own, its mouth already speaking these words), as for a presenter whose
own voice drives their own video: nothing the model sees contradicts the audio there.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from model import load_model  # noqa: E402
from model.train.evaluate import engine_output, laplacian, mouth_box, score  # noqa: E402
from model.train.realtrain import DETAIL_SHARE, PARTS, enrol, print_progress  # noqa: E402
from model.train.synth import FPS, Clip, clip_span, make_clip, rerender, write_clip_video  # noqa: E402
from stream.bench import machine  # noqa: E402
from stream.config import load  # noqa: E402
from stream.errors import ConfigError  # noqa: E402


def long_clip(seed: int, seconds: float) -> Clip:
    n = 4
    while True:
        clip = make_clip(seed, "test", sentences=(n, n))
        if clip.duration_s >= seconds:
            return clip
        n = int(n * seconds / clip.duration_s) + 1


def sharpness(frames: np.ndarray, clip: Clip) -> float:
    """The variance of the Laplacian in the mouth box (``mouth_box``, grey) relative to the true
    frames', averaged over frames: 1 is as sharp as the real video, less is blurrier."""
    out = []
    for i, img in enumerate(frames):
        x0, y0, x1, y1 = mouth_box(clip.keypoints[i], img.shape[0])
        g, t = img[y0:y1, x0:x1].mean(axis=2), clip.frames[i, y0:y1, x0:x1].mean(axis=2)
        out.append(float(laplacian(g).var() / max(laplacian(t).var(), 1e-9)))
    return float(np.mean(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--minutes", type=float, default=12.0, help="enrol's budget (prepare + fine-tune + scoring)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--parts", default="appearance", choices=PARTS, help="what enrol trains")
    ap.add_argument("--decoder-share", type=float, default=0.5, help="the share of the training time the decoder gets")
    ap.add_argument("--detail-share", type=float, default=DETAIL_SHARE, help="the detail net's share of the time")
    ap.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="score the shipped and the enrolled model again with these engine settings (all of them together)",
    )
    ap.add_argument("--write", action="store_true", help="append the result to BENCHMARKS.md")
    ap.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "enrol.json"), help="result file")
    args = ap.parse_args()
    try:  # a bad setting is refused before the clip is made and enrolled
        load(None, args.also)
    except ConfigError as e:
        raise SystemExit(f"--also: {e}") from None
    clip = long_clip(args.seed, args.seconds)
    work = tempfile.mkdtemp(prefix="enrol_bench_")
    video = write_clip_video(clip, os.path.join(work, "me.mp4"))
    out = os.path.join(work, "me_model")
    t0 = time.perf_counter()
    report = enrol(video, out, minutes=args.minutes, progress=print_progress, parts=args.parts,
                   decoder_share=args.decoder_share, detail_share=args.detail_share)  # fmt: skip
    wall = time.perf_counter() - t0
    start = int(round(report["held_out_from_s"] * FPS))
    other = make_clip(args.seed + 1000, "test", sentences=(8, 8))
    held = clip_span(clip, start, start + len(other.mouth))
    n = len(held.frames)
    inp = rerender(held, other.mouth[:n])
    rows = {}
    runs = [("shipped", []), ("enrolled", [f"model.checkpoint={out}"])]
    if report["detail"] and report["detail"]["kept"]:
        runs.append(("enrolled, detail off", [f"model.checkpoint={out}", "model.detail=off"]))
    if args.also:
        tag = ", ".join(args.also)
        runs += [(f"shipped, {tag}", list(args.also)), (f"enrolled, {tag}", [f"model.checkpoint={out}", *args.also])]
    own: dict[str, dict] = {}  # the held-out stretch's own video as input
    for name, sets in runs:
        cfg = load(None, ["model.steps=1", *sets])
        model = load_model(cfg)
        for table, shown in ((rows, inp), (own, held.frames)):
            frames, stats = engine_output(held, shown, cfg, model)
            table[name] = {**score(frames, held).as_dict(), "sharpness": sharpness(frames, held),
                           "texture": stats["texture"]}  # fmt: skip
    rows["truth"] = {"still_silence": score(held.frames, held).still_silence}
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "clip_s": round(clip.duration_s, 1),
        "held_out_s": round(held.duration_s, 1),
        "enrol_wall_min": round(wall / 60, 2),
        "parts": args.parts,
        "decoder_share": args.decoder_share,
        "decoder_steps": report["decoder_steps"],
        "train_steps": report["train_steps"],
        "detail_share": args.detail_share,
        "detail": report["detail"],
        "enrol_report": {"before": report["before"], "after": report["after"]},
        "held_out_dubbed": rows,
        "held_out_own": own,
    }
    print(json.dumps(result, indent=1))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    if args.write:
        s, e = rows["shipped"], rows["enrolled"]
        cmd = (
            f"python benchmarks/enrol.py --seconds {args.seconds:g} --minutes {args.minutes:g} --seed {args.seed} "
            f"--parts {args.parts}"
        )
        with open(os.path.join(ROOT, "BENCHMARKS.md"), "a") as f:
            f.write(
                f"\n## Enrolment on 2 CPU cores (issue 12)\n\n`{cmd}` ({result['date']}, {result['machine']}): a "
                f"{result['clip_s']} s clip of a held-out character, enrolled in {result['enrol_wall_min']} min "
                f"({report['train_steps']} steps); held-out last {result['held_out_s']} s, dubbed through the "
                "engine:\n\n"
                "| model | mouth PSNR | SSIM | openness corr | offset |\n| --- | --- | --- | --- | --- |\n"
                f"| shipped tiny | {s['psnr_db']:.1f} dB | {s['ssim']:.3f} | {s['corr']:.3f} | {s['offset_frames']} |\n"
                f"| enrolled | {e['psnr_db']:.1f} dB | {e['ssim']:.3f} | {e['corr']:.3f} | {e['offset_frames']} |\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
