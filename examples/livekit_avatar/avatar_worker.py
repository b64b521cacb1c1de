"""A lip-synced avatar in a LiveKit room, as its own participant (a separate avatar worker).

    export LIVEKIT_URL=wss://... LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=...
    python examples/livekit_avatar/avatar_worker.py --room my-room [--face me.png]

It joins the room as ``sayanything-avatar``, receives the agent's speech over LiveKit's data
stream (the agent sets ``session.output.audio = DataStreamAudioOutput(room,
destination_identity="sayanything-avatar")``, see ``agent.py``), and publishes the
lip-synced video and the same audio through ``AvatarRunner``. Not run in this project's tests
(no LiveKit server here): the generator itself is tested offline in tests/test_integrations.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from livekit import api, rtc
from livekit.agents.voice.avatar import AvatarRunner, DataStreamAudioReceiver

from stream.integrations.livekit_avatar import LipSyncVideoGenerator

IDENTITY = "sayanything-avatar"


async def main(room_name: str, face: str | None) -> None:
    url = os.environ["LIVEKIT_URL"]
    token = (
        api.AccessToken(os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"])
        .with_identity(IDENTITY)
        .with_kind("agent")
        .with_grants(api.VideoGrants(room_join=True, room=room_name))
        .to_jwt()
    )
    room = rtc.Room()
    await room.connect(url, token)
    gen = LipSyncVideoGenerator.create(face=face)
    runner = AvatarRunner(room, audio_recv=DataStreamAudioReceiver(room), video_gen=gen, options=gen.options())
    await runner.start()
    try:
        await runner.wait_for_complete()
    finally:
        await runner.aclose()
        await gen.aclose()
        await room.disconnect()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--room", required=True)
    ap.add_argument("--face", help="a portrait image or an idle clip (default: the bundled character)")
    a = ap.parse_args()
    asyncio.run(main(a.room, a.face))
