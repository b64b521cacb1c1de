"""Translation dubbing: dubbed speech from a provider drives the lips (see README.md here).

``protocol`` what a provider sends; ``align`` the duration policy; ``bridge`` dubbed audio into
a session (offline track or live feed); ``providers`` subtitles + eSpeak NG, and how to plug in
an ASR -> MT -> TTS service; ``espeak`` the eSpeak NG wrapper.
"""
