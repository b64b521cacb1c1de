"""The identity model: returns its input crops unchanged.

It is what the engine runs until a trained lip-sync model is installed. It exercises every
engine stage (face tracking, crop, VAD, chunking, worker, compositing, playout) so their cost
can be measured; the mouth is held still at rest in silence and left as filmed in speech.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stream.worker import ModelChunk


class IdentityModel:
    name = "identity"
    mask_scale = (1.0, 1.0)
    crop_zoom = 1.0
    paste_gain = 1.0

    def __init__(self, resolution_px: int = 128) -> None:
        self.resolution_px = resolution_px

    def encode_reference(self, crop: np.ndarray) -> Any:
        return None

    def generate(self, chunk: ModelChunk, reference: Any, steps: int) -> np.ndarray:
        return chunk.frames.copy()
