"""Chunk schedule, per-frame audio windows, and the compositor's weights and blends."""

from __future__ import annotations

import numpy as np
import pytest

from stream.audio import AudioRing
from stream.chunker import Chunker, ChunkPlan, audio_windows
from stream.compositor import blend_outputs, mix, speech_weight
from stream.config import ChunkConfig


def run_schedule(chunker: Chunker, n_frames: int, has_face: list[bool] | None = None) -> list[ChunkPlan]:
    """Plan and commit everything over n frames, as frames arrive one by one, then finish."""
    plans = []
    for n in range(1, n_frames + 1):
        while True:
            faces = None if has_face is None else has_face[chunker.next_start : n]
            p = chunker.plan(n, faces)
            if p is None:
                break
            chunker.commit(p)
            plans.append(p)
    while True:
        faces = None if has_face is None else has_face[chunker.next_start : n_frames]
        p = chunker.plan(n_frames, faces, final=True)
        if p is None:
            break
        chunker.commit(p)
        plans.append(p)
    return plans


# -- ChunkPlan ------------------------------------------------------------------------------
def test_plan_weights_ramp_over_the_overlap() -> None:
    p = ChunkPlan(10, 18, 2)
    assert [p.weight(i) for i in range(10, 18)] == pytest.approx([1 / 3, 2 / 3, 1, 1, 1, 1, 1, 1])
    p3 = ChunkPlan(0, 8, 3)
    assert [p3.weight(i) for i in range(3)] == pytest.approx([0.25, 0.5, 0.75])
    assert all(ChunkPlan(0, 8, 0).weight(i) == 1.0 for i in range(8))


def test_overlap_weights_and_the_previous_chunk_make_a_linear_crossfade() -> None:
    # the previous chunk's share of an overlap frame is 1 - the newer chunk's weight
    o = 4
    p = ChunkPlan(0, 8, o)
    new = [p.weight(i) for i in range(o)]
    assert np.all(np.diff([0.0, *new, 1.0]) == pytest.approx(1 / (o + 1)))


# -- Chunker schedule -----------------------------------------------------------------------
def test_plan_waits_for_a_full_chunk_and_does_not_change_state() -> None:
    c = Chunker(ChunkConfig(chunk_frames=8, overlap_frames=2))
    assert c.plan(7) is None
    assert c.plan(8) == ChunkPlan(0, 8, 0)
    assert c.plan(8) == ChunkPlan(0, 8, 0)  # plan alone does not advance
    assert c.next_start == 0
    c.commit(ChunkPlan(0, 8, 0))
    assert c.next_start == 6  # stride L - O
    assert c.plan(13) is None
    assert c.plan(14) == ChunkPlan(6, 14, 2)


@pytest.mark.parametrize(("length", "overlap"), [(8, 2), (8, 0), (5, 4), (1, 0), (16, 3)])
def test_schedule_strides_by_length_minus_overlap(length: int, overlap: int) -> None:
    c = Chunker(ChunkConfig(chunk_frames=length, overlap_frames=overlap))
    n = 61
    plans = run_schedule(c, n)
    full = [p for p in plans if p.stop - p.start == length]
    stride = length - overlap
    assert [p.start for p in full] == [k * stride for k in range(len(full))]
    assert plans[0].overlap == 0
    assert all(p.overlap == overlap for p in plans[1:])
    # every frame is covered; consecutive chunks share exactly `overlap` frames
    covered = np.zeros(n, int)
    for p in plans:
        covered[p.start : p.stop] += 1
    assert covered.min() >= 1
    for a, b in zip(plans, plans[1:], strict=False):
        assert a.stop - b.start == overlap
    assert plans[-1].stop == n


def test_final_partial_chunk() -> None:
    c = Chunker(ChunkConfig(chunk_frames=8, overlap_frames=2))
    assert c.plan(3) is None
    assert c.plan(3, final=True) == ChunkPlan(0, 3, 0)
    c.commit(ChunkPlan(0, 3, 0))
    assert c.next_start == 3  # a short chunk is not overlapped
    assert c.plan(3, final=True) is None

    c = Chunker(ChunkConfig(chunk_frames=8, overlap_frames=2))
    c.commit(c.plan(8))  # type: ignore[arg-type]
    last = c.plan(11, final=True)
    assert last == ChunkPlan(6, 11, 2)
    c.commit(last)  # type: ignore[arg-type]
    assert c.next_start == 11 and c.plan(11, final=True) is None


def test_frames_without_a_face_are_skipped_and_cut_chunks() -> None:
    c = Chunker(ChunkConfig(chunk_frames=8, overlap_frames=2))
    faces = [True] * 5 + [False] * 2 + [True] * 20
    plans = run_schedule(c, len(faces), faces)
    assert plans[0] == ChunkPlan(0, 5, 0)  # cut before the first frame without a face
    assert plans[1] == ChunkPlan(7, 15, 0)  # starts after the gap; nothing to overlap
    assert plans[2] == ChunkPlan(13, 21, 2)
    for p in plans:
        assert all(faces[p.start : p.stop])
    covered = {i for p in plans for i in range(p.start, p.stop)}
    assert covered == {i for i, f in enumerate(faces) if f}


def test_no_face_anywhere_plans_nothing() -> None:
    c = Chunker(ChunkConfig(chunk_frames=4, overlap_frames=1))
    assert run_schedule(c, 10, [False] * 10) == []


def test_face_missing_at_the_end() -> None:
    c = Chunker(ChunkConfig(chunk_frames=4, overlap_frames=1))
    faces = [True] * 6 + [False] * 4
    plans = run_schedule(c, 10, faces)
    assert plans == [ChunkPlan(0, 4, 0), ChunkPlan(3, 6, 1)]


def test_set_length_clamps_overlap_and_skip_to() -> None:
    c = Chunker(ChunkConfig(chunk_frames=8, overlap_frames=2))
    c.set_length(2, 2)
    assert (c.chunk_frames, c.overlap_frames) == (2, 1)
    c.set_length(4, 2)
    c.commit(c.plan(4))  # type: ignore[arg-type]
    assert c.next_start == 2
    c.skip_to(10)
    assert c.next_start == 10
    c.skip_to(5)
    assert c.next_start == 10  # never goes back
    assert c.plan(14) == ChunkPlan(10, 14, 0)


def test_lookahead_is_audio_after() -> None:
    assert Chunker(ChunkConfig(audio_after_ms=120)).lookahead_s == pytest.approx(0.12)


# -- audio windows --------------------------------------------------------------------------
@pytest.fixture
def ramp_ring() -> AudioRing:
    ring = AudioRing(4000)
    ring.write(0, np.arange(48000, dtype=np.float32))  # sample i holds i (3 s)
    return ring


def test_audio_windows_are_cut_around_each_frame_time(ramp_ring: AudioRing) -> None:
    times = np.array([0.5, 1.0, 1.04])
    w = audio_windows(ramp_ring, times, 200, 80)
    assert w.shape == (3, 3200 + 1280) and w.dtype == np.float32
    for row, t in zip(w, times, strict=True):
        centre = round(t * 16000)
        np.testing.assert_array_equal(row, np.arange(centre - 3200, centre + 1280, dtype=np.float32))


def test_audio_windows_pad_outside_the_stream_with_zeros(ramp_ring: AudioRing) -> None:
    w = audio_windows(ramp_ring, np.array([0.1, 2.98]), 200, 80)
    # 0.1 s: 1600 samples before the stream starts
    np.testing.assert_array_equal(w[0, :1600], 0)
    np.testing.assert_array_equal(w[0, 1600:], np.arange(0, 2880, dtype=np.float32))
    # 2.98 s: the window runs 960 samples past the end
    assert np.all(w[1, -960:] == 0) and w[1, -961] == 47999


def test_audio_window_of_a_frame_does_not_depend_on_its_chunk(ramp_ring: AudioRing) -> None:
    a = audio_windows(ramp_ring, np.array([0.96, 1.0, 1.04]), 200, 80)
    b = audio_windows(ramp_ring, np.array([1.0, 1.04, 1.08, 1.12]), 200, 80)
    np.testing.assert_array_equal(a[1:], b[:2])
    # consecutive frames' windows are the same stream shifted by one frame (640 samples)
    np.testing.assert_array_equal(b[1, :-640], b[0, 640:])


# -- compositor -----------------------------------------------------------------------------
CHANGES = ([1.0, 2.0], [True, False])


@pytest.mark.parametrize(
    ("t", "w"),
    [
        (0.0, 0.0),
        (0.94, 0.0),
        (0.96, 0.1),
        (1.0, 0.5),
        (1.025, 0.75),
        (1.049, 0.99),
        (1.06, 1.0),
        (1.5, 1.0),
        (1.975, 0.75),
        (2.0, 0.5),
        (2.025, 0.25),
        (2.06, 0.0),
        (5.0, 0.0),
    ],
)
def test_speech_weight_ramps_across_changes(t: float, w: float) -> None:
    assert speech_weight(*CHANGES, t, 0.1) == pytest.approx(w, abs=1e-9)


def test_speech_weight_is_continuous_and_monotone_on_each_ramp() -> None:
    ts = np.arange(0.8, 2.2, 0.001)
    w = np.array([speech_weight(*CHANGES, float(t), 0.1) for t in ts])
    assert np.max(np.abs(np.diff(w))) <= 0.001 / 0.1 + 1e-9
    up = ts < 1.5
    assert np.all(np.diff(w[up]) >= -1e-12) and np.all(np.diff(w[~up]) <= 1e-12)


def test_speech_weight_without_crossfade_and_edge_cases() -> None:
    assert speech_weight(*CHANGES, 0.999, 0.0) == 0.0
    assert speech_weight(*CHANGES, 1.0, 0.0) == 1.0
    assert speech_weight(*CHANGES, 2.0, 0.0) == 0.0
    assert speech_weight([], [], 3.0, 0.1) == 0.0
    assert speech_weight([float("-inf")], [True], 3.0, 0.1) == 1.0  # VAD disabled
    # a short gap between two segments: the closer change wins, no jump to full speech
    w = speech_weight([1.0, 1.04, 1.08], [True, False, True], 1.045, 0.1)
    assert 0.0 < w < 1.0


def test_blend_outputs_is_a_renormalised_weighted_mean() -> None:
    a = np.full((4, 4, 3), 10, np.uint8)
    b = np.full((4, 4, 3), 110, np.uint8)
    assert blend_outputs([(a, 0.3)]) is a
    out = blend_outputs([(a, 1.0), (b, 3.0)])
    assert out.dtype == np.uint8 and np.all(out == 85)
    assert np.all(blend_outputs([(a, 2 / 3), (b, 1 / 3)]) == 43)
    assert np.all(blend_outputs([(a, 0.2), (b, 0.2)]) == 60)


def test_mix_weights() -> None:
    a = np.full((2, 2, 3), 0, np.uint8)
    b = np.full((2, 2, 3), 255, np.uint8)
    assert mix(a, b, 0.0) is a and mix(a, b, -0.5) is a
    assert mix(a, b, 1.0) is b and mix(a, b, 2.0) is b
    assert np.all(mix(a, b, 0.5) == 128)
    assert np.all(mix(b, a, 0.25) == 191)
    assert mix(a, b, 0.3).dtype == np.uint8
