"""The agent side: a LiveKit Agents worker whose speech goes to the avatar worker
(``avatar_worker.py``) instead of straight into the room. Bring your own STT/LLM/TTS plugins.

    python examples/livekit_avatar/agent.py dev

In-process instead (one process, no data stream): build the generator here and run
``AvatarRunner(ctx.room, audio_recv=QueueAudioOutput(), video_gen=gen, options=gen.options())``
with ``session.output.audio`` set to that same ``QueueAudioOutput``.
"""

from __future__ import annotations

from livekit.agents import Agent, AgentSession, JobContext, RoomOutputOptions, WorkerOptions, cli
from livekit.agents.voice.avatar import DataStreamAudioOutput

AVATAR = "sayanything-avatar"


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    session = AgentSession()  # add stt=..., llm=..., tts=... plugins of your choice
    session.output.audio = DataStreamAudioOutput(ctx.room, destination_identity=AVATAR)
    await session.start(
        agent=Agent(instructions="You are a friendly assistant."),
        room=ctx.room,
        room_output_options=RoomOutputOptions(audio_enabled=False),  # the avatar publishes the audio
    )


if __name__ == "__main__":
    cli.run_app(WorkerOptions(entrypoint_fnc=entrypoint))
