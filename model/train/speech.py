"""Synthetic speech with known phoneme timing: the eSpeak NG wrapper lives in
``translate_bridge/espeak.py`` (the dubbing bridge speaks subtitles with it too)."""

from translate_bridge.espeak import ESpeak, Phoneme, Utterance

__all__ = ["ESpeak", "Phoneme", "Utterance"]
