"""Adapters of the avatar (``stream/avatar.py``) for voice-agent frameworks: LiveKit Agents
(``livekit.py``, ``pip install 'sayanything-live[livekit]'``) and Pipecat (``pipecat.py``,
``pip install 'sayanything-live[pipecat]'``)."""
