"""The v2 training path (mouth audio encoder, cached latents, direct few-step training with EMA
and resume) and the pipeline's inference savings, on micro random-weight models."""

from __future__ import annotations

import copy
import dataclasses
import os

import numpy as np
import pytest
import torch
from model_fakes import make_chunk, micro_config

from model.checkpoint import load_checkpoint
from model.conditioning import MouthAudioEncoder
from model.configs import AudioEncoderConfig
from model.network import Conditions, SayAnythingModel
from model.pipeline import SayAnythingPipeline
from model.train.dataset import CACHE_VERSION, ChunkSet
from model.train.fewstep import STATE, FewStepConfig, encode_latents, remask_latents, rescaled_mask, train_fewstep
from stream.errors import InputError, ModelError
from stream.worker import ModelChunk


def _config():  # noqa: ANN202
    c = micro_config(chunk_frames=4)
    return dataclasses.replace(c, consistency=True, audio=AudioEncoderConfig(kind="mouth", n_mels=16, hidden=16))


def _chunkset(n: int, config) -> ChunkSet:  # noqa: ANN001
    rng = np.random.default_rng(0)
    L, R = config.chunk_frames, config.resolution_px
    masks = np.zeros((n, L, R, R), np.uint8)
    masks[:, :, R // 2 :, R // 4 : 3 * R // 4] = 1
    return ChunkSet(
        rng.integers(0, 256, (n, L, R, R, 3), dtype=np.uint8),
        rng.integers(0, 256, (n, L, R, R, 3), dtype=np.uint8),
        masks,
        (0.1 * rng.standard_normal((n, L, 4480))).astype(np.float16),
        rng.integers(0, 256, (n, R, R, 3), dtype=np.uint8),
        rng.random((n, L, 4)).astype(np.float32),
        np.ones((n, L), bool),
    )


def _model_chunk(chunks: ChunkSet, i: int) -> ModelChunk:
    """Chunk ``i`` of ``chunks`` as the engine hands it to the model (its input crops, all speech)."""
    L = chunks.frames.shape[1]
    return ModelChunk(chunks.inputs[i], chunks.masks[i].astype(np.float32), chunks.audio[i].astype(np.float32),
                      np.ones(L, bool), np.arange(L) / 25)  # fmt: skip


def _tuned_weights(model, chunks: ChunkSet, latents, pred: np.ndarray, p_predicted: float, **kw) -> set[str]:  # noqa: ANN001, ANN003
    """Run ``tune_decoder`` for 30 steps (``kw`` passed on), assert its loss fell, and return the weights it changed."""
    from model.train.fewstep import tune_decoder

    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses: list[float] = []
    steps = tune_decoder(model, chunks, latents, 0.0, lr=1e-3, predicted=pred, p_predicted=p_predicted, steps=30,
                         progress=lambda s, d: losses.append(d["loss"]), **kw)  # fmt: skip
    assert steps == 30 and np.mean(losses[-3:]) < np.mean(losses[:3])
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def test_mouth_encoder_gives_tokens_and_mouth_parameters() -> None:
    cfg = AudioEncoderConfig(kind="mouth", n_mels=16, hidden=16, tokens_per_frame=2)
    enc = MouthAudioEncoder(cfg, 24)
    tokens, mouth = enc.features(torch.randn(2, 3, 4480) * 0.1)
    assert tokens.shape == (2, 3, 2, 24) and mouth.shape == (2, 3, 4)
    torch.testing.assert_close(enc(torch.zeros(1, 1, 4480)), enc.features(torch.zeros(1, 1, 4480))[0])


def test_fewstep_trains_saves_and_resumes(tmp_path) -> None:  # noqa: ANN001
    config = _config()
    torch.manual_seed(0)
    model = SayAnythingModel(config)
    latents = encode_latents(model, _chunkset(3, config))
    assert latents.target.shape[:2] == (3, 4) and latents.mask.max() == 1
    out = str(tmp_path / "run")
    losses: list[float] = []
    tc = FewStepConfig(steps=3, batch_size=2, save_every=1, warmup=1)
    train_fewstep(model, latents, dataclasses.replace(tc, steps=2), out, lambda s, d: losses.append(d["loss"]))
    assert torch.load(os.path.join(out, STATE), weights_only=False)["step"] == 2
    # a fresh process continues from the saved step rather than starting again
    resumed: list[int] = []
    train_fewstep(SayAnythingModel(config), latents, tc, out, lambda s, d: resumed.append(s))
    assert resumed == [3]
    assert all(np.isfinite(losses))
    ema = load_checkpoint(out)  # the EMA weights, as a normal checkpoint
    assert isinstance(ema.audio_encoder, MouthAudioEncoder)


def test_overlap_reuse_and_box_decode_keep_the_result() -> None:
    """Reusing the overlapped frames' latents gives exactly what encoding them again gives;
    outside the mask the output is the input's, with the box decode as without it."""
    torch.manual_seed(0)
    config = dataclasses.replace(micro_config(chunk_frames=4), consistency=True)
    pipe = SayAnythingPipeline(SayAnythingModel(config))
    a, b = make_chunk(config, seed=1), make_chunk(config, seed=2)
    a = dataclasses.replace(a, times_s=np.arange(4) / 25)
    # the next chunk shares two frames (media times 2 and 3) with the first
    nxt = ModelChunk(
        np.concatenate([a.frames[2:], b.frames[:2]]),
        np.concatenate([a.masks[2:], b.masks[:2]]),
        np.concatenate([a.audio[2:], b.audio[:2]]),
        np.ones(4, bool),
        np.arange(2, 6) / 25,
    )
    ref = pipe.encode_reference(a.frames[0])
    pipe.generate(a, ref, 1)
    reused = pipe.generate(nxt, ref, 1)
    pipe._last_encoded = None
    fresh = pipe.generate(nxt, ref, 1)
    np.testing.assert_array_equal(reused, fresh)
    outside = nxt.masks <= 0.02
    np.testing.assert_array_equal(fresh[outside], nxt.frames[outside])
    full = SayAnythingPipeline(pipe.model, reuse_overlap=False, decode_box=False).generate(nxt, ref, 1)
    np.testing.assert_array_equal(full[outside], nxt.frames[outside])


def test_mouth_film_starts_as_the_model_it_extends_and_reads_the_mouth(tmp_path) -> None:  # noqa: ANN001
    """A mouth_film model loaded with a plain model's weights denoises exactly as that model
    (the FiLM embedding starts at zero); once the embedding is non-zero, the predicted mouth
    parameters change the output; training with truth forcing and the pixel loss runs."""
    config = _config()
    torch.manual_seed(0)
    plain = SayAnythingModel(config).eval()
    film = SayAnythingModel(dataclasses.replace(config, mouth_film=True)).eval()
    missing, unexpected = film.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == ["unet.mouth_embedding.bias", "unet.mouth_embedding.weight"]
    r, L = config.resolution_px, config.chunk_frames
    frames = torch.rand(1, L, 3, r, r) * 2 - 1
    masks = torch.zeros(1, L, 1, r, r)
    masks[..., r // 2 :, :] = 1
    audio = torch.randn(1, L, 4480) * 0.1
    with torch.no_grad():
        ref = plain.encode_reference(frames[:, 0])
        x = torch.randn(1, L, config.vae.latent_channels, config.latent_px, config.latent_px)
        sigma = torch.tensor([2.0])
        cp, cf = plain.conditions(frames, masks, audio, ref), film.conditions(frames, masks, audio, ref)
        assert cp.mouth is None and cf.mouth is not None and cf.mouth.shape == (1, L, 4)
        torch.testing.assert_close(film.denoise(x, sigma, cf), plain.denoise(x, sigma, cp))
        torch.nn.init.normal_(film.unet.mouth_embedding.weight)
        moved = film.denoise(x, sigma, cf)
        assert not torch.allclose(moved, plain.denoise(x, sigma, cp))
        # the mouth parameters are dropped with the audio (classifier-free guidance)
        assert torch.count_nonzero(cf.without_audio().mouth) == 0
    latents = encode_latents(film, _chunkset(3, config))
    losses: list[dict[str, float]] = []
    tc = FewStepConfig(steps=2, batch_size=2, warmup=1, truth_mouth=0.5, pixel_weight=1.0)
    train_fewstep(film.train(), latents, tc, str(tmp_path / "film"), lambda s, d: losses.append(d))
    assert len(losses) == 2 and all(np.isfinite(d["loss"]) and d["pix"] > 0 for d in losses)
    assert load_checkpoint(str(tmp_path / "film")).config.mouth_film


def test_mouth_only_tokens_carry_the_mouth_parameters_alone(tmp_path) -> None:  # noqa: ANN001
    """mouth_only: the tokens are a function of the head's four predicted parameters only (two
    audio windows that predict the same parameters give the same tokens); training with the audio
    frozen, truth forcing and parameter noise changes the token embedding and nothing of the head."""
    cfg = AudioEncoderConfig(kind="mouth", n_mels=16, hidden=16, tokens_per_frame=2, mouth_only=True)
    torch.manual_seed(0)
    enc = MouthAudioEncoder(cfg, 24)
    torch.nn.init.normal_(enc.mouth_tokens[2].weight)
    audio = torch.randn(2, 3, 4480) * 0.1
    tokens, mouth = enc.features(audio)
    assert tokens.shape == (2, 3, 2, 24)
    torch.testing.assert_close(tokens, enc.tokens_from_mouth(mouth))
    assert not torch.allclose(tokens[:, :, 0], tokens[:, :, 1])  # the tokens of a frame differ
    config = dataclasses.replace(_config(), audio=cfg)
    model = SayAnythingModel(config)
    head = [p.clone() for p in model.audio_encoder.head.parameters()]
    emb = model.audio_encoder.mouth_tokens[2].weight.clone()
    latents = encode_latents(model, _chunkset(3, config))
    tc = FewStepConfig(steps=2, batch_size=2, warmup=1, truth_mouth=0.5, mouth_noise=0.05, freeze_audio=True)
    train_fewstep(model.train(), latents, tc, str(tmp_path / "mo"))
    assert all(torch.equal(a, b) for a, b in zip(head, model.audio_encoder.head.parameters(), strict=True))
    assert not torch.equal(emb, model.audio_encoder.mouth_tokens[2].weight)
    assert load_checkpoint(str(tmp_path / "mo")).config.audio.mouth_only


def test_appearance_training_leaves_the_mouth_path_alone(tmp_path) -> None:  # noqa: ANN001
    """Enrolment's parts: ``tune_decoder`` changes only the decoder and lowers its loss on the
    chunks; ``train_only`` trains the ID-guider alone (UNet and audio encoder unchanged)."""
    from model.train.fewstep import tune_decoder

    config = _config()
    torch.manual_seed(0)
    model = SayAnythingModel(config)
    chunks = _chunkset(2, config)
    latents = encode_latents(model, chunks)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses: list[float] = []
    # a spent time budget takes no step (a step count, not the clock, below: a loaded machine takes fewer steps)
    assert tune_decoder(model, chunks, latents, minutes=0.0) == 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    steps = tune_decoder(model, chunks, latents, 0.0, lr=1e-3, steps=20, progress=lambda s, d: losses.append(d["loss"]))
    assert steps == 20 and np.mean(losses[-3:]) < np.mean(losses[:3])
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(("vae.model.decoder.", "vae.model.post_quant_conv.")) for k in changed)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tc = FewStepConfig(steps=3, batch_size=2, warmup=1, save_every=10, train_only=("id_guider.",))
    train_fewstep(model, latents, tc, str(tmp_path / "run"))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("id_guider.") for k in changed)


def test_swap_mouths_shows_another_moments_lower_face() -> None:
    """Enrolment's denoiser inputs: each chunk's input takes another moment's lower face (at
    least the gap away) and that moment's mask; outside the grown mask the input is the chunk's
    own frame; targets, audio and reference are untouched."""
    from model.train.realtrain import swap_mouths

    R, L, n = 32, 2, 4
    frames = np.zeros((n, L, R, R, 3), np.uint8)
    masks = np.zeros((n, L, R, R), np.uint8)
    for i in range(n):
        frames[i] = 40 * i + 10
        masks[i, :, 18 + i : 26, 10:22] = 1  # each moment's mask has its own shape
    cs = ChunkSet(frames, frames.copy(), masks, np.zeros((n, L, 8), np.float16), frames[:, 0],
                  np.zeros((n, L, 4), np.float32), np.ones((n, L), bool))  # fmt: skip
    times = np.arange(n)[:, None] * 2.0 + np.arange(L)[None] / 25
    out = swap_mouths(cs, times, seed=1, min_gap_s=3.0)
    for i in range(n):
        j = [k for k in range(n) if np.array_equal(out.masks[i], masks[k])]
        assert j and abs(times[j[0], 0] - times[i, 0]) >= 3.0  # another moment's mask
        inside = out.masks[i, 0] > 0
        assert np.all(out.inputs[i, 0][inside] == frames[j[0], 0][inside])  # its lower face
        assert np.all(out.inputs[i, 0][:8] == frames[i, 0][:8])  # the rest is the chunk's own
    assert np.array_equal(out.frames, frames) and np.array_equal(out.reference, cs.reference)


def test_mouth_gain_scales_the_opening_the_denoiser_reads(tmp_path) -> None:  # noqa: ANN001
    """``mouth_gain`` multiplies only the predicted opening (FiLM and mouth-only tokens follow
    it); 1 leaves the conditions as they were; the checkpoint's value is what the pipeline uses
    unless ``model.mouth_gain`` replaces it."""
    import json

    from model.checkpoint import save_checkpoint
    from model.pipeline import SayAnythingPipeline
    from stream.config import ModelConfig

    c = _config()
    config = dataclasses.replace(c, mouth_film=True, audio=dataclasses.replace(c.audio, mouth_only=True))
    torch.manual_seed(0)
    model = SayAnythingModel(config).eval()
    L, R = config.chunk_frames, config.resolution_px
    frames, masks = torch.zeros(1, L, 3, R, R), torch.ones(1, L, 1, R, R)
    audio = 0.1 * torch.randn(1, L, 4480)
    ids = model.encode_reference(torch.zeros(1, 3, R, R))
    with torch.no_grad():
        base = model.conditions(frames, masks, audio, ids)
        same = model.conditions(frames, masks, audio, ids, mouth_gain=1.0)
        more = model.conditions(frames, masks, audio, ids, mouth_gain=1.5)
    torch.testing.assert_close(same.mouth, base.mouth)
    torch.testing.assert_close(more.mouth[..., 0], 1.5 * base.mouth[..., 0])
    torch.testing.assert_close(more.mouth[..., 1:], base.mouth[..., 1:])
    assert not torch.allclose(more.audio_tokens, base.audio_tokens)
    save_checkpoint(model, str(tmp_path / "m"))
    p = tmp_path / "m" / "config.json"
    data = json.loads(p.read_text())
    data["mouth_gain"] = 1.3
    p.write_text(json.dumps(data))
    net = load_checkpoint(str(tmp_path / "m"))
    assert net.config.mouth_gain == 1.3
    with torch.no_grad():
        unit = net.conditions(frames, masks, audio, ids, mouth_gain=1.0).mouth[..., 0]
        for mc, gain in ((ModelConfig(runtime="torch"), 1.3), (ModelConfig(runtime="torch", mouth_gain=1.1), 1.1)):
            pipe = SayAnythingPipeline.from_config(net, mc)
            used = net.conditions(frames, masks, audio, ids, mouth_gain=pipe.mouth_gain).mouth
            torch.testing.assert_close(used[..., 0], gain * unit)


def test_mouth_guidance_extrapolates_from_the_closed_mouth_inside_the_mask_only() -> None:
    """mouth_guidance g: D(closed) + g (D(asked) - D(closed)), the closed mouth being the asked
    parameters with the opening at 0. So g = 0 is the model run with the opening zeroed (gain 0),
    g = 1 is one plain run, and every g leaves the pixels outside the mask as they were. The
    model's config carries its own g; a model whose denoiser does not hear the mouth parameters
    alone gets one line naming the fix."""
    from stream.config import ModelConfig

    c = _config()
    config = dataclasses.replace(c, mouth_film=True, audio=dataclasses.replace(c.audio, mouth_only=True))
    torch.manual_seed(0)
    model = SayAnythingModel(config).eval()
    chunk = make_chunk(config)

    def run(**kw: float) -> np.ndarray:
        pipe = SayAnythingPipeline(model, **kw)  # type: ignore[arg-type]
        return pipe.generate(chunk, pipe.encode_reference(chunk.frames[0]), 1)

    plain, closed = run(), run(mouth_gain=0.0)
    assert np.array_equal(run(mouth_guidance=1.0), plain)
    assert np.abs(run(mouth_guidance=0.0).astype(int) - closed.astype(int)).max() <= 1
    more = run(mouth_guidance=2.0)
    outside = chunk.masks <= 0.02
    assert np.array_equal(more[outside], plain[outside]) and not np.array_equal(more, plain)
    assert SayAnythingPipeline(model).mouth_guidance == 1.0
    model.config = dataclasses.replace(config, mouth_guidance=1.5)
    assert SayAnythingPipeline.from_config(model, ModelConfig(runtime="torch")).mouth_guidance == 1.5
    off = SayAnythingPipeline.from_config(model, ModelConfig(runtime="torch", mouth_guidance=1.0))
    assert off.mouth_guidance == 1.0
    torch.manual_seed(0)
    other = SayAnythingModel(c).eval()  # its denoiser hears the audio trunk's tokens too
    try:
        SayAnythingPipeline(other, mouth_guidance=1.5)
    except ModelError as e:
        assert "\n" not in str(e) and "model.mouth_guidance = 1" in str(e)
    else:
        raise AssertionError("mouth guidance ran on a model that does not hear the mouth parameters alone")


def test_a_guidance_target_folds_the_mouth_guidance_into_one_run(tmp_path) -> None:  # noqa: ANN001
    """guidance_target g: the loss is against the frozen starting model's guided estimate, so
    with g = 1 it starts at zero (the model is its own target), and training moves one run of
    the model towards what two runs of the starting model gave with guidance g."""
    from model.train.fewstep import _Step, _tensors

    c = _config()
    config = dataclasses.replace(c, mouth_film=True, audio=dataclasses.replace(c.audio, mouth_only=True))
    torch.manual_seed(0)
    model = SayAnythingModel(config)
    latents = encode_latents(model, _chunkset(4, config))
    b = _tensors(latents, torch.device("cpu"))
    sigma, noise = torch.full((4,), 80.0), torch.randn(latents.target.shape)
    forced = torch.zeros(4)
    model.eval()
    teacher = copy.deepcopy(model)
    with torch.no_grad():
        same = _Step(model, FewStepConfig(guidance_target=1.0), teacher)(b, sigma, noise, forced)[1]
        tc = FewStepConfig(guidance_target=3.0)
        before = _Step(model, tc, teacher)(b, sigma, noise, forced)[1]
    assert float(same) < 1e-10 and float(before) > 1e-6
    # a small step down the loss's gradient moves the model's one run towards the guided target
    step = _Step(model, tc, teacher)
    step(b, sigma, noise, forced)[1].backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.05 * p.grad
        after = _Step(model, tc, teacher)(b, sigma, noise, forced)[1]
    assert float(after) < float(before)
    # and the training loop takes it (the teacher is the model as it started)
    trained = train_fewstep(model, latents, dataclasses.replace(tc, steps=2, batch_size=2), str(tmp_path / "g"))
    assert isinstance(trained, SayAnythingModel)
    no_mouth = SayAnythingModel(c)  # its denoiser hears the audio trunk too
    try:
        train_fewstep(no_mouth, latents, tc, str(tmp_path / "n"))
    except InputError as e:
        assert "--mouth-only" in str(e)
    else:
        raise AssertionError("a guidance target was accepted for a model that does not hear the mouth alone")


def test_remasked_latents_are_the_latents_of_the_redrawn_masks(tmp_path) -> None:  # noqa: ANN001
    """``remask_latents`` (training for a larger mask from default-mask caches) re-encodes exactly
    what ``encode_latents`` would from chunks carrying the redrawn masks, and keeps the rest."""
    import cv2

    config = _config()
    model = SayAnythingModel(config).eval()
    data = _chunkset(6, config)
    R = config.resolution_px
    ell = np.zeros((R, R), np.float32)
    cv2.ellipse(ell, (R // 2, 2 * R // 3), (R // 5, R // 7), 0, 0, 360, 1.0, -1)
    feather = 6 * R / 256  # the engine's default feather at this crop size
    data.masks[:] = (cv2.GaussianBlur(ell, (5, 5), feather) > 0.02).astype(np.uint8)
    halves = [str(tmp_path / "a.npz"), str(tmp_path / "b.npz")]
    data.take(slice(0, 3)).save(halves[0])
    data.take(slice(3, 6)).save(halves[1])
    base = encode_latents(model, data)
    got = remask_latents(model, base, halves, (1.3, 1.2), batch=2)
    redrawn = np.stack([[rescaled_mask(m, (1.3, 1.2), feather) for m in c] for c in data.masks])
    bigger = dataclasses.replace(data, masks=redrawn)
    assert bigger.masks.sum() > 1.3 * data.masks.sum()
    want = encode_latents(model, bigger)
    assert np.allclose(got.masked.astype(np.float32), want.masked.astype(np.float32), atol=2e-3)
    assert np.array_equal(got.mask, want.mask) and not np.array_equal(got.mask, base.mask)
    assert got.target is base.target and got.reference is base.reference


def test_the_decoder_stage_derives_a_larger_masks_chunks_from_the_default_caches(tmp_path) -> None:  # noqa: ANN001
    """``decoder.training_chunks`` for a model trained for a larger mask (``recipe_v2 --mask-scale``)
    reads the default-mask chunk caches with every mask redrawn as ``remask_latents`` redraws it, so
    the head and decoder are tuned on the region the engine will paste; the default caches are
    read as they are."""
    import cv2

    from model.train.decoder import training_chunks

    config = _config()
    data = _chunkset(4, config)
    R = config.resolution_px
    ell = np.zeros((R, R), np.float32)
    cv2.ellipse(ell, (R // 2, 2 * R // 3), (R // 5, R // 7), 0, 0, 360, 1.0, -1)
    feather = 6 * R / 256
    data.masks[:] = (cv2.GaussianBlur(ell, (5, 5), feather) > 0.02).astype(np.uint8)
    px = config.resolution_px
    data.take(slice(0, 2)).save(str(tmp_path / f"train_0_2_{px}_{config.chunk_frames}_{CACHE_VERSION}.npz"))
    data.take(slice(2, 4)).save(str(tmp_path / f"train_2_4_{px}_{config.chunk_frames}_{CACHE_VERSION}.npz"))
    same = training_chunks(config, str(tmp_path), 4)
    assert np.array_equal(same.masks, data.masks) and np.array_equal(same.frames, data.frames)
    bigger = training_chunks(dataclasses.replace(config, mask_scale=(1.2, 1.1)), str(tmp_path), 4)
    want = np.stack([[rescaled_mask(m, (1.2, 1.1), feather) for m in c] for c in data.masks])
    assert np.array_equal(bigger.masks, want) and bigger.masks.sum() > 1.2 * data.masks.sum()
    assert np.array_equal(bigger.inputs, data.inputs) and np.array_equal(bigger.audio, data.audio)


def test_predicted_latents_are_what_the_engine_decodes_and_tune_the_decoder(tmp_path) -> None:  # noqa: ANN001
    """``predicted_latents`` is the pipeline's own one-step estimate of a chunk (same noise, same
    mouth gain), up to the float16 of the cache; ``tune_decoder`` given them lowers its loss and
    changes only the decoder."""
    from model.train.fewstep import predicted_latents

    c = _config()
    audio = dataclasses.replace(c.audio, mouth_only=True)
    config = dataclasses.replace(c, mouth_film=True, mouth_gain=1.3, audio=audio)
    torch.manual_seed(0)
    model = SayAnythingModel(config).eval()
    chunks = _chunkset(3, config)
    latents = encode_latents(model, chunks)
    pred = predicted_latents(model, latents, batch=2)
    assert pred.shape == latents.target.shape and pred.dtype == np.float16
    pipe = SayAnythingPipeline(model, runtime="torch", decode_box=False, reuse_overlap=False)
    seen: list[torch.Tensor] = []

    def capture(z: torch.Tensor) -> torch.Tensor:
        seen.append(z.clone())
        return torch.zeros(*z.shape[:2], 3, z.shape[-2] * 4, z.shape[-1] * 4)

    pipe._decode = capture  # type: ignore[method-assign]
    for i in range(len(chunks)):
        pipe.generate(_model_chunk(chunks, i), pipe.encode_reference(chunks.reference[i]), 1)
        torch.testing.assert_close(torch.from_numpy(pred[i]).float(), seen[-1][0], atol=0.05, rtol=0.02)
    assert not np.allclose(pred[0], pred[1], atol=0.05)  # a function of each chunk's conditions
    changed = _tuned_weights(model, chunks, latents, pred, p_predicted=1.0)
    assert changed and all(k.startswith(("vae.model.decoder.", "vae.model.post_quant_conv.")) for k in changed)


def test_predicted_latents_from_the_true_mouth_ignore_the_audio() -> None:
    """``true_mouth=True``: the estimate is made from the chunk's true mouth parameters (through
    the model's own mouth tokens and FiLM), so other audio gives the same estimate and another
    true mouth a different one; a model that does not hear the mouth parameters alone is refused."""
    from model.train.fewstep import predicted_latents

    c = _config()
    config = dataclasses.replace(c, mouth_film=True, audio=dataclasses.replace(c.audio, mouth_only=True))
    torch.manual_seed(0)
    model = SayAnythingModel(config).eval()
    latents = encode_latents(model, _chunkset(2, config))
    base = predicted_latents(model, latents, true_mouth=True)
    other_audio = dataclasses.replace(latents, audio=np.flip(latents.audio, axis=0).copy())
    np.testing.assert_array_equal(predicted_latents(model, other_audio, true_mouth=True), base)
    assert not np.array_equal(predicted_latents(model, other_audio), predicted_latents(model, latents))
    other_mouth = dataclasses.replace(latents, mouth=latents.mouth + np.float32(0.5))
    assert not np.allclose(predicted_latents(model, other_mouth, true_mouth=True), base, atol=1e-3)
    with pytest.raises(ValueError, match="needs a mouth_only model"):
        predicted_latents(SayAnythingModel(_config()).eval(), latents, true_mouth=True)


def test_decoder_tuning_without_true_context_sees_the_truth_only_inside_the_mask() -> None:
    """``true_context=False``: a true-latent step decodes the truth inside the mask and the
    model's estimate around it (the context the engine's decoder gets when dubbing)."""
    from model.pipeline import latent_box
    from model.train.fewstep import predicted_latents, tune_decoder

    config = _config()
    torch.manual_seed(0)
    model = SayAnythingModel(config).eval()
    chunks = _chunkset(1, config)
    latents = encode_latents(model, chunks)
    pred = predicted_latents(model, latents)
    seen: list[torch.Tensor] = []
    real = model.vae.decode

    def capture(z: torch.Tensor) -> torch.Tensor:
        seen.append(z.detach().clone())
        return real(z)

    model.vae.decode = capture  # type: ignore[method-assign]
    tune_decoder(model, chunks, latents, 0.0, predicted=pred, p_predicted=0.0, steps=1, true_context=False)
    y0, y1, x0, x1 = latent_box(torch.from_numpy(latents.mask[0]).amax(dim=(0, 1)))  # type: ignore[misc]
    box = (slice(None), slice(None), slice(None), slice(y0, y1), slice(x0, x1))
    inside = torch.from_numpy(latents.mask[0:1][box]).bool().expand_as(seen[0])
    truth, estimate = torch.from_numpy(latents.target[0:1][box]).float(), torch.from_numpy(pred[0:1][box]).float()
    assert inside.any() and (~inside).any()
    torch.testing.assert_close(seen[0][inside], truth.expand_as(seen[0])[inside])
    torch.testing.assert_close(seen[0][~inside], estimate.expand_as(seen[0])[~inside])


def test_chunk_caches_tile_the_clips_of_one_crop_and_mask_geometry(tmp_path) -> None:  # noqa: ANN001
    # recipe_v2 and the decoder stage reuse caches built in parts, never another geometry's
    from model.configs import TINY
    from model.train.dataset import mask_tag
    from model.train.recipe_v2 import chunk_caches

    zoomed = mask_tag(dataclasses.replace(TINY, crop_zoom=1.5))
    assert mask_tag(TINY) == "" and zoomed == "_z1.5"
    assert mask_tag(dataclasses.replace(TINY, mask_scale=(1.2, 1.2))) == "_m1.2x1.2"
    for name in ("train_0_100_64_8", "train_100_200_64_8", "train_0_100_64_8"):
        (tmp_path / f"{name}_{CACHE_VERSION}.npz").write_bytes(b"")
    (tmp_path / f"train_100_200_64_8_{CACHE_VERSION}{zoomed}.npz").write_bytes(b"")
    (tmp_path / f"train_0_100_64_8_{CACHE_VERSION}_m1.2x1.2.npz").write_bytes(b"")
    got = chunk_caches(str(tmp_path), 200)
    assert got is not None and [os.path.basename(p) for p in got] == [
        f"train_0_100_64_8_{CACHE_VERSION}.npz",
        f"train_100_200_64_8_{CACHE_VERSION}.npz",
    ]
    assert chunk_caches(str(tmp_path), 200, zoomed) is None  # the zoomed first half is missing
    (tmp_path / f"train_0_100_64_8_{CACHE_VERSION}{zoomed}.npz").write_bytes(b"")
    got = chunk_caches(str(tmp_path), 200, zoomed)
    assert got is not None and all(p.endswith(f"{zoomed}.npz") for p in got) and len(got) == 2
    assert chunk_caches(str(tmp_path), 300) is None
    assert chunk_caches(str(tmp_path / "not-made-yet"), 200) is None  # a fresh machine: built, not a crash


def test_the_decoder_stage_never_writes_over_a_checkpoint(tmp_path) -> None:  # noqa: ANN001
    # python -m model.train.decoder --out DIR refuses a DIR that already holds a checkpoint,
    # before any work, and leaves it as it was
    import pytest

    from model.train.decoder import main

    out = tmp_path / "v23"
    out.mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(SystemExit, match="already holds a checkpoint"):
        main(["--init", str(tmp_path / "nowhere"), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["config.json"] and (out / "config.json").read_text() == "{}"


def test_swapped_inputs_train_towards_the_starting_models_estimate_from_the_other_input(tmp_path) -> None:  # noqa: ANN001
    """swap_inputs: each chunk has two inputs that differ only in the mouth; the trained model sees
    one (drawn per sample) and its target is the frozen starting model's estimate from the other,
    so it starts at zero loss where the two inputs are the same and not where they differ."""
    from model.train.fewstep import PairedLatentSet, _Step, _tensors, encode_masked

    c = _config()
    config = dataclasses.replace(c, mouth_film=True, audio=dataclasses.replace(c.audio, mouth_only=True))
    torch.manual_seed(0)
    model = SayAnythingModel(config).eval()
    chunks = _chunkset(4, config)
    latents = encode_latents(model, chunks)
    assert np.array_equal(encode_masked(model, chunks.inputs, chunks.masks), latents.masked)
    fields = {k: getattr(latents, k) for k in type(latents).__dataclass_fields__}
    other = np.random.default_rng(1).integers(0, 256, chunks.inputs.shape, dtype=np.uint8)
    paired = PairedLatentSet(**fields, masked_alt=encode_masked(model, other, chunks.masks))
    same = PairedLatentSet(**fields, masked_alt=latents.masked.copy())
    assert isinstance(paired.take(np.array([1, 0])), PairedLatentSet)
    sigma, noise, forced = torch.full((4,), 80.0), torch.randn(latents.target.shape), torch.zeros(4)
    tc = FewStepConfig(swap_inputs=True)
    teacher = copy.deepcopy(model)
    with torch.no_grad():
        for swap in (torch.zeros(4), torch.ones(4)):
            assert float(_Step(model, tc, teacher)(dict(_tensors(same, torch.device("cpu")), swap=swap), sigma, noise,
                                                   forced)[1]) < 1e-10  # fmt: skip
        b = dict(_tensors(paired, torch.device("cpu")), swap=torch.tensor([0.0, 1.0, 0.0, 1.0]))
        got = float(_Step(model, tc, teacher)(b, sigma, noise, forced)[1])
        # by hand: sample 1 and 3 see the second input, and are scored against the estimate from the first
        seen = torch.where(b["swap"].reshape(-1, 1, 1, 1, 1) > 0, b["masked_alt"], b["masked"])
        shown = torch.where(b["swap"].reshape(-1, 1, 1, 1, 1) > 0, b["masked"], b["masked_alt"])
        enc = model.audio_encoder
        assert isinstance(enc, MouthAudioEncoder)
        _, given = enc.features(b["audio"])
        ids = model.id_guider(b["reference"])
        xn = b["target"] + 80.0 * noise
        d = model.denoise(xn, sigma, Conditions(seen, b["mask"], enc.tokens_from_mouth(given), ids, given)).float()
        x0 = teacher.denoise(xn, sigma, Conditions(shown, b["mask"], enc.tokens_from_mouth(given), ids, given)).float()
        region = 0.05 + b["mask"]
        want = ((region * (d - x0) ** 2).sum(dim=(1, 2, 3, 4)) / (region.sum(dim=(1, 2, 3, 4)) * x0.shape[2])).mean()
    assert got > 1e-6 and abs(got - float(want)) < 1e-5 * max(1.0, float(want))
    trained = train_fewstep(model, paired, dataclasses.replace(tc, steps=2, batch_size=2), str(tmp_path / "s"))
    assert isinstance(trained, SayAnythingModel)
    with pytest.raises(InputError, match="PairedLatentSet"):
        train_fewstep(model, latents, tc, str(tmp_path / "p"))


def test_recipe_v2_refuses_a_bad_crop_zoom_or_guidance_target_before_any_work(tmp_path) -> None:  # noqa: ANN001
    import pytest

    from model.train.recipe_v2 import main

    out = str(tmp_path / "run")
    with pytest.raises(SystemExit, match="--crop-zoom 0.5: must be >= 1"):
        main(["--crop-zoom", "0.5", "--out", out, "--cache", str(tmp_path)])
    with pytest.raises(SystemExit, match="use one of them"):
        main(["--crop-zoom", "1.5", "--mask-scale", "1.2,1.2", "--out", out, "--cache", str(tmp_path)])
    with pytest.raises(SystemExit, match="--guidance-target: needs --film-from CHECKPOINT --mouth-only"):
        main(["--guidance-target", "1.5", "--out", out, "--cache", str(tmp_path)])
    with pytest.raises(SystemExit, match="--swap-inputs: needs --film-from CHECKPOINT --mouth-only"):
        main(["--swap-inputs", "--out", out, "--cache", str(tmp_path)])
    with pytest.raises(SystemExit, match="--response-weight: needs --film-from CHECKPOINT --mouth-only"):
        main(["--response-weight", "2", "--out", out, "--cache", str(tmp_path)])
    with pytest.raises(SystemExit, match="--response-weight -1.0: must be >= 0"):
        main(["--response-weight", "-1", "--out", out, "--cache", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_audio_from_swaps_the_head_and_keeps_everything_else(tmp_path) -> None:  # noqa: ANN001
    """recipe_v2 --audio-from: the audio trunk and head of an audio pre-training run replace the
    model's (a head of another width included); the denoiser, the ID-guider, the VAE and the mouth
    embedding the denoiser reads stay bit for bit; --steps 0 saves the result, never over a
    checkpoint; a model that is not mouth_only is refused."""
    import pytest

    from model.checkpoint import save_checkpoint
    from model.train.recipe_v2 import AUDIO_TRUNK, main

    c = _config()
    config = dataclasses.replace(c, mouth_film=True, audio=dataclasses.replace(c.audio, mouth_only=True))
    torch.manual_seed(0)
    base = SayAnythingModel(config).eval()
    save_checkpoint(base, str(tmp_path / "base"))
    head_cfg = dataclasses.replace(config.audio, hidden=24, mouth_only=False)
    head = MouthAudioEncoder(head_cfg, config.unet.cross_attention_dim)
    os.makedirs(tmp_path / "audio")
    torch.save(
        {"config": head_cfg.__dict__, "dim": 8, "state": head.state_dict()}, tmp_path / "audio" / "audio_encoder.pt"
    )
    args = ["--film-from", str(tmp_path / "base"), "--mouth-only", "--audio-from", str(tmp_path / "audio")]
    main([*args, "--steps", "0", "--out", str(tmp_path / "swapped"), "--cache", str(tmp_path / "cache")])
    got = load_checkpoint(str(tmp_path / "swapped"))
    assert got.config.audio.hidden == 24 and got.config.audio.mouth_only
    fp16 = lambda state: {k: v.half().float() for k, v in state.items()}  # noqa: E731 (saved as float16)
    old, new, src = fp16(base.state_dict()), got.state_dict(), fp16(head.state_dict())
    for k, v in new.items():
        sub = k.removeprefix("audio_encoder.")
        if k.startswith("audio_encoder.") and sub.startswith(AUDIO_TRUNK):
            torch.testing.assert_close(v, src[sub])
        else:
            torch.testing.assert_close(v, old[k])
    audio = torch.randn(1, 2, 4480) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(got.audio_encoder.features(audio)[1], head.half().float().features(audio)[1])
    with pytest.raises(SystemExit, match="already holds a checkpoint"):
        main([*args, "--steps", "0", "--out", str(tmp_path / "swapped"), "--cache", str(tmp_path / "cache")])
    with pytest.raises(SystemExit, match="needs --film-from"):
        main(["--audio-from", str(tmp_path / "audio"), "--out", str(tmp_path / "x"), "--cache", str(tmp_path)])
    assert not (tmp_path / "x").exists() and not (tmp_path / "cache").exists()


def test_add_head_from_averages_two_heads_and_keeps_everything_else(tmp_path) -> None:  # noqa: ANN001
    """recipe_v2 --add-head-from: another checkpoint's audio trunk and head join the model's as a
    second head; the mouth parameters are the two heads' mean, every other weight stays bit for
    bit, and a donor of another audio shape, or a model that is not mouth_only, is refused."""
    import pytest

    from model.checkpoint import save_checkpoint
    from model.train.recipe_v2 import main, with_extra_head

    c = _config()
    config = dataclasses.replace(c, mouth_film=True, audio=dataclasses.replace(c.audio, mouth_only=True))
    torch.manual_seed(0)
    base = SayAnythingModel(config).eval()
    donor = SayAnythingModel(config).eval()  # other random weights
    save_checkpoint(base, str(tmp_path / "base"))
    save_checkpoint(donor, str(tmp_path / "donor"))
    args = ["--film-from", str(tmp_path / "base"), "--mouth-only", "--add-head-from", str(tmp_path / "donor")]
    main([*args, "--steps", "0", "--out", str(tmp_path / "two"), "--cache", str(tmp_path / "cache")])
    got = load_checkpoint(str(tmp_path / "two"))
    assert got.config.audio.extra_heads == 1
    fp16 = lambda state: {k: v.half().float() for k, v in state.items()}  # noqa: E731 (saved as float16)
    old, new = fp16(base.state_dict()), got.state_dict()
    assert all(k in new and torch.equal(v, new[k]) for k, v in old.items())  # the model's own, unchanged
    base16, donor16 = (load_checkpoint(str(tmp_path / n)).half().float() for n in ("base", "donor"))
    audio = torch.randn(1, 3, 4480) * 0.1
    with torch.no_grad():
        a, b = base16.audio_encoder.features(audio)[1], donor16.audio_encoder.features(audio)[1]
        tokens, mouth = got.audio_encoder.features(audio)
        assert not torch.allclose(a, b)
        torch.testing.assert_close(mouth, (a + b) / 2)
        torch.testing.assert_close(tokens, base16.audio_encoder.tokens_from_mouth(mouth))
    wide = SayAnythingModel(dataclasses.replace(config, audio=dataclasses.replace(config.audio, hidden=24)))
    save_checkpoint(wide, str(tmp_path / "wide"))
    with pytest.raises(SystemExit, match="differs from the model's in \\['hidden'\\]"):
        with_extra_head(base, str(tmp_path / "wide"))
    with pytest.raises(SystemExit, match="--add-head-from .*missing.*config.json does not exist"):
        with_extra_head(base, str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match="must be a mouth_only one"):
        with_extra_head(SayAnythingModel(c), str(tmp_path / "donor"))
    with pytest.raises(ModelError, match="extra_heads needs audio.mouth_only = true"):
        MouthAudioEncoder(dataclasses.replace(c.audio, extra_heads=1), c.unet.cross_attention_dim)
    with pytest.raises(SystemExit, match="needs --film-from"):
        main(["--add-head-from", str(tmp_path / "donor"), "--out", str(tmp_path / "x"), "--cache", str(tmp_path)])
    assert not (tmp_path / "x").exists()


def test_the_audio_stage_and_audio_from_refuse_bad_folders_before_any_work(tmp_path) -> None:  # noqa: ANN001
    """python -m model.train.audio never writes over a head; recipe_v2 --audio-from a folder with
    no head, or into a model that is not mouth_only, says so in one line."""
    import pytest

    from model.train import audio
    from model.train.recipe_v2 import with_audio_head

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "audio_encoder.pt").write_bytes(b"kept")
    with pytest.raises(SystemExit, match="already holds an audio_encoder.pt"):
        audio.main(["--out", str(tmp_path / "old"), "--cache", str(tmp_path / "cache")])
    assert (tmp_path / "old" / "audio_encoder.pt").read_bytes() == b"kept" and not (tmp_path / "cache").exists()
    model = SayAnythingModel(_config())  # a mouth model, not mouth_only
    with pytest.raises(SystemExit, match="no audio_encoder.pt there"):
        with_audio_head(model, str(tmp_path / "empty"))
    with pytest.raises(SystemExit, match="must be a mouth_only one"):
        with_audio_head(model, str(tmp_path / "old"))


def test_shared_frame_noise_starts_every_frame_from_one_draw() -> None:
    """model.frame_noise = "shared" (the default): every frame of a chunk starts from one noise
    draw, so on a chunk of identical frames, masks and audio the frames differ only by what the
    network itself tells apart (its temporal layers know each frame's place), about half as much
    as with a draw per frame ("independent")."""
    from stream.config import ModelConfig

    config = _config()
    torch.manual_seed(0)
    model = SayAnythingModel(config).eval()
    one = make_chunk(config)
    L = config.chunk_frames
    same = dataclasses.replace(
        one,
        frames=np.repeat(one.frames[:1], L, axis=0),
        masks=np.repeat(one.masks[:1], L, axis=0),
        audio=np.repeat(one.audio[:1], L, axis=0),
    )
    change = {}
    for noise in ("shared", "independent"):
        pipe = SayAnythingPipeline.from_config(model, ModelConfig(runtime="torch", frame_noise=noise))
        assert pipe.shared_noise == (noise == "shared")
        seen: list[torch.Tensor] = []
        denoise = pipe._denoise
        pipe._denoise = lambda x, sigma, cond, f=denoise, got=seen: (got.append(x.clone()), f(x, sigma, cond))[1]  # type: ignore[method-assign]
        out = pipe.generate(same, pipe.encode_reference(same.frames[0]), 1).astype(np.float32)
        x = seen[0][0]  # (F, C, h, w): the noisy start the denoiser saw
        assert all(torch.equal(x[0], x[k]) for k in range(1, L)) == (noise == "shared")
        change[noise] = float(np.mean([np.abs(out[k] - out[0]).mean() for k in range(1, L)]))
    assert change["shared"] < 0.75 * change["independent"]


def test_the_anchored_head_fine_tune_learns_new_voices_and_keeps_its_answers_on_the_anchor() -> None:
    """``anchored_finetune``: the head fits the new voices' truth, while its predictions on the
    anchor's audio stay much closer to what they were than after the same fine-tune unanchored;
    the token embeddings the denoiser reads through are not touched."""
    from model.train.audio import AudioTrainConfig, anchored_finetune, predict
    from model.train.voices import FrameSet

    cfg = AudioEncoderConfig(kind="mouth", n_mels=16, hidden=16, mouth_only=True)
    rng = np.random.default_rng(0)
    n = 256
    t = np.linspace(0, 1, 4480, dtype=np.float32)
    freq = rng.uniform(100, 2000, n).astype(np.float32)
    amp = rng.uniform(0.0, 0.3, n).astype(np.float32)
    audio = (amp[:, None] * np.sin(2 * np.pi * freq[:, None] * t[None])).astype(np.float16)
    mouth = np.stack([amp / 0.3, freq / 2000, 1 - amp / 0.3, np.zeros(n)], 1).astype(np.float32)
    data = FrameSet(audio, mouth, np.ones(n, bool), np.arange(n, dtype=np.int32))
    anchor = (0.1 * rng.standard_normal((128, 4480))).astype(np.float16)
    tc = AudioTrainConfig(steps=60, batch_size=32, lr=3e-3)

    def fit_error(enc: MouthAudioEncoder) -> float:
        return float(((predict(enc, audio) - mouth) ** 2).mean())

    def run(weight: float) -> tuple[float, float, MouthAudioEncoder]:
        torch.manual_seed(0)
        enc = MouthAudioEncoder(cfg, 16).eval()
        before, start = predict(enc, anchor), fit_error(enc)
        anchored_finetune(enc, data, anchor, tc, anchor_weight=weight, anchor_batch=32)
        return float(np.abs(predict(enc, anchor) - before).mean()), fit_error(enc) / start, enc

    free_moved, free_err, _ = run(0.0)
    held_moved, held_err, enc = run(4.0)
    assert held_err < 0.8 and free_err < 0.8  # both learn the new voices
    assert held_moved < 0.5 * free_moved  # the anchor keeps its answers
    torch.manual_seed(0)
    fresh = MouthAudioEncoder(cfg, 16)
    for name in ("mouth_embed.weight", "mouth_tokens.0.weight"):
        torch.testing.assert_close(enc.state_dict()[name], fresh.state_dict()[name])
    assert all(p.requires_grad for p in enc.parameters())


def test_the_head_fine_tune_refuses_what_it_cannot_use(tmp_path) -> None:  # noqa: ANN001
    """``python -m model.train.audio``: ``--lr`` or ``--mbrola-utterances`` without ``--from``,
    ``--anchor-espeak`` with no other new voices, and ``--from`` a model without one ``mouth``
    head each get one line naming the fix, before any speech is built."""
    import pytest

    from model.checkpoint import save_checkpoint
    from model.train.audio import main

    with pytest.raises(SystemExit, match="--lr is for --from"):
        main(["--out", str(tmp_path / "a"), "--lr", "1e-3"])
    with pytest.raises(SystemExit, match="are for --from CK"):
        main(["--out", str(tmp_path / "a"), "--mbrola-utterances", "10"])
    with pytest.raises(SystemExit, match="leaves no new voices"):
        main(
            [
                "--from",
                str(tmp_path / "mel"),
                "--out",
                str(tmp_path / "c"),
                "--anchor-espeak",
                "--flite-utterances",
                "0",
            ]
        )
    save_checkpoint(SayAnythingModel(micro_config(chunk_frames=4)), str(tmp_path / "mel"))
    with pytest.raises(SystemExit, match="needs a model with one 'mouth' audio head"):
        main(["--from", str(tmp_path / "mel"), "--out", str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="already holds a checkpoint"):
        main(["--from", str(tmp_path / "mel"), "--out", str(tmp_path / "mel")])


def test_a_response_anchor_pulls_the_denoisers_answer_to_the_mouth_back(tmp_path) -> None:  # noqa: ANN001
    """response_weight: the denoiser's response to the mouth (its estimate minus the same with
    the mouth closed) is held to the frozen starting model's: the term is zero for the starting
    model itself, positive for a changed one, and a step down its gradient brings it back; the
    training loop takes it, and refuses a model whose denoiser does not hear the mouth alone."""
    from model.train.fewstep import _Step, _tensors

    c = _config()
    config = dataclasses.replace(c, mouth_film=True, audio=dataclasses.replace(c.audio, mouth_only=True))
    torch.manual_seed(0)
    start = SayAnythingModel(config).eval()
    latents = encode_latents(start, _chunkset(4, config))
    b = _tensors(latents, torch.device("cpu"))
    sigma, noise = torch.full((4,), 1.0), torch.randn(latents.target.shape)
    given = torch.rand(4, config.chunk_frames, 4)

    def response(model: SayAnythingModel) -> torch.Tensor:
        enc = model.audio_encoder
        cond = Conditions(b["masked"], b["mask"], enc.tokens_from_mouth(given), model.id_guider(b["reference"]), given)
        xn = b["target"] + sigma.reshape(-1, 1, 1, 1, 1) * noise
        d = model.denoise(xn, sigma, cond).float()
        return _Step(model, FewStepConfig(response_weight=1.0), start)._response(d, xn, sigma, b, given, cond)

    with torch.no_grad():
        assert float(response(copy.deepcopy(start))) < 1e-10
    changed = copy.deepcopy(start)
    with torch.no_grad():
        for p in changed.unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    before = response(changed)
    before.backward()
    with torch.no_grad():
        for p in changed.parameters():
            if p.grad is not None:
                p -= 2.0 * p.grad
        after = response(changed)
    assert float(before.detach()) > 1e-6 and float(after) < 0.95 * float(before.detach())
    tc = FewStepConfig(steps=2, batch_size=2, save_every=100, response_weight=2.0, truth_mouth=1.0)
    assert isinstance(train_fewstep(copy.deepcopy(start), latents, tc, str(tmp_path / "r")), SayAnythingModel)
    try:
        train_fewstep(SayAnythingModel(c), latents, tc, str(tmp_path / "n"))
    except InputError as e:
        assert "response anchor" in str(e)
    else:
        raise AssertionError("a response anchor was accepted for a model that does not hear the mouth alone")
