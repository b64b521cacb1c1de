"""Procedural talking characters with known truth: the mouth follows visemes driven by the
phonemes of synthetic speech (eSpeak NG phoneme events), with co-articulation smoothing,
pauses and long silences (mouth at rest). Deterministic by seed.

Splits: voices and character styles are disjoint between train / val / test, so held-out
clips have a voice and a look the model never saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Literal

import numpy as np

from model.train.render import CharacterStyle, HeadPose, MouthShape, random_style, render_frame
from model.train.speech import ESpeak, Phoneme, SpeechEngine

FPS = 25
SAMPLE_RATE_HZ = 16000
Split = Literal["train", "val", "test", "test_languages", "test_engines", "test_real"]

# (open, width, round, lip_bite) per viseme class. Rest = closed, relaxed.
REST = (0.0, 0.5, 0.0, 0.0)
VISEMES: dict[str, tuple[float, float, float, float]] = {
    "PBM": (0.0, 0.45, 0.1, 0.0),
    "FV": (0.08, 0.5, 0.0, 1.0),
    "TH": (0.22, 0.5, 0.0, 0.0),
    "TDN": (0.2, 0.55, 0.0, 0.0),  # t d n l s z and similar alveolars
    "SH": (0.22, 0.35, 0.7, 0.0),  # S Z tS dZ
    "KG": (0.3, 0.5, 0.1, 0.0),  # k g N h j
    "W": (0.2, 0.25, 1.0, 0.0),  # w u: U
    "R": (0.25, 0.4, 0.5, 0.0),
    "AA": (0.9, 0.55, 0.1, 0.0),  # a A: aI aU
    "AE": (0.65, 0.65, 0.0, 0.0),  # E a# eI e
    "IY": (0.3, 0.8, 0.0, 0.0),  # i: I i
    "AH": (0.5, 0.5, 0.1, 0.0),  # @ V 3: 3 @L
    "AO": (0.7, 0.4, 0.7, 0.0),  # O: O oU OI o
    "UH": (0.35, 0.35, 0.75, 0.0),  # U
}


def viseme_of(phoneme: str) -> tuple[float, float, float, float]:
    """Mouth shape of an eSpeak NG phoneme mnemonic (stress marks ignored)."""
    p = phoneme.strip("'%,=").replace("#", "")
    if not p or p.startswith("_"):
        return REST
    table = [
        (("p", "b", "m"), "PBM"),
        (("f", "v"), "FV"),
        (("T", "D"), "TH"),
        (("S", "Z", "tS", "dZ"), "SH"),
        (("w", "W"), "W"),
        (("r", "r-", "R"), "R"),
        (("k", "g", "N", "h", "j", "x", "?"), "KG"),
        (("t", "d", "n", "l", "s", "z", "L", "t#", "d#"), "TDN"),
        (("aI", "aU", "a", "A:", "A", "aa"), "AA"),
        (("eI", "e", "E", "a#", "E@", "e@"), "AE"),
        (("i:", "i", "I", "i@", "I#", "I2"), "IY"),
        (("oU", "OI", "O:", "O", "o", "O@", "o@", "0"), "AO"),
        (("u:", "U@", "u"), "W"),
        (("U",), "UH"),
        (("@", "V", "3:", "3", "@L", "@2", "@5", "a2"), "AH"),
    ]
    for names, vis in table:
        if p in names:
            return VISEMES[vis]
    for names, vis in table:  # longest known prefix, e.g. "aI@" -> "aI"
        if any(p.startswith(n) for n in names if len(n) > 1):
            return VISEMES[vis]
    return VISEMES["AH"] if p[0] in "aeiouAEIOU@V3" else VISEMES["TDN"]


def mouth_track(phonemes: list[Phoneme], duration_s: float, fps: int = FPS, smoothing_ms: float = 35.0) -> np.ndarray:
    """(n_frames, 4) mouth parameters per frame: each phoneme holds its viseme until the next
    starts (silence before the first and after the last), sampled 8 times per frame, then
    smoothed by a Gaussian of ``smoothing_ms`` (co-articulation)."""
    n = max(1, round(duration_s * fps))
    sub = 8
    t = (np.arange(n * sub) + 0.5) / (fps * sub)
    out = np.tile(np.array(REST, np.float32), (t.shape[0], 1))
    starts = np.array([p.start_s for p in phonemes])
    for i, p in enumerate(phonemes):
        end = starts[i + 1] if i + 1 < len(phonemes) else duration_s
        sel = (t >= p.start_s) & (t < end)
        out[sel] = viseme_of(p.name)
    sigma = smoothing_ms / 1000 * fps * sub
    if sigma > 0:
        k = np.arange(-math.ceil(3 * sigma), math.ceil(3 * sigma) + 1)
        w = np.exp(-0.5 * (k / sigma) ** 2)
        w /= w.sum()
        padded = np.pad(out, ((len(k) // 2, len(k) // 2), (0, 0)), mode="edge")
        out = np.stack([np.convolve(padded[:, c], w, mode="valid") for c in range(4)], axis=1)
    return out.reshape(n, sub, 4).mean(axis=1).astype(np.float32)


WORDS = (
    "the a an this that these those my your our their his her its we you they i he she it is are was were be "
    "have has had do does did will would can could should may might must go goes went come came make made take "
    "took see saw look looked find found give gave tell told think thought know knew want wanted use used work "
    "call try ask need feel become leave put mean keep let begin seem help talk turn start show hear play run "
    "move live believe hold bring happen write provide sit stand lose pay meet include continue set learn change "
    "lead understand watch follow stop create speak read allow add spend grow open walk win offer remember love "
    "consider appear buy wait serve die send expect build stay fall cut reach kill remain time year people way "
    "day man thing woman life child world school state family student group country problem hand part place case "
    "week company system program question work government number night point home water room mother area money "
    "story fact month lot right study book eye job word business issue side kind head house service friend father "
    "power hour game line end member law car city community name president team minute idea kid body information "
    "back parent face others level office door health person art war history party result change morning reason "
    "research girl guy moment air teacher force education good new first last long great little own other old "
    "big high different small large next early young important few public bad same able very really quite always "
    "never often sometimes today tomorrow yesterday here there now then again also just only still even maybe"
).split()


def random_text(rng: np.random.Generator) -> str:
    n = int(rng.integers(4, 11))
    words = [WORDS[int(i)] for i in rng.integers(0, len(WORDS), n)]
    s = " ".join(words)
    return s[0].upper() + s[1:] + str(rng.choice([".", ".", "?", "!"]))


# Voices (eSpeak NG names + variants) split so held-out clips have unseen voices.
VOICES: dict[Split, tuple[str, ...]] = {
    "train": ("en-us", "en-us+f2", "en+m3", "en-gb-x-rp", "en-gb-scotland+f3", "en-us-nyc", "en+f4", "en-029+m2"),
    "val": ("en-gb-x-gbclan", "en+f3"),
    "test": ("en-gb-x-gbcwmd+f2", "en-us+m4"),
    # languages no part of the model trained on (model/train/voices.py), with held-out variants
    "test_languages": tuple(
        f"{lang}{var}"
        for lang in ("de", "es", "fr", "hi", "cmn", "ru", "pt", "it")
        for var in ("", "+f2", "+m4", "+klatt3", "+Alicia", "+benjamin", "+iven2")
    ),
    # an engine no part of the model trained on: Festival voices (model/train/festival.py)
    "test_engines": ("kal_diphone", "cmu_us_slt_arctic_hts"),
    # recorded people reading, force-aligned (model/train/realspeech.py): a development split
    "test_real": ("recorded",),
}
STYLE_SEED_OFFSET: dict[Split, int] = {
    "train": 0,
    "val": 1_000_000,
    "test": 2_000_000,
    "test_languages": 2_000_000,
    "test_engines": 2_000_000,
    "test_real": 2_000_000,
}


@dataclass
class Clip:
    """One rendered talking clip and its truth."""

    frames: np.ndarray  # (n, H, W, 3) uint8
    audio: np.ndarray  # (samples,) float32, 16 kHz mono
    mouth: np.ndarray  # (n, 4) open, width, round, lip_bite per frame
    keypoints: np.ndarray  # (n, 6, 2) BlazeFace-order keypoints per frame
    speech: np.ndarray  # (n,) bool: a phoneme other than a pause is sounding
    poses: list[HeadPose]  # per frame
    blinks: np.ndarray  # (n,) eyelid closure per frame
    style: CharacterStyle
    voice: str
    text: str

    @property
    def duration_s(self) -> float:
        return self.audio.shape[0] / SAMPLE_RATE_HZ


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
    import av

    rs = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HZ)
    f = av.AudioFrame.from_ndarray(x[None].astype(np.float32), format="flt", layout="mono")
    f.sample_rate = rate
    parts = [o.to_ndarray().reshape(-1) for o in rs.resample(f)] + [
        o.to_ndarray().reshape(-1) for o in rs.resample(None)
    ]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def augment_audio(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gain, optional room reverb (exponentially decaying noise impulse) and background noise."""
    y = x * float(rng.uniform(0.4, 1.2))
    if rng.random() < 0.5:
        n = int(rng.uniform(0.05, 0.4) * SAMPLE_RATE_HZ)
        ir = rng.standard_normal(n) * np.exp(-np.arange(n) / (n / 6))
        ir[0] = 1.0
        y = np.convolve(y, ir / np.abs(ir).sum() * 2.0)[: y.shape[0]]
    snr_db = float(rng.uniform(15, 45))
    p = float(np.mean(y**2)) + 1e-9
    y = y + rng.standard_normal(y.shape[0]) * math.sqrt(p / 10 ** (snr_db / 10))
    return np.clip(y, -1, 1).astype(np.float32)


def speak(
    engine: SpeechEngine,
    text: str,
    voice: str,
    rate_wpm: int,
    pitch: int,
    t: float,
    pieces: list[np.ndarray],
    phonemes: list[Phoneme],
    warp: float = 1.0,
) -> float:
    """Synthesise ``text`` at time ``t`` of a stream being built: its 16 kHz audio goes onto
    ``pieces``, its phonemes (shifted to ``t``) onto ``phonemes``; returns where it ends.
    ``warp`` != 1 plays the audio that many times faster, which moves its pitch and formants
    together (another speaker's vocal tract), and the phone times with it."""
    u = engine.synthesize(text, voice, rate_wpm, pitch)
    audio = _resample(u.audio, u.sample_rate_hz)
    if warp != 1.0:
        n = int(audio.shape[0] / warp)
        audio = np.interp(np.arange(n) * warp, np.arange(audio.shape[0]), audio).astype(np.float32)
    # "(en)" and the like mark a language switch, not a sound
    phonemes += [Phoneme(p.name, t + p.start_s / warp) for p in u.phonemes if not p.name.startswith("(")]
    pieces.append(audio)
    return t + audio.shape[0] / SAMPLE_RATE_HZ


def speech_flags(phonemes: list[Phoneme], n_frames: int) -> np.ndarray:
    """(n_frames,) bool: a phoneme other than a pause sounds at each frame's centre."""
    times = (np.arange(n_frames) + 0.5) / FPS
    starts = np.array([p.start_s for p in phonemes])
    idx = np.clip(np.searchsorted(starts, times, side="right") - 1, -1, len(phonemes) - 1)
    return np.array([i >= 0 and not phonemes[i].name.startswith("_") for i in idx])


def make_clip(
    seed: int,
    split: Split = "train",
    engine: SpeechEngine | None = None,
    size: int = 256,
    sentences: tuple[int, int] = (1, 3),
    augment: bool = True,
) -> Clip:
    """Render one clip: silence, sentences separated by pauses (some long), silence."""
    rng = np.random.default_rng([seed, STYLE_SEED_OFFSET[split]])
    if engine is None:
        from model.train.festival import Festival

        if split == "test_real":
            from model.train.realspeech import RecordedSpeech

            engine = RecordedSpeech()
        else:
            engine = Festival() if split == "test_engines" else ESpeak()
    style = random_style(np.random.default_rng(seed + STYLE_SEED_OFFSET[split]))
    voice = str(rng.choice(VOICES[split]))
    rate_wpm, pitch = int(rng.integers(120, 200)), int(rng.integers(25, 75))
    pieces: list[np.ndarray] = []
    phonemes: list[Phoneme] = []
    texts = []
    t = float(rng.uniform(0.2, 0.8))
    pieces.append(np.zeros(round(t * SAMPLE_RATE_HZ), np.float32))
    for _ in range(int(rng.integers(sentences[0], sentences[1] + 1))):
        if split == "test_languages":
            from model.train.voices import script_of
            from model.train.voices import text as script_text

            text = script_text(rng, script_of(voice.split("+")[0]))
        elif split == "test_real":
            text = str(rng.choice(engine.texts))  # type: ignore[attr-defined]
        else:
            text = random_text(rng)
        texts.append(text)
        t = speak(engine, text, voice, rate_wpm, pitch, t, pieces, phonemes)
        gap = float(rng.uniform(0.3, 0.8) if rng.random() < 0.6 else rng.uniform(1.2, 2.5))
        phonemes.append(Phoneme("_", t))
        pieces.append(np.zeros(round(gap * SAMPLE_RATE_HZ), np.float32))
        t += gap
    audio = np.concatenate(pieces)
    duration = audio.shape[0] / SAMPLE_RATE_HZ
    mouth = mouth_track(phonemes, duration)
    n = mouth.shape[0]
    times = (np.arange(n) + 0.5) / FPS
    speech = speech_flags(phonemes, n)
    # smooth head motion (sums of slow sines) and blinks every 2-5 s
    ph = rng.uniform(0, 2 * math.pi, 8)
    fr = rng.uniform(0.05, 0.4, 8)
    amp = float(rng.uniform(0.0, 1.0))
    blink_at = np.cumsum(rng.uniform(2.0, 5.0, 32))
    frames = np.empty((n, size, size, 3), np.uint8)
    kps = np.empty((n, 6, 2), np.float32)
    poses: list[HeadPose] = []
    blinks = np.zeros(n, np.float32)
    for i, tt in enumerate(times):
        wave = np.sin(2 * math.pi * fr[:4] * tt + ph[:4])
        pose = HeadPose(
            dx=amp * 0.04 * size * float(wave[0]),
            dy=amp * 0.03 * size * float(wave[1]),
            scale=1.0 + amp * 0.06 * float(wave[2]),
            roll_deg=amp * 5.0 * float(wave[3]),
        )
        d = np.min(np.abs(blink_at - tt))
        blinks[i] = max(0.0, 1.0 - d / 0.08)
        poses.append(pose)
        frames[i], kps[i] = render_frame(style, pose, shape(mouth[i]), float(blinks[i]), size)
    if augment:
        audio = augment_audio(audio, rng)
    return Clip(frames, audio, mouth, kps, speech, poses, blinks, style, voice, " ".join(texts))


def shape(params: np.ndarray) -> MouthShape:
    o, w, r, b = (float(v) for v in params)
    return MouthShape(o, w, r, b)


def cycled(track: np.ndarray, n: int) -> np.ndarray:
    """``track`` repeated from its start to ``n`` rows (how :func:`rerender` uses a shorter one)."""
    return track[np.arange(n) % track.shape[0]]


def clip_span(clip: Clip, start: int, stop: int | None = None) -> Clip:
    """Frames ``start`` to ``stop`` of ``clip`` (to its end by default), with their audio and truth."""
    stop = len(clip.frames) if stop is None else min(stop, len(clip.frames))
    a, b = start * SAMPLE_RATE_HZ // FPS, stop * SAMPLE_RATE_HZ // FPS
    cut = slice(start, stop)
    return replace(
        clip,
        frames=clip.frames[cut],
        audio=clip.audio[a:b],
        mouth=clip.mouth[cut],
        keypoints=clip.keypoints[cut],
        speech=clip.speech[cut],
        poses=clip.poses[cut],
        blinks=clip.blinks[cut],
    )


def rerender(clip: Clip, mouth: np.ndarray, size: int | None = None) -> np.ndarray:
    """The clip's frames (same character, poses, blinks) with another mouth track (a shorter
    one starts again from its beginning: :func:`cycled`)."""
    size = size or clip.frames.shape[1]
    n = clip.frames.shape[0]
    mouth = cycled(mouth, n)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        out[i], _ = render_frame(clip.style, clip.poses[i], shape(mouth[i]), float(clip.blinks[i]), size)
    return out


def write_clip_video(
    clip: Clip,
    path: str,
    frames: np.ndarray | None = None,
    audio_delay_s: float = 0.0,
    audio: np.ndarray | None = None,
    times_ms: list[int] | None = None,
) -> str:
    """Encode a clip as H.264 + AAC (16 kHz mono): its frames or ``frames``, its audio or
    ``audio`` (an empty array: no audio track) delayed by ``audio_delay_s`` (negative: early),
    at 25 frames/s or at the presentation times ``times_ms`` (variable frame rate)."""
    import av

    frames = clip.frames if frames is None else frames
    audio = clip.audio if audio is None else audio
    shift = round(abs(audio_delay_s) * SAMPLE_RATE_HZ)
    if audio_delay_s > 0:
        audio = np.concatenate([np.zeros(shift, np.float32), audio])
    elif audio_delay_s < 0:
        audio = audio[shift:]
    with av.open(path, "w") as c:
        st = c.add_stream("libx264", rate=FPS)
        st.height, st.width = frames.shape[1:3]
        st.pix_fmt = "yuv420p"
        st.options = {"preset": "ultrafast", "crf": "18"}
        if times_ms is not None:
            st.time_base = st.codec_context.time_base = Fraction(1, 1000)
        ast = None
        if audio.size:
            ast = c.add_stream("aac", rate=SAMPLE_RATE_HZ)
            ast.layout = "mono"
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24").reformat(format="yuv420p")
            if times_ms is None:
                vf.pts = i
            else:
                vf.pts, vf.time_base = times_ms[i], Fraction(1, 1000)
            for p in st.encode(vf):
                c.mux(p)
        for p in st.encode(None):
            c.mux(p)
        if ast is not None:
            for i in range(0, audio.shape[0], 1024):
                af = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(audio[None, i : i + 1024], np.float32), format="flt", layout="mono"
                )
                af.sample_rate = SAMPLE_RATE_HZ
                af.pts = i
                for p in ast.encode(af):
                    c.mux(p)
            for p in ast.encode(None):
                c.mux(p)
    return path
