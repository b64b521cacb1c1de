"""The personal detail net: the model's crop brought back to the frame's resolution with the
enrolled person's own fine detail.

The model draws a small crop (64 px for ``tiny``) and the engine pastes it back into the frame
by bilinear warping, so a face 200 px wide gets a mouth three times blurrier than the frame
around it: on the enrolment benchmark's clip that round trip alone, with nothing else changed,
reads 26.65 dB under the mask on the held-out frames. ``enrol --detail`` trains this net on the user's own clip:
from the warped crop (the true crop, or its reconstruction through the clip's tuned VAE
decoder) to the true frame pixels, in frame pixels over the mask's box. The engine applies it
to the warped crop before blending (``FaceCropper.paste``'s ``refine``:
:meth:`DetailNet.refine`), only where the face is drawn at about the scale it was trained at
(:meth:`DetailNet.applies`): the detail it learned is of that size.

Measured (BENCHMARKS.md): the dubbed mouth twice as sharp at the same PSNR. The PSNR does not
rise because what the model gets wrong when dubbed is the mouth's shape, not its resolution. It
costs 5.9 ms per pasted frame on one core for a 197 px mask box (paste alone 0.7 ms;
``benchmarks/detail_cost.py``); its cost grows with the box's area.

Saved beside the model as ``detail.safetensors`` (with its shape and scale in the metadata);
a checkpoint without it pastes as before.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from stream.errors import ModelError

DETAIL_NAME = "detail.safetensors"
# the share of the trained scale (frame pixels per crop pixel) either way within which the net
# applies; beyond it, the paste is the plain bilinear one
SCALE_TOLERANCE = 1.5


class DetailNet(torch.nn.Module):
    """A residual stack of 3x3 convolutions on frame pixels in [-1, 1]. ``scale``: frame pixels
    per crop pixel in the clip it was trained on."""

    def __init__(self, channels: int = 16, layers: int = 3, scale: float = 1.0) -> None:
        super().__init__()
        if layers < 2 or channels < 1:
            raise ModelError(f"detail net: {layers} layers of {channels} channels: use at least 2 layers of 1")
        mods: list[torch.nn.Module] = [torch.nn.Conv2d(3, channels, 3, padding=1), torch.nn.ReLU()]
        for _ in range(layers - 2):
            mods += [torch.nn.Conv2d(channels, channels, 3, padding=1), torch.nn.ReLU()]
        mods.append(torch.nn.Conv2d(channels, 3, 3, padding=1))
        self.body = torch.nn.Sequential(*mods)
        last = self.body[-1]
        assert isinstance(last, torch.nn.Conv2d)
        torch.nn.init.zeros_(last.weight)  # starts as the identity: the plain paste
        assert last.bias is not None
        torch.nn.init.zeros_(last.bias)
        self.channels, self.layers, self.scale = channels, layers, float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)

    def applies(self, scale: float) -> bool:
        """Whether a face drawn at ``scale`` frame pixels per crop pixel is near enough to the
        trained scale for the net's detail to fit it."""
        return 1 / SCALE_TOLERANCE <= scale / self.scale <= SCALE_TOLERANCE

    @torch.inference_mode()
    def refine(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W, 3) float pixels in [0, 255] -> the same with the detail added (float32)."""
        x = torch.from_numpy(np.ascontiguousarray(pixels, np.float32)).permute(2, 0, 1)[None] / 127.5 - 1.0
        y = self.forward(x)[0].permute(1, 2, 0)
        return ((y + 1.0) * 127.5).clamp(0, 255).numpy()


def save_detail(net: DetailNet, folder: str) -> None:
    meta = {"channels": str(net.channels), "layers": str(net.layers), "scale": repr(net.scale)}
    state = {k: v.detach().float().contiguous().cpu() for k, v in net.state_dict().items()}
    tmp = os.path.join(folder, DETAIL_NAME + ".tmp")
    save_file(state, tmp, metadata=meta)
    os.replace(tmp, os.path.join(folder, DETAIL_NAME))


def load_detail(folder: str) -> DetailNet | None:
    """The checkpoint's detail net, or None when it has none."""
    path = os.path.join(folder, DETAIL_NAME)
    if not os.path.isfile(path):
        return None
    try:
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
        state = load_file(path)
        net = DetailNet(int(meta["channels"]), int(meta["layers"]), float(meta["scale"]))
        net.load_state_dict(state, strict=True)
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(
            f"detail net {path} cannot be loaded ({msg}): enrol again, or delete the file to paste without it"
        ) from None
    return net.eval()


__all__ = ["DETAIL_NAME", "DetailNet", "load_detail", "save_detail"]
