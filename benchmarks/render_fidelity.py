"""Where the openness is lost: the model's rendering with the audio head's mouth parameters
against the same model given the true ones (mouth_only checkpoints), with the dubbed input and
with the clip's own video as input.

    python benchmarks/render_fidelity.py --checkpoint model/weights/tiny --split test_languages --clips 3
    python benchmarks/render_fidelity.py --checkpoint model/weights/tiny --split test_engines --truth-params open

Each held-out clip runs through the real engine four times. The first run is as ``eval`` runs
it: the input video shows an unrelated mouth (the original speaker's, when dubbing). In the
second, the audio encoder's predicted parameters are replaced by the clip's truth for the
chunk's frames (all four, or with ``--truth-params`` the opening or the shape only), and nothing
else changes. The last two repeat both with the clip's own video as
the input, where nothing the model sees contradicts the truth. Each run's openness correlation
against the truth is printed. If the truth-forced figure is no better, the rendering is the
limit, not the audio; if the own-video figures are better, the dubbed input's mouth (the leak)
costs the difference.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from model.checkpoint import load_checkpoint  # noqa: E402
from model.conditioning import MouthAudioEncoder  # noqa: E402
from model.pipeline import SayAnythingPipeline  # noqa: E402
from model.train.evaluate import engine_output, read_openness  # noqa: E402
from model.train.speech import ESpeak  # noqa: E402
from model.train.synth import FPS, cycled, make_clip, rerender  # noqa: E402
from stream.config import load  # noqa: E402

HEAD = ("dubbed/audio", "dubbed/truth", "own video/audio", "own video/truth")
# which of the four parameters (open, width, round, lip bite) the truth runs take from the truth
PARAMS = {"all": (1, 1, 1, 1), "open": (1, 0, 0, 0), "shape": (0, 1, 1, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--split", default="test_languages", choices=("test", "test_languages", "test_engines"))
    ap.add_argument("--clips", type=int, default=3)
    ap.add_argument(
        "--truth-params",
        choices=tuple(PARAMS),
        default="all",
        help="which true parameters replace the head's in the truth runs: all four, the opening only, "
        "or the shape only (width, rounding, lip bite)",
    )
    args = ap.parse_args()
    cfg = load(None, ["model.steps=1"])
    pipe = SayAnythingPipeline.from_config(load_checkpoint(args.checkpoint), cfg.model)
    enc = pipe.model.audio_encoder
    if not (isinstance(enc, MouthAudioEncoder) and enc.config.mouth_only):
        raise SystemExit(f"--checkpoint {args.checkpoint}: needs a mouth_only model (v2.2 or later)")
    features = enc.features
    state: dict[str, np.ndarray | None] = {"truth": None, "times": None}
    generate = pipe.generate

    def remember_times(chunk, ref, steps):  # noqa: ANN001, ANN202
        state["times"] = np.asarray(chunk.times_s)
        return generate(chunk, ref, steps)

    def forced(audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, mouth = features(audio)
        truth, times = state["truth"], state["times"]
        if truth is None or times is None:
            return tokens, mouth
        idx = np.clip(np.round(times * FPS).astype(int), 0, len(truth) - 1)
        m = torch.from_numpy(truth[idx]).to(mouth.dtype)[None]
        m = torch.where(torch.tensor(PARAMS[args.truth_params], dtype=torch.bool), m, mouth)
        return enc.tokens_from_mouth(m), m

    pipe.generate = remember_times  # type: ignore[method-assign]
    enc.features = forced  # type: ignore[method-assign]
    engine = None if args.split == "test_engines" else ESpeak()
    rows = []
    for i in range(args.clips):
        clip = make_clip(10_000 + i, args.split, engine)
        dubbed = rerender(clip, cycled(make_clip(20_000 + i, "test", ESpeak()).mouth, len(clip.frames)))
        got = []
        for video in (dubbed, clip.frames):
            for truth in (None, clip.mouth.astype(np.float32)):
                state["truth"] = truth
                pipe._last_encoded = None  # the runs share no latents
                out, _ = engine_output(clip, video, cfg, pipe)
                opened = read_openness(out, clip)
                got.append(float(np.corrcoef(opened, clip.mouth[: len(opened), 0])[0, 1]))
        rows.append(got)
        cells = "  ".join(f"{h} {v:.3f}" for h, v in zip(HEAD, got, strict=True))
        print(f"{args.split} clip {i} ({clip.voice}): {cells}")
    a = np.array(rows)
    print("mean: " + "  ".join(f"{h} {v:.3f} +- {s:.3f}" for h, v, s in zip(HEAD, a.mean(0), a.std(0), strict=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
