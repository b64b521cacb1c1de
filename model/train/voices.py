"""Many voices with known mouth truth, for supervising the audio path directly.

Every language eSpeak NG ships (its ``lang`` folder) times its voice variants (``voices/!v``),
speaking rates and pitches, with text in the language's own script so that eSpeak NG does not
fall back to English: pseudo-words from consonant-vowel syllables written in Latin, Cyrillic,
Greek, Devanagari, Hangul, kana, Han or Arabic letters. The mouth truth comes from eSpeak NG's
phoneme events (``synth.mouth_track``), so it is aligned to the audio by construction.

Splits hold out whole languages (``HELD_OUT_LANGUAGES``, the ones the evaluation reports as
"unseen languages") and a set of voice variants; everything here is deterministic by seed.
No rendering is needed, so hours of speech are cheap.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from model.train.dataset import NpzRecord
from model.train.flite import TRAIN_VOICES as FLITE_VOICES
from model.train.flite import Flite
from model.train.kokoro import VOICES as KOKORO_VOICES
from model.train.kokoro import Kokoro
from model.train.mbrola import TRAIN_VOICES as MBROLA_VOICES
from model.train.mbrola import Mbrola
from model.train.speech import ESpeak, Phoneme
from model.train.synth import FPS, SAMPLE_RATE_HZ, augment_audio, mouth_track, speak, speech_flags
from stream.audio import AudioRing
from stream.chunker import audio_windows

VoiceSplit = Literal["train", "test_english", "test_languages"]

# Unseen in training: the languages the project's evaluation reports separately.
HELD_OUT_LANGUAGES = ("de", "es", "fr", "hi", "cmn", "ru", "pt", "it")
# English voices of the rendered clips' test split stay out of training too.
HELD_OUT_ENGLISH = ("en-gb-x-gbcwmd", "en-us")
HELD_OUT_VARIANTS = ("f2", "m4", "klatt3", "Alicia", "benjamin", "iven2")

_CONS = "m p b t d k g n s l r v f h j".split()
_VOW = "a e i o u".split()
_CYR = dict(zip(_CONS + _VOW, "м п б т д к г н с л р в ф х й а е и о у".split(), strict=True))
_GRK = dict(zip(_CONS + _VOW, "μ π μπ τ ντ κ γκ ν σ λ ρ β φ χ γ α ε ι ο ου".split(), strict=True))
_DEV_C = dict(zip(_CONS, "म प ब त द क ग न स ल र व फ ह य".split(), strict=True))
_DEV_V = {"a": "", "e": "े", "i": "ि", "o": "ो", "u": "ु"}
_ARA_C = dict(zip(_CONS, "م ب ب ت د ك ق ن س ل ر و ف ه ي".split(), strict=True))
_ARA_V = {"a": "ا", "e": "ي", "i": "ي", "o": "و", "u": "و"}
_KANA = (
    "まみむめも ぱぴぷぺぽ ばびぶべぼ たちつてと だぢづでど かきくけこ がぎぐげご なにぬねの さしすせそ らりるれろ"
).split()
_HAN = list(
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区包容片转"
)


def _hangul(c: str, v: str) -> str:
    lead = {"m": 6, "p": 17, "b": 7, "t": 16, "d": 3, "k": 15, "g": 0, "n": 2, "s": 9, "l": 5, "r": 5,
            "v": 7, "f": 17, "h": 18, "j": 11}[c]  # fmt: skip
    vowel = {"a": 0, "e": 5, "i": 20, "o": 8, "u": 13}[v]
    return chr(0xAC00 + (lead * 21 + vowel) * 28)


SCRIPTS = ("latin", "cyrillic", "greek", "devanagari", "hangul", "kana", "han", "arabic")
_SCRIPT_OF = {
    **{k: "cyrillic" for k in ("ru", "ru-LV", "ru-cl", "uk", "bg", "be", "mk", "sr", "kk", "ky", "tt", "ba", "cv")},
    **{k: "greek" for k in ("el", "grc")},
    **{k: "devanagari" for k in ("hi", "mr", "ne", "kok", "bpy")},
    "ko": "hangul",
    "ja": "kana",
    **{k: "han" for k in ("cmn", "yue", "hak")},
    **{k: "arabic" for k in ("ar", "fa", "ur", "sd", "ug")},
}
# scripts eSpeak NG reads for these languages but this generator does not write: left out
_UNWRITTEN = ("am", "ti", "as", "bn", "gu", "kn", "ml", "or", "pa", "si", "ta", "te", "my", "th", "ka", "hy", "hyw",
              "he", "chr", "shn", "nog", "piqd", "en-Shaw", "xex")  # fmt: skip


def word(rng: np.random.Generator, script: str) -> str:
    n = int(rng.integers(1, 4))
    syl = [(str(rng.choice(_CONS)), str(rng.choice(_VOW))) for _ in range(n)]
    if script == "cyrillic":
        return "".join(_CYR[c] + _CYR[v] for c, v in syl)
    if script == "greek":
        return "".join(_GRK[c] + _GRK[v] for c, v in syl)
    if script == "devanagari":
        return "".join(_DEV_C[c] + _DEV_V[v] for c, v in syl)
    if script == "arabic":
        return "".join(_ARA_C[c] + _ARA_V[v] for c, v in syl)
    if script == "hangul":
        return "".join(_hangul(c, v) for c, v in syl)
    if script == "kana":
        return "".join(str(rng.choice(list(_KANA[int(rng.integers(0, len(_KANA)))]))) for _ in syl)
    if script == "han":
        return "".join(str(rng.choice(_HAN)) for _ in range(n + 1))
    return "".join(c + v for c, v in syl)


def text(rng: np.random.Generator, script: str) -> str:
    sep = "" if script in ("han", "kana") else " "
    return sep.join(word(rng, script) for _ in range(int(rng.integers(3, 9))))


def languages() -> list[str]:
    """Every language eSpeak NG ships whose script this generator writes."""
    import espeakng_loader

    found: list[str] = []
    for _root, _dirs, files in os.walk(os.path.join(espeakng_loader.get_data_path(), "lang")):
        found += files
    data = espeakng_loader.get_data_path()
    has_dict = lambda lang: os.path.isfile(os.path.join(data, lang.split("-")[0].lower() + "_dict"))  # noqa: E731
    return sorted(f for f in set(found) if f not in _UNWRITTEN and has_dict(f))


def variants() -> list[str]:
    import espeakng_loader

    return sorted(os.listdir(os.path.join(espeakng_loader.get_data_path(), "voices", "!v")))


def voices(split: VoiceSplit) -> tuple[list[str], list[str]]:
    """(languages, variants) of a split; "" as a variant means the language's own voice."""
    langs, vars_ = languages(), variants()
    if split == "test_languages":
        return [x for x in langs if x in HELD_OUT_LANGUAGES], ["", *HELD_OUT_VARIANTS]
    if split == "test_english":
        return list(HELD_OUT_ENGLISH), ["", *HELD_OUT_VARIANTS]
    keep = [x for x in langs if x not in HELD_OUT_LANGUAGES and x.lower() not in HELD_OUT_ENGLISH]
    return keep, ["", *[v for v in vars_ if v not in HELD_OUT_VARIANTS]]


def script_of(language: str) -> str:
    return _SCRIPT_OF.get(language, "latin")


@dataclass
class Speech:
    """One utterance with its truth, cut as the engine cuts audio."""

    audio: np.ndarray  # (samples,) float32, 16 kHz
    mouth: np.ndarray  # (n_frames, 4) open, width, round, lip_bite
    speech: np.ndarray  # (n_frames,) bool
    voice: str
    text: str


def _spoken(
    rng: np.random.Generator,
    engine: ESpeak | Flite | Mbrola | Kokoro,
    voice: str,
    say: Callable[[], str],
    augment: bool,
    warp: float = 1.0,
) -> Speech:
    """Silence, 1-3 sentences of ``voice`` separated by pauses, silence (``warp``: see
    :func:`model.train.synth.speak`)."""
    rate, pitch = int(rng.integers(110, 230)), int(rng.integers(15, 85))
    t = float(rng.uniform(0.1, 0.6))
    pieces = [np.zeros(round(t * SAMPLE_RATE_HZ), np.float32)]
    phonemes: list[Phoneme] = []
    texts = []
    for _ in range(int(rng.integers(1, 4))):
        tx = say()
        texts.append(tx)
        t = speak(engine, tx, voice, rate, pitch, t, pieces, phonemes, warp)
        gap = float(rng.uniform(0.2, 0.7) if rng.random() < 0.7 else rng.uniform(1.0, 2.0))
        phonemes.append(Phoneme("_", t))
        pieces.append(np.zeros(round(gap * SAMPLE_RATE_HZ), np.float32))
        t += gap
    audio = np.concatenate(pieces)
    mouth = mouth_track(phonemes, audio.shape[0] / SAMPLE_RATE_HZ)
    speech = speech_flags(phonemes, mouth.shape[0])
    if augment:
        audio = augment_audio(audio, rng)
    return Speech(audio, mouth, speech, voice, " / ".join(texts))


def make_speech(seed: int, split: VoiceSplit, engine: ESpeak, augment: bool = True) -> Speech:
    """Silence, 1-3 sentences of one voice separated by pauses, silence. Deterministic by seed."""
    rng = np.random.default_rng([seed, {"train": 11, "test_english": 12, "test_languages": 13}[split]])
    langs, vars_ = voices(split)
    lang = str(rng.choice(langs))
    var = str(rng.choice(vars_))
    return _spoken(rng, engine, f"{lang}+{var}" if var else lang, lambda: text(rng, script_of(lang)), augment)


def make_english_speech(seed: int, engine: ESpeak, augment: bool = True) -> Speech:
    """Like :func:`make_speech` for the training split, in English words (the clip generator's
    vocabulary) rather than pseudo-words. Half the utterances use the 8 voices of the rendered
    training clips (``synth.VOICES["train"]``), half any of the training split's English voices
    and variants, so the head hears English words from many more voices than those 8. The
    test clips' voices (``synth.VOICES["test"]``) and the held-out variants stay out."""
    from model.train.synth import VOICES, random_text

    rng = np.random.default_rng([seed, 15])
    if rng.random() < 0.5:  # the voices of the rendered training clips, which the model trains on anyway
        voice = str(rng.choice(VOICES["train"]))
    else:
        langs, vars_ = voices("train")
        english = [x for x in langs if x.lower().startswith("en")]
        lang, var = str(rng.choice(english)), str(rng.choice(vars_))
        voice = f"{lang}+{var}" if var else lang
    return _spoken(rng, engine, voice, lambda: random_text(rng), augment)


def make_flite_speech(seed: int, engine: Flite, augment: bool = True) -> Speech:
    """Like :func:`make_speech` for the training split, spoken by Flite (``model/train/flite.py``):
    English sentences of the clip generator's vocabulary, one of Flite's training voices."""
    from model.train.synth import random_text

    rng = np.random.default_rng([seed, 14])
    voice = str(rng.choice(FLITE_VOICES))
    sp = _spoken(rng, engine, voice, lambda: random_text(rng), augment)
    return Speech(sp.audio, sp.mouth, sp.speech, f"flite:{voice}", sp.text)


MBROLA_WARP = (0.85, 1.18)  # each utterance played this much faster or slower: pitch and formants move


def make_mbrola_speech(seed: int, engine: Mbrola, augment: bool = True) -> Speech:
    """Like :func:`make_flite_speech`, spoken by one of MBROLA's English voices
    (``model/train/mbrola.py``), each utterance warped in time by a factor drawn from
    :data:`MBROLA_WARP`, so that four recorded speakers stand for many vocal tracts."""
    from model.train.synth import random_text

    rng = np.random.default_rng([seed, 16])
    voice = str(rng.choice(MBROLA_VOICES))
    warp = float(np.random.default_rng([seed, 17]).uniform(*MBROLA_WARP))
    sp = _spoken(rng, engine, voice, lambda: random_text(rng), augment, warp)
    return Speech(sp.audio, sp.mouth, sp.speech, f"mbrola:{voice}", sp.text)


KOKORO_WARP = (0.9, 1.12)  # as MBROLA_WARP; Kokoro has no pitch control of its own


def make_kokoro_speech(seed: int, engine: Kokoro, augment: bool = True) -> Speech:
    """Like :func:`make_mbrola_speech`, spoken by Kokoro's neural vocoder (``model/train/kokoro.py``)
    in English words: half the utterances by one of its five speakers, half by a blend of two
    (a style vector weighted 0.2-0.8), each warped in time by a factor drawn from
    :data:`KOKORO_WARP`."""
    from model.train.synth import random_text

    rng = np.random.default_rng([seed, 18])
    a, b = (str(v) for v in rng.choice(KOKORO_VOICES, 2, replace=False))
    voice = a if rng.random() < 0.5 else f"{a}*{rng.uniform(0.2, 0.8):.2f}+{b}"
    warp = float(np.random.default_rng([seed, 19]).uniform(*KOKORO_WARP))
    sp = _spoken(rng, engine, voice, lambda: random_text(rng), augment, warp)
    return Speech(sp.audio, sp.mouth, sp.speech, f"kokoro:{voice}", sp.text)


def frame_windows(audio: np.ndarray, n_frames: int, before_ms: int, after_ms: int) -> np.ndarray:
    """(n_frames, n) audio windows around each frame's time, exactly as the engine cuts them
    (``stream.chunker.audio_windows`` on a ring holding the whole stream)."""
    ring = AudioRing(int(audio.shape[0] / SAMPLE_RATE_HZ * 1000) + 2000)
    ring.write(0, audio)
    return audio_windows(ring, np.arange(n_frames) / FPS, before_ms, after_ms)


@dataclass
class FrameSet(NpzRecord):
    """Per-frame audio windows and mouth truth, pooled over many utterances."""

    audio: np.ndarray  # (N, n) float16
    mouth: np.ndarray  # (N, 4) float32
    speech: np.ndarray  # (N,) bool
    utterance: np.ndarray  # (N,) int32: which utterance each frame came from

    def __len__(self) -> int:
        return self.audio.shape[0]


def build_frames(
    split: VoiceSplit,
    seeds: range,
    before_ms: int,
    after_ms: int,
    cache_dir: str | None = None,
    engine: Literal["espeak", "flite", "mbrola", "english", "kokoro"] = "espeak",
) -> FrameSet:
    """The frames of utterances ``seeds`` of ``split``, spoken by eSpeak NG, or, for the training
    split only, by Flite (``engine="flite"``), by MBROLA's English voices (``engine="mbrola"``), by
    Kokoro's neural voices (``engine="kokoro"``) or by eSpeak NG's English voices in English words
    (``engine="english"``)."""
    if engine != "espeak" and split != "train":
        raise ValueError(f"{engine} speech is for training only, not the {split!r} split")
    path = None
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        tags = {"espeak": "", "flite": "_flite", "mbrola": "_mbrola2", "english": "_english2", "kokoro": "_kokoro1"}
        tag = tags[engine]
        name = f"speech_{split}{tag}_{seeds.start}_{seeds.stop}_{before_ms}_{after_ms}_v1.npz"
        path = os.path.join(cache_dir, name)
        if os.path.isfile(path):
            return FrameSet.load(path)
    make: Callable[[int], Speech]
    if engine == "flite":
        flite = Flite()
        make = lambda s: make_flite_speech(s, flite)  # noqa: E731
    elif engine == "mbrola":
        mbrola = Mbrola()
        make = lambda s: make_mbrola_speech(s, mbrola)  # noqa: E731
    elif engine == "kokoro":
        kokoro = Kokoro()
        make = lambda s: make_kokoro_speech(s, kokoro)  # noqa: E731
    else:
        espeak = ESpeak()
        make = (
            (lambda s: make_english_speech(s, espeak))
            if engine == "english"
            else (lambda s: make_speech(s, split, espeak))
        )
    parts = []
    for k, s in enumerate(seeds):
        sp = make(s)
        win = frame_windows(sp.audio, len(sp.mouth), before_ms, after_ms).astype(np.float16)
        parts.append(FrameSet(win, sp.mouth, sp.speech, np.full(len(sp.mouth), k, np.int32)))
    out = FrameSet.concat(parts)
    if path:
        out.save(path)
    return out
