"""Compositing in crop space: cross-fade overlapping chunk outputs, cross-fade to the mouth at
rest around speech boundaries, then paste into the full frame through the feathered mask."""

from __future__ import annotations

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # Rec. 601 luma weights of RGB


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB (..., 3) -> CIELAB (D65), float64."""
    c = rgb.astype(np.float64) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
    )
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def mean_delta_e(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    """Mean CIELAB delta-E between uint8 RGB images ``a`` and ``b`` over the pixels where
    ``region`` is true."""
    return float(np.linalg.norm(srgb_to_lab(a[region]) - srgb_to_lab(b[region]), axis=-1).mean())


def shift_colour(crop: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``crop`` (uint8 RGB) plus a per-channel ``offset``, rounded and clipped to uint8."""
    return np.clip(np.rint(crop.astype(np.float32) + offset.astype(np.float32)), 0, 255).astype(np.uint8)


def blend_outputs(outputs: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Weighted average of (crop, weight) pairs; weights are renormalised over those given."""
    if len(outputs) == 1:
        return outputs[0][0]
    total = sum(w for _, w in outputs)
    acc = np.zeros(outputs[0][0].shape, np.float32)
    for crop, w in outputs:
        acc += crop.astype(np.float32) * (w / total)
    return np.clip(np.rint(acc), 0, 255).astype(np.uint8)


def mix(a: np.ndarray, b: np.ndarray, weight_b: float) -> np.ndarray:
    """(1 - weight_b) * a + weight_b * b, as uint8."""
    if weight_b >= 1.0:
        return b
    if weight_b <= 0.0:
        return a
    out = a.astype(np.float32) + weight_b * (b.astype(np.float32) - a.astype(np.float32))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def mix_where_differ(a: np.ndarray, b: np.ndarray, weight_b: float) -> np.ndarray:
    """``mix`` of two frames that differ only in a small region (two pastes into one frame): the
    pixels outside the box where they differ are ``a``'s, untouched."""
    if weight_b <= 0.0 or weight_b >= 1.0:
        return mix(a, b, weight_b)
    ys, xs = np.nonzero((a != b).any(axis=-1))
    if ys.size == 0:
        return a
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    out = a.copy()
    out[box] = mix(a[box], b[box], weight_b)
    return out


def speech_weight(change_times: list[float], change_states: list[bool], t: float, crossfade_s: float) -> float:
    """1 in speech, 0 in silence, a linear ramp of ``crossfade_s`` centred on each change."""
    state = False
    nearest: tuple[float, bool] | None = None
    for tc, sc in zip(change_times, change_states, strict=True):
        if tc <= t:
            state = sc
        if crossfade_s > 0 and abs(t - tc) < crossfade_s / 2 and (nearest is None or abs(t - tc) < abs(t - nearest[0])):
            nearest = (tc, sc)
    if nearest is None:
        return 1.0 if state else 0.0
    tc, onset = nearest
    d = (t - tc) / crossfade_s
    return float(np.clip(0.5 + d if onset else 0.5 - d, 0.0, 1.0))
