"""The input audio buffer and user turns: VAD events, commits, transcripts, barge-in.

After `speech_stopped` (or a client commit) the buffer is committed as a user item
(`input_audio_buffer.committed`, `conversation.item.added/done`); with transcription
configured the next scripted transcript follows (`...input_audio_transcription.delta`
and `.completed`); then, for a VAD turn with `create_response`, a response starts unless
one is already active. `speech_started` while a response is active cancels it when
`interrupt_response` is on (status_details.reason "turn_detected").
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from caller_engine.sim.openai.realtime import protocol
from caller_engine.sim.openai.realtime.protocol import Rejection
from caller_engine.sim.openai.realtime.responses import ItemRecord
from caller_engine.sim.openai.realtime.vad import VadSettings, VoiceActivityDetector, energy_for

if TYPE_CHECKING:
    from caller_engine.sim.openai.realtime.session import EmulatedRealtimeSession

MIN_COMMIT_MS = 100
SPOKEN_MS_PER_WORD = 300


class InputTurns:
    def __init__(self, session: EmulatedRealtimeSession) -> None:
        self.session = session
        self.buffer_bytes = 0  # appended since the last commit or clear
        self.speech_item: str | None = None  # item id announced by speech_started
        self.vad = VoiceActivityDetector(VadSettings(session.emulator.vad_energy_threshold))
        self.vad_on = True
        self._format_flagged = False
        self.refresh()

    @property
    def input_format(self) -> dict[str, Any] | None:
        audio_input: dict[str, Any] = self.session.session["audio"]["input"]
        return audio_input.get("format")

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        detection: dict[str, Any] | None = self.session.session["audio"]["input"].get(
            "turn_detection"
        )
        return detection

    def refresh(self) -> None:
        """Follow the session's turn_detection and input format after an update."""
        settings = VadSettings.from_turn_detection(
            self.turn_detection, self.session.emulator.vad_energy_threshold
        )
        self.vad_on = settings is not None
        if settings is not None:
            frame_bytes, energy = energy_for(self.input_format)
            self.vad.reconfigure(settings, frame_bytes, energy)

    def _bytes_per_ms(self) -> int:
        return protocol.audio_bytes_per_ms(self.input_format)

    # -- client events ---------------------------------------------------------------------

    async def append(self, data: bytes) -> None:
        session = self.session
        audio_format = self.input_format or {}
        if audio_format.get("type") != "audio/pcmu" and not self._format_flagged:
            self._format_flagged = True
            session.violations.append(
                "input_audio_buffer.append: audio sent while session.audio.input.format is "
                f"{audio_format.get('type')!r}, not 'audio/pcmu'"
            )
        session.input_audio.extend(data)
        self.buffer_bytes += len(data)
        hook = session.emulator.on_input_audio
        if hook is not None:
            hook(session, data, asyncio.get_running_loop().time())
        if not self.vad_on:
            self.vad.advance(len(data) // self._bytes_per_ms())
            return
        for event in self.vad.feed(data):
            if event.kind == "started":
                await self.speech_started(event.audio_ms)
            else:
                await self.speech_stopped(event.audio_ms)

    async def commit_by_client(self) -> Rejection | None:
        buffered_ms = self.buffer_bytes / self._bytes_per_ms()
        if buffered_ms < MIN_COMMIT_MS:
            return protocol.commit_empty(buffered_ms)
        item_id = self.speech_item or protocol.new_id("item")
        self.speech_item = None
        self.vad.speaking = False
        await self.commit(item_id, transcript=None, auto=False)
        return None

    async def clear(self) -> None:
        self.buffer_bytes = 0
        self.speech_item = None
        self.vad.reset()
        await self.session.emit({"type": "input_audio_buffer.cleared"})

    # -- turns -----------------------------------------------------------------------------

    async def speech_started(self, audio_start_ms: int) -> None:
        session = self.session
        self.speech_item = protocol.new_id("item")
        detection = self.turn_detection
        run = session.active_response
        interrupt = (
            run is not None
            and detection is not None
            and detection.get("interrupt_response", True) is not False
        )
        if run is not None and interrupt:
            run.cancel_reason = "turn_detected"  # before speech_started: no delta follows it
            run.wake.set()
        started = {"type": "input_audio_buffer.speech_started", "audio_start_ms": audio_start_ms}
        await session.emit({**started, "item_id": self.speech_item})
        if run is not None and interrupt:
            await session.cancel_response(run, "turn_detected")

    async def speech_stopped(self, audio_end_ms: int, transcript: str | None = None) -> None:
        item_id = self.speech_item or protocol.new_id("item")
        self.speech_item = None
        stopped = {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": audio_end_ms}
        await self.session.emit({**stopped, "item_id": item_id})
        await self.commit(item_id, transcript=transcript, auto=True)

    async def commit(self, item_id: str, *, transcript: str | None, auto: bool) -> None:
        session = self.session
        buffered_ms = self.buffer_bytes // self._bytes_per_ms()
        previous = session.append_to_conversation(item_id)
        committed = {"type": "input_audio_buffer.committed", "previous_item_id": previous}
        await session.emit({**committed, "item_id": item_id})
        item = protocol.user_audio_item(item_id)
        session.register_item(ItemRecord(item))
        for kind in ("conversation.item.added", "conversation.item.done"):
            await session.emit({"type": kind, "previous_item_id": previous, "item": item})
        self.buffer_bytes = 0
        self.vad.mark_buffer_start()
        text = transcript if transcript is not None else session.script.next_transcript()
        session.user_transcripts.append(text)
        if session.session["audio"]["input"].get("transcription"):
            ids = {"item_id": item_id, "content_index": 0}
            delta = "conversation.item.input_audio_transcription.delta"
            await session.emit({"type": delta, **ids, "delta": text})
            completed = "conversation.item.input_audio_transcription.completed"
            usage = protocol.transcription_usage(buffered_ms, text)
            await session.emit({"type": completed, **ids, "transcript": text, "usage": usage})
            item["content"][0]["transcript"] = text
        detection = self.turn_detection
        if (
            auto
            and detection is not None
            and detection.get("create_response", True) is not False
            and session.active_response is None
        ):
            await session.start_response({}, source="turn_detection")

    async def user_speaks(self, text: str) -> None:
        spoken_ms = max(500, SPOKEN_MS_PER_WORD * len(text.split()))
        if self.turn_detection is None:
            self.vad.advance(spoken_ms)
            await self.commit(protocol.new_id("item"), transcript=text, auto=False)
            return
        self.vad.speaking = False
        await self.speech_started(self.vad.position_ms)
        self.vad.advance(spoken_ms + self.vad.settings.silence_duration_ms)
        await self.speech_stopped(self.vad.position_ms, transcript=text)

    async def manual_speech_started(self) -> None:
        start = self.vad.force_start() if self.vad_on else self.vad.position_ms
        await self.speech_started(start)
