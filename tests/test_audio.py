"""Audio in: the 16 kHz ring buffer and conversion of any rate / channel count into it."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from stream.audio import SAMPLE_RATE_HZ, AudioInput, AudioRing, sanitize
from stream.frames import AudioFrame


def small_ring(capacity: int = 10) -> AudioRing:
    """A ring of ``capacity`` samples (1000 ms at capacity Hz)."""
    ring = AudioRing(1000, sample_rate_hz=capacity)
    assert ring.capacity == capacity
    return ring


def ramp(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32)


# -- AudioRing ------------------------------------------------------------------------------
def test_ring_capacity_follows_milliseconds() -> None:
    assert AudioRing(12000).capacity == 12 * SAMPLE_RATE_HZ
    assert AudioRing(2500).capacity == 40000


def test_ring_write_then_read_back() -> None:
    ring = small_ring()
    ring.write(0, ramp(0, 6))
    assert ring.end_index == 6
    assert ring.end_s == pytest.approx(0.6)
    np.testing.assert_array_equal(ring.read(0, 6), ramp(0, 6))
    np.testing.assert_array_equal(ring.read(2, 3), ramp(2, 3))
    ring.write(6, ramp(6, 3))
    np.testing.assert_array_equal(ring.read(0, 9), ramp(0, 9))


def test_ring_wraps_around() -> None:
    ring = small_ring()
    ring.write(0, ramp(0, 7))
    ring.write(7, ramp(7, 6))  # 7..12 wraps: positions 7, 8, 9, 0, 1, 2
    assert ring.end_index == 13
    np.testing.assert_array_equal(ring.read(3, 10), ramp(3, 10))
    np.testing.assert_array_equal(ring.read(8, 4), ramp(8, 4))  # a read across the wrap point


def test_ring_overflow_overwrites_the_oldest() -> None:
    ring = small_ring()
    ring.write(0, ramp(0, 8))
    ring.write(8, ramp(8, 8))  # 16 samples written into 10
    np.testing.assert_array_equal(ring.read(6, 10), ramp(6, 10))
    # 0..5 were overwritten: they read as zeros, never as the newer samples that took their place
    np.testing.assert_array_equal(ring.read(0, 6), np.zeros(6, np.float32))
    np.testing.assert_array_equal(ring.read(4, 4), np.array([0, 0, 6, 7], np.float32))


def test_ring_write_longer_than_capacity_keeps_the_newest() -> None:
    ring = small_ring()
    ring.write(0, ramp(0, 25))
    assert ring.end_index == 25
    np.testing.assert_array_equal(ring.read(15, 10), ramp(15, 10))
    np.testing.assert_array_equal(ring.read(0, 15), np.zeros(15, np.float32))


def test_ring_gap_is_zero_filled_even_over_stale_samples() -> None:
    ring = small_ring()
    ring.write(0, np.ones(10, np.float32))  # every slot holds a 1
    ring.write(13, ramp(13, 3))  # 10..12 never written
    assert ring.end_index == 16
    np.testing.assert_array_equal(ring.read(10, 6), np.array([0, 0, 0, 13, 14, 15], np.float32))
    np.testing.assert_array_equal(ring.read(6, 4), np.ones(4, np.float32))


def test_ring_gap_longer_than_capacity() -> None:
    ring = small_ring()
    ring.write(0, np.ones(10, np.float32))
    ring.write(100, ramp(100, 3))
    assert ring.end_index == 103
    np.testing.assert_array_equal(ring.read(93, 10), np.array([0] * 7 + [100, 101, 102], np.float32))
    np.testing.assert_array_equal(ring.read(0, 100), np.zeros(100, np.float32))


def test_ring_reads_outside_the_written_range_are_zeros() -> None:
    ring = small_ring()
    ring.write(0, ramp(1, 5))  # 1..5 at indices 0..4
    np.testing.assert_array_equal(ring.read(-3, 5), np.array([0, 0, 0, 1, 2], np.float32))
    np.testing.assert_array_equal(ring.read(3, 5), np.array([4, 5, 0, 0, 0], np.float32))
    np.testing.assert_array_equal(ring.read(20, 4), np.zeros(4, np.float32))
    np.testing.assert_array_equal(ring.read(-10, 4), np.zeros(4, np.float32))
    assert ring.read(0, 0).shape == (0,)


def test_ring_overlapping_write_overwrites() -> None:
    ring = small_ring()
    ring.write(0, ramp(0, 6))
    ring.write(2, np.full(2, -1, np.float32))
    assert ring.end_index == 6
    np.testing.assert_array_equal(ring.read(0, 6), np.array([0, 1, -1, -1, 4, 5], np.float32))


# -- AudioInput -----------------------------------------------------------------------------
def push_blocks(ai: AudioInput, x: np.ndarray, rate: int, block: int, first_pts: int = 0) -> None:
    for i in range(0, x.shape[0], block):
        ai.push(AudioFrame(x[i : i + block], rate, first_pts + i, Fraction(1, rate)))


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("click_s", [0.4321, 1.0])
def test_click_lands_at_its_16k_index(rate: int, click_s: float) -> None:
    n = round(1.5 * rate)
    x = np.zeros((n, 2), np.float32)
    k = round(click_s * rate)
    x[k, :] = 1.0
    ring = AudioRing(5000)
    ai = AudioInput(ring)
    push_blocks(ai, x, rate, 1024)  # blocks that do not divide the rate evenly
    ai.close()
    assert abs(ring.end_index - round(1.5 * SAMPLE_RATE_HZ)) <= 2
    y = ring.read(0, ring.end_index)
    assert abs(int(np.argmax(np.abs(y))) - k * SAMPLE_RATE_HZ / rate) <= 2
    assert np.abs(y).max() > 0.2


@pytest.mark.parametrize("rate", [16000, 44100])
def test_click_position_follows_pts_not_arrival(rate: int) -> None:
    # the stream starts 2 s into media time; a click 0.25 s later is at 16k index 2.25 * 16000
    n = rate
    x = np.zeros((n, 2), np.float32)
    x[round(0.25 * rate), 1] = 1.0  # right channel only: the mono mix halves it
    ring = AudioRing(5000)
    ai = AudioInput(ring)
    push_blocks(ai, x, rate, rate // 50, first_pts=2 * rate)
    ai.close()
    y = ring.read(0, ring.end_index)
    assert abs(int(np.argmax(np.abs(y))) - 36000) <= 2
    assert np.all(y[:32000] == 0)


def test_gap_in_input_is_placed_at_its_pts() -> None:
    rate = 48000
    ring = AudioRing(5000)
    ai = AudioInput(ring)
    a = np.full((rate // 2, 1), 0.25, np.float32)
    push_blocks(ai, a, rate, 960)  # 0 .. 0.5 s
    b = np.zeros((rate // 2, 1), np.float32)
    b[round(0.1 * rate)] = 1.0
    push_blocks(ai, b, rate, 960, first_pts=rate)  # 1.0 .. 1.5 s, click at 1.1 s
    ai.close()
    y = ring.read(0, ring.end_index)
    assert abs(int(np.argmax(np.abs(y))) - round(1.1 * SAMPLE_RATE_HZ)) <= 2
    assert np.all(y[round(0.6 * SAMPLE_RATE_HZ) : round(0.95 * SAMPLE_RATE_HZ)] == 0)  # the gap is silence
    assert np.allclose(y[2000:7000], 0.25, atol=1e-3)


def test_nonfinite_samples_become_zero_and_are_counted() -> None:
    x = np.linspace(-0.5, 0.5, 320, dtype=np.float32)[:, None].repeat(2, axis=1)
    x[10, 0] = np.nan
    x[10, 1] = np.nan
    x[20, 1] = np.inf
    x[30, 0] = -np.inf
    ring = AudioRing(2000)
    ai = AudioInput(ring)
    ai.push(AudioFrame(x, SAMPLE_RATE_HZ, 0, Fraction(1, SAMPLE_RATE_HZ)))
    assert ai.nonfinite_samples == 4
    y = ring.read(0, 320)
    assert np.all(np.isfinite(y))
    assert y[10] == 0.0
    assert y[20] == pytest.approx(x[20, 0] / 2) and y[30] == pytest.approx(x[30, 1] / 2)
    good = np.ones(320, bool)
    good[[10, 20, 30]] = False
    np.testing.assert_allclose(y[good], x[good].mean(axis=1), atol=1e-7)
    ai.push(AudioFrame(np.full((16, 1), np.nan, np.float32), SAMPLE_RATE_HZ, 320, Fraction(1, SAMPLE_RATE_HZ)))
    assert ai.nonfinite_samples == 20
    np.testing.assert_array_equal(ring.read(320, 16), np.zeros(16, np.float32))


# -- sanitize -------------------------------------------------------------------------------
def test_sanitize_int16() -> None:
    x = np.array([0, 16384, -16384, 32767, -32768], np.int16)
    y, bad = sanitize(x)
    assert bad == 0
    assert y.dtype == np.float32 and y.shape == (5, 1)
    np.testing.assert_allclose(y[:, 0], [0.0, 0.5, -0.5, 32767 / 32768, -1.0])


def test_sanitize_int16_stereo_keeps_channels() -> None:
    x = np.array([[32767, -32768], [0, 8192]], np.int16)
    y, _ = sanitize(x)
    assert y.shape == (2, 2)
    np.testing.assert_allclose(y, [[32767 / 32768, -1.0], [0.0, 0.25]])


def test_sanitize_float_replaces_nonfinite_and_clips() -> None:
    x = np.array([[0.5], [np.nan], [np.inf], [-np.inf], [3.0], [-2.0]], np.float64)
    y, bad = sanitize(x)
    assert bad == 3
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y[:, 0], np.array([0.5, 0, 0, 0, 1, -1], np.float32))
