"""Loading Stable Video Diffusion weights (diffusers layout) through the explicit key map."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
from safetensors.torch import load_file, save_file

from model.checkpoint import load_checkpoint, load_svd_weights
from model.configs import TINY, VAEConfig
from model.network import SayAnythingModel
from stream.cli import main
from stream.errors import ModelError

CFG = dataclasses.replace(
    TINY, vae=VAEConfig(kind="svd", latent_channels=4, block_out_channels=(32, 32), layers_per_block=1)
)


def _svd_folder(path: str, in_channels: int = 8) -> tuple[dict, dict]:
    u = CFG.unet
    torch.manual_seed(3)
    unet = UNetSpatioTemporalConditionModel(
        sample_size=CFG.latent_px,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=u.down_block_types,
        up_block_types=u.up_block_types,
        block_out_channels=u.block_out_channels,
        addition_time_embed_dim=u.addition_time_embed_dim,
        projection_class_embeddings_input_dim=3 * u.addition_time_embed_dim,
        layers_per_block=u.layers_per_block,
        cross_attention_dim=u.cross_attention_dim,
        num_attention_heads=u.num_attention_heads,
        num_frames=8,
    )
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2, layers_per_block=1, latent_channels=4
    )
    unet.save_pretrained(os.path.join(path, "unet"))
    vae.save_pretrained(os.path.join(path, "vae"))
    return unet.state_dict(), vae.state_dict()


def test_svd_weights_map_onto_the_model(tmp_path) -> None:
    unet_sd, vae_sd = _svd_folder(str(tmp_path))
    model = SayAnythingModel(CFG)
    id_before = {k: v.clone() for k, v in model.id_guider.state_dict().items()}
    load_svd_weights(model, str(tmp_path))
    ours = model.unet.state_dict()
    for key, value in unet_sd.items():
        if key != "conv_in.weight":
            assert torch.equal(ours[key], value), key
    assert torch.equal(ours["conv_in.weight"][:, :8], unet_sd["conv_in.weight"])
    assert torch.count_nonzero(ours["conv_in.weight"][:, 8]) == 0  # the mask channel starts at zero
    for key, value in vae_sd.items():
        assert torch.equal(model.vae.model.state_dict()[key], value), key
    for key, value in model.id_guider.state_dict().items():  # no SVD counterpart: untouched
        assert torch.equal(value, id_before[key])


def test_missing_part_names_the_file(tmp_path) -> None:
    _svd_folder(str(tmp_path))
    os.remove(tmp_path / "vae" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ModelError, match=r"lacks vae/diffusion_pytorch_model.safetensors"):
        load_svd_weights(SayAnythingModel(CFG), str(tmp_path))


def test_wrong_input_channels_are_refused(tmp_path) -> None:
    _svd_folder(str(tmp_path), in_channels=4)
    with pytest.raises(ModelError, match=r"conv_in.weight has shape \(32, 4, 3, 3\), expected \(32, 8, 3, 3\)"):
        load_svd_weights(SayAnythingModel(CFG), str(tmp_path))


def test_missing_and_extra_keys_are_refused(tmp_path) -> None:
    _svd_folder(str(tmp_path))
    path = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    dropped = sorted(state)[5]
    save_file({k: v for k, v in state.items() if k != dropped}, str(path))
    with pytest.raises(ModelError, match=f"lacks key unet.{dropped}"):
        load_svd_weights(SayAnythingModel(CFG), str(tmp_path))
    save_file({**state, "extra.weight": torch.zeros(1)}, str(path))
    with pytest.raises(ModelError, match="unexpected key unet.extra.weight"):
        load_svd_weights(SayAnythingModel(CFG), str(tmp_path))


def test_init_command_writes_a_loadable_checkpoint(tmp_path, capsys) -> None:
    out = tmp_path / "ckpt"
    assert main(["init", "--preset", "tiny", "--out", str(out)]) == 0
    assert "tiny checkpoint" in capsys.readouterr().out
    model = load_checkpoint(str(out))
    assert model.config == TINY
