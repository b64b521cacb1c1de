"""The model worker: one dedicated thread runs every model call, never the event loop.

``LipSyncModel`` is the interface the model package implements. Arrays in, arrays out.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import gc
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from stream.clock import work_finished, work_started

log = logging.getLogger(__name__)


def settle_heap() -> None:
    """Call once the model is loaded, before a stream starts: collect, then move every object
    alive now into the collector's permanent generation (``gc.freeze``). The model, torch,
    MediaPipe and aiortc leave ~380k tracked objects; a full collection then stops every
    thread holding the GIL for ~250 ms on 2 cores (measured), long enough to stall emitted
    frames. Frozen objects are never scanned again, so later full collections cost only what
    the stream itself allocates."""
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class ModelChunk:
    """What the model sees for one chunk of L frames.

    frames: (L, R, R, 3) uint8 face crops; masks: (L, R, R) float32 mouth masks in [0, 1];
    audio: (L, n) float32 16 kHz windows, one per frame, cut from the continuous stream
    (``audio_before_ms`` before to ``audio_after_ms`` after each frame's time);
    speech: (L,) bool; times_s: (L,) frame media times.
    """

    frames: np.ndarray
    masks: np.ndarray
    audio: np.ndarray
    speech: np.ndarray
    times_s: np.ndarray


class LipSyncModel(Protocol):
    """A lip-sync model as the engine uses it."""

    name: str
    resolution_px: int  # side of the square face crop the model takes
    # (height, width) multipliers of the engine's lower-face mask the model was trained with
    mask_scale: tuple[float, float]
    # how much closer than the whole-face crop the model's crop is (1: the whole face)
    crop_zoom: float
    # the model's weight on its own pixels in the paste's feather (``FaceCropper``; 1: the mask)
    paste_gain: float

    def encode_reference(self, crop: np.ndarray) -> Any:
        """Encode the identity reference (an (R, R, 3) uint8 crop) once per session."""
        ...

    def generate(self, chunk: ModelChunk, reference: Any, steps: int) -> np.ndarray:
        """Return (L, R, R, 3) uint8 crops whose masked region follows ``chunk.audio``."""
        ...


@dataclass
class JobResult:
    frames: np.ndarray
    started_s: float
    finished_s: float


class ModelWorker:
    """Runs model calls one at a time on a dedicated thread.

    Queue: at most ``max_pending`` jobs wait; a submit beyond that is refused (returns None)
    and the caller falls back for those frames. A model exception fails only that job's future.
    """

    def __init__(self, model: LipSyncModel, clock: Any, max_pending: int = 3) -> None:
        self.model = model
        self.clock = clock
        self.max_pending = max_pending
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lipsync-model")
        self._pending = 0
        self._lock = threading.Lock()
        self.calls = 0
        self.errors = 0
        self.model_ms: collections.deque[float] = collections.deque(maxlen=100000)

    @property
    def pending(self) -> int:
        return self._pending

    def submit(
        self, chunk: ModelChunk, reference: Any, steps: int, always: bool = False
    ) -> cf.Future[JobResult] | None:
        """``always``: a one-off job the stream needs (a drawing at rest), queued even beyond
        ``max_pending``."""
        with self._lock:
            if self._pending >= self.max_pending and not always:
                return None
            self._pending += 1
            # The clock is told the *thread* is busy (0 -> 1 pending), not each job: a job queued
            # behind one sleeping in virtual time cannot run, so counting it would make a
            # VirtualClock wait (wall time) for work that can never start.
            if self._pending == 1:
                work_started(self.clock)
        try:
            fut = self._pool.submit(self._run, chunk, reference, steps)
        except RuntimeError:  # pool shut down
            self._done(None)
            return None
        # done callbacks run after the result is set, so a virtual clock that waits for
        # work_finished() never sees the job finished with its future still pending
        fut.add_done_callback(self._done)
        return fut

    def _done(self, _fut: object) -> None:
        with self._lock:
            self._pending -= 1
            if self._pending == 0:
                work_finished(self.clock)

    def _run(self, chunk: ModelChunk, reference: Any, steps: int) -> JobResult:
        started = self.clock.now()
        t0 = time.perf_counter()
        try:
            out = self.model.generate(chunk, reference, steps)
            out = np.asarray(out)
            if out.shape != chunk.frames.shape or out.dtype != np.uint8:
                raise ValueError(
                    f"model {self.model.name} returned {out.shape} {out.dtype}, expected {chunk.frames.shape} uint8"
                )
            return JobResult(out, started, self.clock.now())
        except Exception:
            self.errors += 1
            log.exception("model %s failed on a chunk; its frames fall back", self.model.name)
            raise
        finally:
            self.calls += 1
            self.model_ms.append((time.perf_counter() - t0) * 1000)

    def run_sync(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the model thread and wait (used for reference encoding)."""
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
