"""The context head after the VAE decoder (``model/vae.py``, ``ContextHead``): an untrained head
changes nothing, the engine feeds it what training feeds it, its checkpoint loads strictly, and
the decoder stage trains it with the decoder."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_fewstep import _chunkset, _config, _model_chunk, _tuned_weights

from model.checkpoint import load_checkpoint, save_checkpoint
from model.network import SayAnythingModel
from model.pipeline import SayAnythingPipeline
from model.train.fewstep import encode_latents, predicted_latents
from model.vae import ContextHead


def _with_head(model: SayAnythingModel, channels: int = 8) -> SayAnythingModel:
    grown = SayAnythingModel(dataclasses.replace(model.config, decoder_head=channels))
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("context_head.") for k in missing)
    return grown.eval()


def test_an_untrained_head_changes_nothing_and_a_trained_one_only_the_mask() -> None:
    torch.manual_seed(0)
    config = _config()
    plain = SayAnythingModel(config).eval()
    headed = _with_head(plain)
    chunks = _chunkset(1, config)
    outs = []
    for model in (plain, headed):
        pipe = SayAnythingPipeline(model, runtime="torch", reuse_overlap=False)
        outs.append(pipe.generate(_model_chunk(chunks, 0), pipe.encode_reference(chunks.reference[0]), 1))
    assert np.array_equal(outs[0], outs[1])  # the head's last convolution starts at zero
    with torch.no_grad():
        headed.context_head.conv_out.bias.fill_(0.5)  # type: ignore[union-attr]
    pipe = SayAnythingPipeline(headed, runtime="torch", reuse_overlap=False)
    ref = pipe.encode_reference(chunks.reference[0])
    assert ref.pixels is not None and ref.latent is not None
    got = pipe.generate(_model_chunk(chunks, 0), ref, 1)
    inside = chunks.masks[0].astype(bool)
    assert not np.array_equal(got[inside], outs[0][inside])
    assert np.array_equal(got[~inside], chunks.inputs[0][~inside])  # outside the mask: the input, exact


def test_the_texture_probe_of_a_headed_model_is_its_decoder_alone() -> None:
    # probe_reference: the session's texture probe (model.texture = "auto") renders without the
    # head, exactly as the same weights without a head draw; a model without a head has no probe
    torch.manual_seed(0)
    config = _config()
    plain = SayAnythingModel(config).eval()
    headed = _with_head(plain)
    with torch.no_grad():
        headed.context_head.conv_out.bias.fill_(0.5)  # type: ignore[union-attr]
    chunks = _chunkset(1, config)
    pipes = [SayAnythingPipeline(m, runtime="torch", reuse_overlap=False) for m in (plain, headed)]
    assert pipes[0].probe_reference(pipes[0].encode_reference(chunks.reference[0])) is None
    ref = pipes[1].encode_reference(chunks.reference[0])
    probe = pipes[1].probe_reference(ref)
    assert probe is not None and probe.pixels is None and probe.latent is None
    want = pipes[0].generate(_model_chunk(chunks, 0), pipes[0].encode_reference(chunks.reference[0]), 1)
    assert np.array_equal(pipes[1].generate(_model_chunk(chunks, 0), probe, 1), want)
    assert not np.array_equal(pipes[1].generate(_model_chunk(chunks, 0), ref, 1), want)


def test_the_head_reads_the_input_around_the_mask_and_the_reference_error() -> None:
    torch.manual_seed(0)
    head = ContextHead(8)
    torch.nn.init.normal_(head.conv_out.weight, std=0.1)
    dec, frames = torch.rand(2, 3, 12, 12) * 2 - 1, torch.rand(2, 3, 12, 12) * 2 - 1
    masks = torch.zeros(2, 1, 12, 12)
    masks[..., 4:8, 4:8] = 1
    ref, ref_dec = torch.rand(1, 3, 12, 12), torch.rand(1, 3, 12, 12)
    base = head(dec, frames, masks, ref, ref_dec)
    inside = frames.clone()
    inside[..., 4:8, 4:8] = 0.3  # what the input shows inside the mask is never read
    assert torch.equal(head(dec, inside, masks, ref, ref_dec), base)
    assert not torch.equal(head(dec, -frames, masks, ref, ref_dec), base)  # around it, it is
    assert not torch.equal(head(dec, frames, masks, ref, ref_dec + 0.1), base)  # the reference's error counts
    # with a gap, the input within that many pixels of the mask is not read either, and beyond it is
    gapped = ContextHead(8, gap=2)
    gapped.load_state_dict(head.state_dict())
    near = frames.clone()
    near[..., 2:10, 2:10] = 0.3
    assert torch.equal(gapped(dec, near, masks, ref, ref_dec), gapped(dec, frames, masks, ref, ref_dec))
    assert not torch.equal(gapped(dec, -frames, masks, ref, ref_dec), gapped(dec, frames, masks, ref, ref_dec))
    blind = ContextHead(8, gap=100)  # a gap the crop's size or more: no input at all
    blind.load_state_dict(head.state_dict())
    assert torch.equal(blind(dec, -frames, masks, ref, ref_dec), blind(dec, frames, masks, ref, ref_dec))


def test_a_headed_checkpoint_saves_and_loads_strictly(tmp_path) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    model = _with_head(SayAnythingModel(_config()), 8)
    save_checkpoint(model, str(tmp_path / "ck"))
    back = load_checkpoint(str(tmp_path / "ck"))
    assert back.config.decoder_head == 8 and back.context_head is not None
    for k, v in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v)
    assert "context_head" in back.parameter_count()


def test_the_decoder_stage_trains_the_head_with_the_decoder() -> None:
    torch.manual_seed(0)
    config = _config()
    model = _with_head(SayAnythingModel(config))
    chunks = _chunkset(3, config)
    latents = encode_latents(model, chunks)
    pred = predicted_latents(model, latents, batch=2)
    changed = _tuned_weights(model, chunks, latents, pred, p_predicted=0.5)
    assert any(k.startswith("context_head.") for k in changed)
    assert all(k.startswith(("vae.model.decoder.", "vae.model.post_quant_conv.", "context_head.")) for k in changed)
    assert not model.context_head.training and not any(p.requires_grad for p in model.context_head.parameters())  # type: ignore[union-attr]


def test_the_head_alone_trains_over_the_frozen_decoder() -> None:
    from model.train.fewstep import tune_decoder

    torch.manual_seed(0)
    config = _config()
    model = SayAnythingModel(config)
    chunks = _chunkset(3, config)
    latents = encode_latents(model, chunks)
    pred = predicted_latents(model, latents, batch=2)
    with pytest.raises(ValueError, match="no context head"):
        tune_decoder(model, chunks, latents, 0.0, predicted=pred, steps=1, head_only=True)
    model = _with_head(model)
    changed = _tuned_weights(model, chunks, latents, pred, p_predicted=1.0, head_only=True)
    assert changed and all(k.startswith("context_head.") for k in changed)
    assert not any(p.requires_grad for p in [*model.vae.parameters(), *model.context_head.parameters()])  # type: ignore[union-attr]


def test_the_decoder_stage_adds_a_head_only_to_a_model_without_one(tmp_path) -> None:  # noqa: ANN001
    from model.train.decoder import main

    torch.manual_seed(0)
    save_checkpoint(_with_head(SayAnythingModel(_config()), 8), str(tmp_path / "headed"))
    with pytest.raises(SystemExit, match="already has a context head"):
        main(["--init", str(tmp_path / "headed"), "--out", str(tmp_path / "out"), "--head", "8"])
    assert not (tmp_path / "out").exists()
    save_checkpoint(SayAnythingModel(_config()), str(tmp_path / "plain"))
    with pytest.raises(SystemExit, match="no context head; add one with --head"):
        main(["--init", str(tmp_path / "plain"), "--out", str(tmp_path / "out"), "--head-only"])
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit, match="give --head too"):
        main(["--init", str(tmp_path / "plain"), "--out", str(tmp_path / "out"), "--head-gap", "4"])
    assert not (tmp_path / "out").exists()
