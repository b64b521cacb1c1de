"""Synthetic talking characters: speech timing, visemes, determinism, splits, truth alignment,
the evaluation read-out, dataset chunks and a training smoke run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from model.configs import TINY
from model.train.evaluate import best_lag, energy_openness, read_openness, score, ssim
from model.train.speech import ESpeak, Phoneme
from model.train.synth import (
    FPS,
    REST,
    SAMPLE_RATE_HZ,
    STYLE_SEED_OFFSET,
    VISEMES,
    VOICES,
    make_clip,
    mouth_track,
    viseme_of,
)


@pytest.fixture(scope="module")
def engine() -> ESpeak:
    return ESpeak()


@pytest.fixture(scope="module")
def clip(engine: ESpeak):
    return make_clip(3, "train", engine, augment=False)


def test_espeak_reports_phonemes_in_time_order(engine: ESpeak) -> None:
    u = engine.synthesize("Hello there, my friend.", "en-us", 160, 50)
    assert u.sample_rate_hz == 22050 and u.duration_s > 0.8
    starts = [p.start_s for p in u.phonemes]
    assert starts == sorted(starts) and 0 <= starts[0] and starts[-1] <= u.duration_s + 0.05
    names = [p.name.strip("'") for p in u.phonemes]
    assert "h" in names and any(n.startswith("_") for n in names)


def test_unknown_voice_is_a_clear_error(engine: ESpeak) -> None:
    from stream.errors import ModelError

    with pytest.raises(ModelError, match="voice 'xx-nope' is unknown") as err:
        engine.synthesize("Hi.", "xx-nope")
    # the voices the message suggests are ones this eSpeak NG knows
    suggested = str(err.value).split("use e.g. ", 1)[1].replace("'", "").split(", ")
    assert len(suggested) == 3
    for voice in suggested:
        assert engine.synthesize("Hi.", voice).duration_s > 0


def test_visemes() -> None:
    for p in ("p", "b", "m"):
        assert viseme_of(p)[0] == 0.0
    assert viseme_of("'a") == VISEMES["AA"] and viseme_of("aI") == VISEMES["AA"]
    assert viseme_of("f")[3] == 1.0  # lip bite
    assert viseme_of("u:")[2] == 1.0  # rounded
    assert viseme_of("_:") == REST and viseme_of("_") == REST


def test_mouth_track_follows_phonemes_with_smoothing() -> None:
    ph = [Phoneme("_", 0.0), Phoneme("a", 0.4), Phoneme("m", 0.8), Phoneme("_", 1.0)]
    tr = mouth_track(ph, 1.6)
    assert tr.shape == (40, 4)
    t = (np.arange(40) + 0.5) / FPS
    assert np.all(tr[t < 0.3, 0] < 0.01) and np.all(tr[t > 1.2, 0] < 0.01)  # rest in silence
    assert tr[(t > 0.5) & (t < 0.7), 0].min() > 0.85  # the open vowel
    assert np.abs(np.diff(tr[:, 0])).max() < 0.6  # co-articulation: no one-frame jump to full open


def test_clip_is_deterministic_by_seed(engine: ESpeak) -> None:
    a = make_clip(5, "val", engine, size=128)
    b = make_clip(5, "val", engine, size=128)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
    assert np.array_equal(a.mouth, b.mouth) and a.text == b.text and a.voice == b.voice
    c = make_clip(6, "val", engine, size=128)
    assert c.style != a.style


def test_splits_have_disjoint_voices_and_styles(engine: ESpeak) -> None:
    assert not set(VOICES["train"]) & set(VOICES["val"]) and not set(VOICES["train"]) & set(VOICES["test"])
    assert len(set(STYLE_SEED_OFFSET.values())) == 3
    train, test = make_clip(0, "train", engine, size=64), make_clip(0, "test", engine, size=64)
    assert train.style != test.style and train.voice in VOICES["train"] and test.voice in VOICES["test"]


def test_truth_is_aligned_with_the_audio(clip) -> None:
    hop = SAMPLE_RATE_HZ // FPS
    n = len(clip.mouth)
    rms = np.array([np.sqrt(np.mean(clip.audio[i * hop : (i + 1) * hop] ** 2)) for i in range(n)])
    assert rms[clip.speech].mean() > 10 * rms[~clip.speech].mean() + 1e-6
    assert clip.mouth[clip.speech, 0].mean() > 0.2 and clip.mouth[~clip.speech, 0].max() < 0.3
    assert clip.frames.shape == (n, 256, 256, 3) and clip.keypoints.shape == (n, 6, 2)


def test_rendered_openness_reads_back_as_the_truth(clip) -> None:
    got = read_openness(clip.frames, clip)
    assert np.corrcoef(got, clip.mouth[:, 0])[0, 1] > 0.95
    assert np.abs(got - clip.mouth[:, 0]).mean() < 0.06


def test_the_leak_reads_the_input_speakers_mouth_showing_through(clip, engine: ESpeak) -> None:
    from model.train.synth import cycled, rerender

    other = make_clip(4, "train", engine, augment=False)
    src = cycled(other.mouth[: len(clip.frames) // 2], len(clip.frames))[:, 0]  # a shorter input track
    assert np.array_equal(src[: len(clip.frames) // 2], src[len(clip.frames) // 2 : 2 * (len(clip.frames) // 2)])
    shown = rerender(clip, other.mouth[: len(clip.frames) // 2])  # the input video itself: all leak
    assert score(shown, clip, source_open=src).leak > 0.9
    truth = score(clip.frames, clip, source_open=src)  # the truth: what two mouth tracks share by chance
    assert truth.leak < 0.5 and truth.corr > 0.95
    assert np.isnan(score(clip.frames, clip).leak)
    # the partial leak holds the truth fixed: the input video still leaks all through it, and the
    # truth's chance share with the input is gone from it
    assert score(shown, clip, source_open=src).leak_partial > 0.9
    assert abs(truth.leak_partial) < 0.1 < truth.leak  # measured: 0.06 against 0.14
    # the slope is the amount: the input video passes its opening through whole, the truth none
    assert abs(score(shown, clip, source_open=src).leak_slope - 1.0) < 0.15
    assert abs(truth.leak_slope) < 0.1


def test_the_leak_slope_counts_the_amount_where_the_partial_correlation_does_not() -> None:
    from model.train.evaluate import leak_slope, partial_corr

    rng = np.random.default_rng(0)
    truth, src = rng.uniform(0, 1, 4000), rng.uniform(0, 1, 4000)
    noise = rng.normal(0, 1, 4000)
    # the same input share under less other error: the correlation rises, the amount does not
    for a, b in ((0.2, 0.3), (0.2, 0.05)):
        out = truth + a * src + b * noise
        assert abs(leak_slope(out, truth, src) - a) < 0.05  # standard error at most 0.017
    loud, quiet = (truth + 0.2 * src + b * noise for b in (0.3, 0.05))

    def pc(o: np.ndarray) -> float:
        r = np.corrcoef(np.stack([o, src, truth]))
        return partial_corr(r[0, 1], r[0, 2], r[1, 2])

    assert pc(quiet) > pc(loud) + 0.3
    assert leak_slope(truth, truth, np.zeros(4000)) == 0.0


def test_stillness_in_silence_leaves_out_the_mouth_closing_at_the_edges_of_speech(clip) -> None:
    # the truth's own mouth moves most in the silent frames right after speech (it is closing):
    # those count as the edges of speech, and silence is what lies further than 2 frames from it
    truth = score(clip.frames, clip)
    assert truth.still_edges > 2 * truth.still_silence
    speech = clip.speech.astype(bool)
    deep = np.convolve(speech.astype(float), np.ones(5), mode="same") == 0
    assert deep.any()
    noisy = clip.frames.copy()
    rng = np.random.default_rng(0)
    noisy[deep] = np.clip(noisy[deep].astype(np.int16) + rng.integers(-20, 21, noisy[deep].shape), 0, 255)
    got = score(noisy, clip)
    assert got.still_silence > truth.still_silence + 5  # a mouth flickering in silence is counted
    assert got.still_speech == truth.still_speech  # and nothing in speech changed


def test_evaluate_scores_only_the_rows_asked_for_and_keeps_the_model_free_ones(
    clip, engine: ESpeak, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the model-free rows (pass-through, audio energy, the truth's readout) can be left out, as
    # the development-clip calibration does; and they are kept per clip, keyed by the clip, the
    # input's mouth track and the scoring code, so the next eval of another model reuses them
    from model.train import evaluate as ev

    monkeypatch.setenv("SAYANYTHING_CACHE_DIR", str(tmp_path))
    other = make_clip(4, "train", engine, augment=False)
    res = ev.evaluate([clip], [other], None, None, rows=("passthrough", "truth_readout"))
    assert sorted(res) == ["passthrough", "truth_readout"]
    assert res["passthrough"]["leak"] > 0.9 and res["truth_readout"]["corr"] > 0.95
    # each metric per clip too, in clip order, for paired comparisons (eval --json)
    assert res["truth_readout"]["corr_clips"] == [res["truth_readout"]["corr"]]
    assert len(list((tmp_path / "eval").iterdir())) == 2  # one per row

    def no_scoring(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("scored again")

    monkeypatch.setattr(ev, "score", no_scoring)
    assert ev.evaluate([clip], [other], None, None, rows=("passthrough", "truth_readout")) == res
    assert ev.evaluate([clip], [other], None, None, rows=("truth_readout",)) == {"truth_readout": res["truth_readout"]}
    with pytest.raises(AssertionError, match="scored again"):  # another input track: another key
        ev.evaluate([clip], [clip], None, None, rows=("truth_readout",))
    with pytest.raises(AssertionError, match="scored again"):  # no cache
        ev.evaluate([clip], [other], None, None, rows=("truth_readout",), cache=False)
    with pytest.raises(ValueError, match="evaluate rows"):
        ev.evaluate([clip], [other], None, None, rows=("model", "oracle"))


def test_eval_helpers() -> None:
    x = np.sin(np.linspace(0, 12, 120))
    assert best_lag(np.roll(x, 2), x) == 2 and best_lag(x, x) == 0
    img = np.random.default_rng(0).integers(0, 255, (20, 20)).astype(np.float64)
    assert ssim(img, img) == pytest.approx(1.0) and ssim(img, 255 - img) < 0.5
    e = energy_openness(np.concatenate([np.zeros(16000), 0.5 * np.ones(16000)]).astype(np.float32), 50)
    assert e.min() >= 0 and e.max() <= 1 and e[:20].mean() < e[30:].mean()


def test_dataset_chunks_are_cut_like_the_engine(clip) -> None:
    from model.train.dataset import clip_to_chunks
    from stream.config import FaceConfig
    from stream.face import MediaPipeFaceDetector

    cs = clip_to_chunks(clip, TINY, MediaPipeFaceDetector(), FaceConfig())
    assert cs is not None
    n = len(cs)
    assert n == len(clip.mouth) // TINY.chunk_frames
    assert cs.frames.shape == (n, 8, 64, 64, 3) and cs.masks.shape == (n, 8, 64, 64)
    assert cs.audio.shape == (n, 8, 4480) and cs.reference.shape == (n, 64, 64, 3)
    assert cs.masks.sum(axis=(2, 3)).min() > 20  # a mouth region in every frame
    # the model is shown the same character with an unrelated mouth: inputs and targets differ
    # inside the mask (where the mouths are) and hardly outside it (the mask holds the jaw)
    assert cs.inputs.shape == cs.frames.shape
    d = np.abs(cs.inputs.astype(np.int16) - cs.frames.astype(np.int16)).sum(-1)
    inside, outside = d[cs.masks > 0].mean(), d[cs.masks == 0].mean()
    assert inside > 10 * outside, (inside, outside)
    assert np.array_equal(cs.mouth.reshape(-1, 4), clip.mouth[: n * 8])


def test_paired_chunks_differ_only_in_the_mouth(clip) -> None:
    """``paired_chunks`` (benchmarks/input_dependence.py): a second input mouth cut with the first
    input's tracker states, so everything but the mouth is shared; the first input is what
    ``clip_to_chunks`` cuts for that track."""
    from model.train.dataset import clip_to_chunks, paired_chunks
    from stream.config import FaceConfig
    from stream.face import MediaPipeFaceDetector

    n = len(clip.mouth)
    first = np.roll(clip.mouth, n // 2, axis=0)
    got = paired_chunks(clip, TINY, MediaPipeFaceDetector(), FaceConfig(), [first, clip.mouth[::-1].copy()])
    assert got is not None
    cs, (second,) = got
    plain = clip_to_chunks(clip, TINY, MediaPipeFaceDetector(), FaceConfig())
    assert plain is not None and np.array_equal(cs.inputs, plain.inputs) and np.array_equal(cs.masks, plain.masks)
    assert second.shape == cs.inputs.shape
    d = np.abs(second.astype(np.int16) - cs.inputs.astype(np.int16)).sum(-1)
    assert d[cs.masks > 0].mean() > 10 * d[cs.masks == 0].mean()


def test_train_smoke_and_resume(tmp_path, clip) -> None:
    from model.checkpoint import load_checkpoint
    from model.train.dataset import clip_to_chunks
    from model.train.train import TrainConfig, train
    from stream.config import FaceConfig
    from stream.face import MediaPipeFaceDetector

    data = clip_to_chunks(clip, TINY, MediaPipeFaceDetector(), FaceConfig())
    assert data is not None
    out = str(tmp_path / "teacher")
    train(TINY, data, TrainConfig(vae_steps=2, steps=2, batch_size=2, vae_batch_size=4, save_every=1), out)
    with open(os.path.join(out, "train_state.json")) as fh:
        assert json.load(fh) == {"vae_step": 2, "step": 2}
    before = load_checkpoint(out).state_dict()
    train(TINY, data, TrainConfig(vae_steps=2, steps=3, batch_size=2, vae_batch_size=4, save_every=1), out, resume=True)
    with open(os.path.join(out, "train_state.json")) as fh:
        assert json.load(fh) == {"vae_step": 2, "step": 3}
    after = load_checkpoint(out).state_dict()
    assert all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in before if k.startswith("vae."))  # VAE done
    assert any(not np.array_equal(before[k].numpy(), after[k].numpy()) for k in before if k.startswith("unet."))


def test_second_inputs_share_everything_with_the_cache_but_the_mouth(tmp_path) -> None:
    """``build_alt_inputs`` (``recipe_v2 --swap-inputs``): a training chunk cache's clips cut again
    with another mouth and the cache's own tracker states; cached next to it; a cache that does not
    cut the same is refused."""
    from model.train.dataset import ChunkSet, alt_inputs_path, build, build_alt_inputs

    cache = str(tmp_path)
    chunks = build(TINY, "train", range(0, 1), cache)
    path = os.path.join(cache, f"train_0_1_{TINY.resolution_px}_{TINY.chunk_frames}_v3.npz")
    assert os.path.isfile(path)
    pool = np.random.default_rng(0).random((4000, 4)).astype(np.float32)  # any mouth tracks
    with pytest.raises(ValueError, match="not a training chunk cache"):
        build_alt_inputs(TINY, os.path.join(cache, "test_0_1_64_8_v3.npz"), pool)
    alt = build_alt_inputs(TINY, path, pool)
    assert alt.shape == chunks.inputs.shape and os.path.isfile(alt_inputs_path(path))
    d = np.abs(alt.astype(np.int16) - chunks.inputs.astype(np.int16)).sum(-1)
    assert d[chunks.masks > 0].mean() > 10 * d[chunks.masks == 0].mean()
    assert np.array_equal(build_alt_inputs(TINY, path, pool[::-1]), alt)  # read from its cache
    os.remove(alt_inputs_path(path))
    bad = ChunkSet(*(getattr(chunks, k) for k in ChunkSet.__dataclass_fields__))
    bad.inputs = bad.inputs[::-1].copy()
    bad.save(path)
    with pytest.raises(ValueError, match="cuts differently from the cache"):
        build_alt_inputs(TINY, path, pool)
    assert not os.path.exists(alt_inputs_path(path))


def test_the_perfect_rung_pastes_the_truth_through_the_engines_own_mask(clip, engine: ESpeak) -> None:
    """benchmarks/psnr_ladder.py's ``perfect`` rung: the dubbed video, with the true frames where the
    engine pastes and the input where it does not."""
    import importlib.util

    from model.checkpoint import load_checkpoint
    from model.pipeline import SayAnythingPipeline
    from model.train.synth import cycled, rerender
    from stream.config import load

    spec = importlib.util.spec_from_file_location(
        "psnr_ladder", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "psnr_ladder.py")
    )
    assert spec is not None and spec.loader is not None
    ladder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ladder)
    cfg = load(None, ["model.steps=1"])
    pipe = SayAnythingPipeline.from_config(load_checkpoint("model/weights/tiny"), cfg.model)
    other = make_clip(4, "train", engine, augment=False)
    video = rerender(clip, cycled(other.mouth, len(clip.frames)))
    out = ladder.perfect_output(clip, video, cfg, pipe)
    n = len(out)
    o, v, t = (a[:n].astype(np.int16) for a in (out, video, clip.frames))
    # every pixel lies between the input and the truth (a blend of the two, to the rounding)
    assert (np.abs(o - v) <= np.abs(t - v) + 1).all() and (np.abs(o - t) <= np.abs(t - v) + 1).all()
    # where the truth differs most from the input (mostly the mouth) it is mostly the truth: the
    # rest is the input's mouth outside the engine's mask, the floor the rung measures
    core = np.abs(t - v).max(-1) > 60
    assert core.sum() > 1000
    assert np.abs(o[core] - t[core]).mean() < 0.5 * np.abs(v[core] - t[core]).mean()
