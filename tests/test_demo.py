"""The demo's options: a still portrait animated for the length of the given audio."""

from __future__ import annotations

import av
import numpy as np
from media import probe, speech, write_audio

from stream import cli


def _portrait(path: str) -> str:
    from model.train.render import CharacterStyle, HeadPose, MouthShape, render_frame

    img, _ = render_frame(CharacterStyle(), HeadPose(0, 0, 1.0, 0), MouthShape(0.0, 0.5, 0.0), 0.0, 256)
    with av.open(path, "w") as c:  # a PNG written through PyAV's image muxer
        st = c.add_stream("png", rate=1)
        st.width, st.height, st.pix_fmt = 256, 256, "rgb24"
        for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    return path


def test_demo_animates_a_still_portrait_for_the_audio_length(tmp_path, capsys) -> None:
    image = _portrait(str(tmp_path / "face.png"))
    audio = write_audio(str(tmp_path / "a.wav"), speech(1.2, 22050), 22050)
    out = str(tmp_path / "demo.mp4")
    assert cli.main(["demo", "--image", image, "--audio", audio, "-o", out]) == 0
    text = capsys.readouterr().out
    assert "your picture + your audio" in text and "0 passed through" in text
    p = probe(out)
    assert p.n_frames == 30 and (p.width, p.height) == (256, 256)
    assert abs(p.audio_s - 1.2) < 0.05
    # the picture is held: away from the mouth, every frame is the same picture
    tops = np.stack([f[:100].astype(np.int16) for f in p.frames])
    assert np.abs(tops - tops[0]).mean() < 1.5  # only codec noise


def test_demo_refuses_image_and_video_together(tmp_path, capsys) -> None:
    image = _portrait(str(tmp_path / "face.png"))
    assert cli.main(["demo", "--image", image, "--video", image, "-o", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--image or --video" in err[0]


def test_eval_portrait_refuses_a_missing_photo_in_one_line_before_loading(tmp_path, capsys) -> None:
    missing = str(tmp_path / "nobody.png")
    # the checkpoint does not exist either: the photo is checked first, before any model loads
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "none"), "--portrait", missing]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and missing in err and "does not exist" in err
