"""An offline provider: timed subtitles (SRT or WebVTT) whose text is spoken with eSpeak NG.

Each cue becomes one segment anchored at the cue's start and spanning it; the cue's text is
the translated text, the voice is an eSpeak NG voice of the target language ("es", "de",
"ja", "en-us", ...). A real deployment replaces this with an ASR -> MT -> TTS service speaking
the same protocol (see translate_bridge/README.md).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from stream.errors import InputError
from translate_bridge.protocol import Segment

_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{1,3})")


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


def _seconds(stamp: str, path: str, line_no: int) -> float:
    m = _TIME.fullmatch(stamp.strip())
    if not m:
        raise InputError(f"subtitle file {path} line {line_no}: {stamp.strip()!r} is not a time like 00:01:02,500")
    h, mi, s, ms = m.groups()
    return int(h or 0) * 3600 + int(mi) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


def parse_subtitles(path: str) -> list[Cue]:
    """Cues of an SRT or WebVTT file, in time order; clear errors for what cannot be read."""
    if not os.path.isfile(path):
        raise InputError(f"subtitle file {path} does not exist: check the path")
    try:
        with open(path, encoding="utf-8-sig") as fh:
            lines = fh.read().splitlines()
    except UnicodeDecodeError:
        raise InputError(f"subtitle file {path} is not UTF-8 text: save it as UTF-8") from None
    cues: list[Cue] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if "-->" in line:
            a, b = line.split("-->", 1)
            start = _seconds(a, path, i + 1)
            end = _seconds(b.strip().split(" ")[0], path, i + 1)
            text: list[str] = []
            i += 1
            while i < len(lines) and lines[i].strip():
                text.append(re.sub(r"<[^>]+>", "", lines[i]).strip())
                i += 1
            if end <= start:
                raise InputError(f"subtitle file {path}: a cue ends ({end:.3f} s) before it starts ({start:.3f} s)")
            if any(t for t in text):
                cues.append(Cue(start, end, " ".join(t for t in text if t)))
        i += 1
    if not cues:
        raise InputError(f"subtitle file {path} has no cues (expected SRT or WebVTT 'start --> end' lines)")
    return sorted(cues, key=lambda c: c.start_s)


def segments(cues: list[Cue], voice: str, engine=None) -> list[Segment]:  # noqa: ANN001
    """Speak each cue with eSpeak NG in ``voice``: one segment per cue."""
    from translate_bridge.espeak import ESpeak

    engine = engine or ESpeak()
    out = []
    for k, cue in enumerate(cues):
        utt = engine.synthesize(cue.text, voice)
        audio = utt.audio.astype(np.float32)[:, None]
        out.append(Segment(f"cue{k + 1}", cue.start_s, cue.end_s, audio, utt.sample_rate_hz, cue.text))
    return out
