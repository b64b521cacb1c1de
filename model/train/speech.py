"""Synthetic speech with known phoneme timing: the eSpeak NG wrapper lives in
``translate_bridge/espeak.py`` (the dubbing bridge speaks subtitles with it too); Festival,
kept for evaluation, in ``model/train/festival.py``."""

from typing import Protocol

from translate_bridge.espeak import ESpeak, Phoneme, Utterance


class SpeechEngine(Protocol):
    def synthesize(self, text: str, voice: str, rate_wpm: int = 160, pitch: int = 50) -> Utterance: ...


__all__ = ["ESpeak", "Phoneme", "SpeechEngine", "Utterance"]
