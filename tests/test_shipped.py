"""The shipped tiny weights (model/weights/tiny): they load with no download and drive the
mouth with the audio on a held-out clip (a regression guard well under the reported figure)."""

from __future__ import annotations

import numpy as np
import pytest

from model import SHIPPED_WEIGHTS, load_model
from model.train.evaluate import engine_output, read_openness
from model.train.speech import ESpeak
from model.train.synth import make_clip, rerender
from stream.config import load

# The reported figures over the held-out clips are in BENCHMARKS.md and
# model/weights/tiny/README.md (v2.6, 1 step: 0.880 on 8 English test clips). On this clip the
# previous model (v1) reached 0.24 and the input video's own mouth 0.03. This is a regression
# guard well under the reported figure, not a tuning target.
THRESHOLD_CORR = 0.4


@pytest.fixture(scope="module")
def run():
    cfg = load(None, ["model.name=tiny"])  # the default steps
    model = load_model(cfg)
    engine = ESpeak()
    clip = make_clip(10_000, "test", engine)
    other = make_clip(20_000, "test", engine)
    inp = rerender(clip, other.mouth)
    out, stats = engine_output(clip, inp, cfg, model)
    return clip, inp, out, stats, model


def test_shipped_weights_load_without_download(run) -> None:
    *_, stats, model = run
    assert "shipped" in model.name and SHIPPED_WEIGHTS["tiny"].endswith("weights/tiny")
    assert stats["model_errors"] == 0 and stats["generated"] > 0


def test_on_a_rendered_character_the_default_texture_is_the_models_own(run) -> None:
    """model.texture = "auto": on a character of the kind it was trained on (held out), the model
    draws the face at rest within the threshold once its colour is matched, so its own pixels stay."""
    *_, stats, _ = run
    assert stats["texture"] == "model" and stats["rest_delta_e"] < 12.0
    assert len(stats["colour_offset"]) == 3


def test_mouth_follows_the_audio(run) -> None:
    clip, inp, out, *_ = run
    got = read_openness(out, clip)
    before = read_openness(inp, clip)
    truth = clip.mouth[:, 0]
    corr = float(np.corrcoef(got, truth)[0, 1])
    assert corr > THRESHOLD_CORR
    assert corr > float(np.corrcoef(before, truth)[0, 1]) + 0.08  # better than the input's own mouth


def test_silence_keeps_the_mouth_still(run) -> None:
    clip, _, out, *_ = run
    from model.train.evaluate import mouth_box

    size = out.shape[1]
    diffs = []
    for i in range(1, len(out)):
        if not clip.speech[i] and not clip.speech[i - 1] and (i < 3 or not clip.speech[i - 3 : i].any()):
            x0, y0, x1, y1 = mouth_box(clip.keypoints[i], size)
            a = out[i, y0:y1, x0:x1].astype(np.float32)
            b = out[i - 1, y0:y1, x0:x1].astype(np.float32)
            diffs.append(np.abs(a - b).mean())
    assert diffs and float(np.mean(diffs)) < 6.0


def test_tiny_voices_loads_and_follows_the_audio() -> None:
    """The opt-in ``model.name = "tiny-voices"`` (the same model with the audio head trained on
    more voices): shipped weights, no download, and on the held-out clip the mouth follows the
    audio (the same guard as ``tiny``'s; its figures per split are in its model card)."""
    cfg = load(None, ["model.name=tiny-voices"])
    model = load_model(cfg)
    assert model.name == "sayanything-tiny-voices (shipped)" and SHIPPED_WEIGHTS["tiny-voices"].endswith("tiny-voices")
    engine = ESpeak()
    clip, other = make_clip(10_000, "test", engine), make_clip(20_000, "test", engine)
    inp = rerender(clip, other.mouth)
    out, stats = engine_output(clip, inp, cfg, model)
    assert stats["model_errors"] == 0 and stats["generated"] > 0
    truth = clip.mouth[:, 0]
    corr = float(np.corrcoef(read_openness(out, clip), truth)[0, 1])
    assert corr > THRESHOLD_CORR
    assert corr > float(np.corrcoef(read_openness(inp, clip), truth)[0, 1]) + 0.08


def test_on_a_photograph_the_reference_texture_keeps_the_persons_colours_and_sharpness() -> None:
    """The bundled public-domain portrait (a still) animated by one held-out utterance: with
    model.texture = "reference" the mask at rest is the photo's own colours (CIELAB delta-E) and
    sharpness (Laplacian variance); the model's own pixels (64 px, trained on cartoons) are not.
    The figures over 8 utterances are in BENCHMARKS.md."""
    from model.train.evaluate import portrait_scores
    from stream.cli import asset
    from stream.sources.file import decode_video

    image = next(iter(decode_video(asset("sample_face.mp4"))))
    clip = make_clip(10_000, "test", ESpeak(), sentences=(1, 1))
    got = {}
    for texture in ("model", "reference"):
        cfg = load(None, ["model.name=tiny", f"model.texture={texture}", "model.runtime=torch"])
        got[texture] = portrait_scores(image, [clip], cfg, load_model(cfg))
    assert got["reference"]["delta_e"] < 2.0 and got["reference"]["laplacian_ratio"] > 0.7
    assert got["model"]["delta_e"] > 3 * got["reference"]["delta_e"]
    # the default, "auto", sees that the model cannot draw the photograph and takes the reference
    cfg = load(None, ["model.name=tiny", "model.runtime=torch"])
    assert cfg.model.texture == "auto"
    auto = portrait_scores(image, [clip], cfg, load_model(cfg))
    assert auto["texture"] == "reference" and auto["delta_e"] < 2.0
    # the mouth still moves with the speech: the mask darkens as the true opening grows, as much
    # as with the model's own pixels (the reference texture adds the model's brightness change)
    assert auto["motion"] > 0.5 and abs(auto["motion"] - got["model"]["motion"]) < 0.05
