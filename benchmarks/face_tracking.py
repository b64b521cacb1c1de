"""Face tracking accuracy on the bundled clip: the detector run on every frame is the truth;
the tracker runs it every N frames and predicts in between. Also its jitter: how far the
tracked mouth moves into a detection frame against into the frames between (1.0: no flicker at
the detection rate), and the mean frame-to-frame change of its velocity in px (smoothness).

    python benchmarks/face_tracking.py
"""

from __future__ import annotations

import dataclasses

import numpy as np

from stream.cli import asset
from stream.config import FaceConfig
from stream.face import MOUTH, FaceTracker, MediaPipeFaceDetector
from stream.sources.file import decode_video


def main() -> None:
    frames = list(decode_video(asset("sample_face.mp4")))
    det = MediaPipeFaceDetector()
    truth = [det.detect(f)[0].keypoints[MOUTH] for f in frames]
    motion = np.mean([np.linalg.norm(b - a) for a, b in zip(truth, truth[1:], strict=False)])
    print(f"{len(frames)} frames; true mouth motion {motion:.2f} px/frame")
    for every, smoothing in [(1, 0.0), (2, 0.3), (3, 0.3), (3, 0.5), (5, 0.3)]:
        cfg = dataclasses.replace(FaceConfig(), detect_every_frames=every, smoothing=smoothing)
        tracker = FaceTracker(cfg, det)
        errs, pos = [], []
        for f, t in zip(frames, truth, strict=True):
            state = tracker.update(f)
            assert state is not None
            errs.append(float(np.linalg.norm(state.keypoints[MOUTH] - t)))
            pos.append(state.keypoints[MOUTH].astype(np.float64))
        p = np.array(pos)
        step = np.linalg.norm(np.diff(p, axis=0), axis=1)  # step[i]: into frame i + 1
        into_det = np.array([(i + 1) % every == 0 for i in range(len(step))])
        jump = step[into_det].mean() / max(step[~into_det].mean(), 1e-9) if every > 1 else 1.0
        accel = np.linalg.norm(np.diff(p, 2, axis=0), axis=1).mean()
        print(
            f"detect_every_frames={every} smoothing={smoothing}: mouth error "
            f"mean {np.mean(errs):.2f} px, p95 {np.percentile(errs, 95):.2f} px; "
            f"step into a detection frame / between {jump:.2f}; velocity change {accel:.2f} px/frame"
        )


if __name__ == "__main__":
    main()
