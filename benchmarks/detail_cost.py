"""What an enrolled person's detail net (``model/detail.py``, ``enrol --detail``) adds to each
pasted frame: ``FaceCropper.paste`` with and without ``refine``, on the same frames, in the same
run.

    python benchmarks/detail_cost.py [--video CLIP] [--frames 100] [--rounds 5] [--write]

The bundled clip's faces are tracked once; then each round pastes every frame's own 64 px crop
back plainly and through a detail net of the shape ``enrol --detail`` trains (3 layers, 16
channels; the cost does not depend on the weights, so a fresh net, which is the identity, times
it), alternating, and the medians over rounds are reported. ``--write`` appends a row to
BENCHMARKS.md ("Detail net: cost per pasted frame").
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from model.checkpoint import load_config  # noqa: E402
from model.detail import DetailNet  # noqa: E402
from model.pipeline import one_torch_thread  # noqa: E402
from model.train.prepare import _frames as video_frames  # noqa: E402
from stream.bench import machine  # noqa: E402
from stream.cli import asset  # noqa: E402
from stream.config import load  # noqa: E402
from stream.face import FaceCropper, FaceTracker  # noqa: E402

SECTION = "## Detail net: cost per pasted frame (issue 12, CPU)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=asset("sample_face.mp4"))
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    cfg = load(None, [])
    c = load_config(os.path.join(ROOT, "model", "weights", "tiny"))
    tracker = FaceTracker(cfg.face)
    cropper = FaceCropper(cfg.face, c.resolution_px, c.mask_scale, c.crop_zoom)
    work = []
    try:
        for _, img in video_frames(args.video):
            state = tracker.update(img)
            if state is not None:
                work.append((img, cropper.crop(img, state), cropper.mouth_mask(state), state))
            if len(work) == args.frames:
                break
    finally:
        tracker.close()
    if not work:
        raise SystemExit(f"--video {args.video}: no face was tracked in it")
    net = DetailNet(scale=float(np.median([cropper.scale(w[3]) for w in work])))
    boxes = [cropper.warped(w[0].shape, w[1], w[2], w[3]) for w in work]
    box = np.median([(b[0][2] - b[0][0]) * (b[0][3] - b[0][1]) for b in boxes if b is not None])
    rows: dict[str, list[float]] = {"plain": [], "detail": []}
    with one_torch_thread():
        threads = torch.get_num_threads()
        for _ in range(args.rounds):
            for name, refine in (("plain", None), ("detail", net.refine)):
                t = time.perf_counter()
                for img, crop, mask, state in work:
                    cropper.paste(img, crop, mask, state, refine=refine)
                rows[name].append((time.perf_counter() - t) * 1000 / len(work))
    plain, detail = float(np.median(rows["plain"])), float(np.median(rows["detail"]))
    h, w = work[0][0].shape[:2]
    print(
        f"{len(work)} frames of {w}x{h}, {args.rounds} rounds, torch threads {threads}: "
        f"paste {plain:.2f} ms, with the detail net {detail:.2f} ms (+{detail - plain:.2f} ms per frame; "
        f"{box:.0f} px under the mask's box); {machine()}"
    )
    if args.write:
        cmd = f"python benchmarks/detail_cost.py --frames {args.frames} --rounds {args.rounds} --write"
        pairs = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(rows["plain"], rows["detail"], strict=True))
        row = (
            f"| {datetime.date.today()} | {machine()} | {w}x{h}, {box:.0f} px box | {plain:.2f} | {detail:.2f} | "
            f"+{detail - plain:.2f} | {pairs} |"
        )
        path = os.path.join(ROOT, "BENCHMARKS.md")
        text = open(path).read()
        if SECTION not in text:
            text = text.rstrip("\n") + (
                f"\n\n{SECTION}\n\n`{cmd}`: `FaceCropper.paste` on the bundled clip's frames, plainly and "
                "through a detail net of `enrol --detail`'s shape, alternating rounds, medians, torch on "
                "one thread (as the engine runs it).\n\n"
                "| date | machine | frame, mask box | paste ms | with the net ms | added ms | rounds (plain/net) |\n"
                "| --- | --- | --- | --- | --- | --- | --- |\n"
            )
        with open(path, "w") as fh:
            fh.write(text.rstrip("\n") + "\n" + row + "\n")
        print(f"appended to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
