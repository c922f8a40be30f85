"""A live view of a simulated call: who speaks, tool calls, interruptions, call progress."""

from __future__ import annotations

import asyncio
from typing import TextIO

import orjson

from caller_engine.sim.world import World

POLL = 0.05


def _short(value: object, limit: int = 90) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


class LiveView:
    """Follows the emulators' records (they see exactly what crossed the wire)."""

    def __init__(self, world: World, out: TextIO) -> None:
        self.world = world
        self.out = out
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self._seen: dict[tuple[str, int], int] = {}
        self._tool_started: dict[str, float] = {}
        self._tool_answered: set[str] = set()
        self._legs: dict[str, tuple[str, bool, int]] = {}

    def say(self, text: str) -> None:
        self.out.write(f"[{self.loop.time() - self.t0:6.2f}s] {text}\n")
        self.out.flush()

    def _new(self, key: tuple[str, int], items: list[object]) -> list[object]:
        start = self._seen.get(key, 0)
        self._seen[key] = len(items)
        return items[start:]

    def poll(self, call_sid: str | None) -> None:
        for index, session in enumerate(self.world.model.sessions):
            for event in self._new(("sent", index), list(session.sent)):
                assert isinstance(event, dict)
                kind = event.get("type")
                if kind == "response.output_audio_transcript.done":
                    self.say(f"Agent:  {event.get('transcript', '')}")
                elif kind == "conversation.item.input_audio_transcription.completed":
                    self.say(f"Caller: {event.get('transcript', '')}")
                elif kind == "response.function_call_arguments.done":
                    self._tool_started[str(event.get("call_id"))] = self.loop.time()
                    self.say(f"  tool  {event.get('name')}({_short(event.get('arguments', ''))})")
                elif kind == "session.created" and index > 0:
                    self.say("  model  new session: the conversation so far is replayed")
            for event in self._new(("received", index), list(session.received)):
                assert isinstance(event, dict)
                item = event.get("item") or {}
                if (
                    event.get("type") == "conversation.item.create"
                    and isinstance(item, dict)
                    and item.get("type") == "function_call_output"
                    and str(item.get("call_id")) not in self._tool_answered
                ):
                    self._tool_answered.add(str(item.get("call_id")))
                    started = self._tool_started.get(str(item.get("call_id")))
                    took = f" in {(self.loop.time() - started) * 1000:.0f} ms" if started else ""
                    self.say(f"  tool  → {_short(item.get('output', ''))}{took}")
        call = self.world.call(call_sid) if call_sid else None
        if call is not None:
            for status in self._new(("status", 0), list(call.statuses_sent)):
                self.say(f"  phone {status}")
            for index, media in enumerate(call.streams):
                for _ in self._new(("clear", index), list(media.clears)):
                    self.say("  ✂     caller talked over the agent: playback cleared")
            for leg in call.legs:
                state = (leg.status, leg.bridged, len(leg.heard))
                if self._legs.get(leg.sid) == state:
                    continue
                before = self._legs.get(leg.sid, ("", False, 0))
                self._legs[leg.sid] = state
                for text in leg.heard[before[2] :]:
                    self.say(f"  phone {leg.number} hears: {_short(text)}")
                if leg.bridged and not before[1]:
                    self.say(f"  phone {leg.number} pressed {leg.pressed!r}: bridged to the caller")
                if leg.status != before[0]:
                    self.say(f"  phone dial {leg.number}: {leg.status}")

    async def follow(self, call_sid: str, done: asyncio.Event) -> None:
        while not done.is_set():
            self.poll(call_sid)
            await asyncio.sleep(POLL)
        self.poll(call_sid)
