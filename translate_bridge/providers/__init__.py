"""Dubbing providers, one file each, imported lazily: ``subtitles`` (timed text spoken by eSpeak
NG, runs offline here) and ``websocket`` (any external ASR -> MT -> TTS service speaking the
protocol of ``translate_bridge/protocol.py``)."""
