"""What each replayed call says and what the emulated model answers.

Synthetic calls repeat one cycle, timed so that every kind of event the report measures
happens in each cycle (times from the start of the agent's long response):

    agent: long response (interrupted) ............. reply + tool call .. follow-up ........
    caller:          speech (barge-in)   silence ≥ VAD   ...... silence ......  speech  silence
                     ^ speech_started → clear          ^ speech_stopped: reply     ^ next cycle

The model's responses come from `MarkedScript`, which stamps a marker on every 20 ms frame
of its audio so replay can time each frame from emission to receipt. Caller audio is a list
of 20 ms μ-law frames with their send offsets; the driver stamps markers on it as it sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from caller_engine.audio import mulaw
from caller_engine.replay import markers
from caller_engine.sim.clips import CLIPS, load_clip
from caller_engine.sim.gemini import GeminiResponse, GeminiScript, tone_pcm
from caller_engine.sim.openai.realtime import RealtimeScript, ScriptedResponse

FRAME_BYTES = 160
FRAME_S = 0.02
SILENT_FRAME = bytes([mulaw.SILENCE_BYTE]) * FRAME_BYTES
SPEECH_THRESHOLD = 400.0  # mean |amplitude| of a frame the emulator's VAD hears as speech
SMS_TEXT = "Your appointment is confirmed for Monday at 10."


@cache
def _tone(ms: int, freq: float, amplitude: int) -> bytes:
    return mulaw.tone(ms, freq, amplitude)


def tone_bytes(size: int, freq: float = 440.0) -> bytes:
    """`size` bytes of a loud tone (built once per length, then sliced)."""
    ms = -(-size // mulaw.BYTES_PER_MS)
    return _tone(max(ms, 1000), freq, 9000)[:size]


@dataclass(frozen=True)
class PlannedResponse:
    text: str
    audio_ms: int
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()


@dataclass(frozen=True)
class Scenario:
    """Timings of the synthetic conversation, in milliseconds."""

    long_ms: int = 3000  # the greeting and every later long response (interrupted)
    barge_at_ms: int = 1000  # caller speech starts this long into the long response
    speech_ms: int = 600
    vad_silence_ms: int = 500  # the server's VAD_SILENCE_MS
    reply_ms: int = 1000  # reply after the barge-in (carries the tool call)
    followup_ms: int = 1000  # response after the tool output
    gap_ms: int = 300  # quiet between the follow-up and the caller's next line
    tool: str | None = "send_sms"

    repeat_from = 0  # every response of the plan repeats

    def responses(self) -> list[PlannedResponse]:
        """The model's responses of one cycle, in the order the call requests them."""
        plan = [
            PlannedResponse("Hello, this is the clinic calling about your visit.", self.long_ms)
        ]
        if self.tool:
            args = {"message": SMS_TEXT} if self.tool == "send_sms" else {}
            plan.append(
                PlannedResponse("Let me text you that.", self.reply_ms, ((self.tool, args),))
            )
            plan.append(PlannedResponse("Done, you have it.", self.followup_ms))
        else:
            plan.append(PlannedResponse("Sure, let me explain.", self.reply_ms + self.followup_ms))
        return plan

    @property
    def second_speech_at_ms(self) -> int:
        return (
            self.barge_at_ms
            + self.speech_ms
            + self.vad_silence_ms
            + self.reply_ms
            + self.followup_ms
            + self.gap_ms
        )

    @property
    def cycle_ms(self) -> int:
        return self.second_speech_at_ms + self.speech_ms + self.vad_silence_ms

    def caller_pattern(self, duration_ms: int) -> list[bool]:
        """Speech (True) or silence per 20 ms frame for `duration_ms` of the call."""
        speech: list[bool] = []
        cycle = self.cycle_ms
        for index in range(duration_ms // 20):
            at = (index * 20) % cycle
            speech.append(
                self.barge_at_ms <= at < self.barge_at_ms + self.speech_ms
                or self.second_speech_at_ms <= at < self.second_speech_at_ms + self.speech_ms
            )
        return speech


@dataclass(frozen=True)
class TurnCycle:
    """A greeting, then a caller turn every `every_ms` from `first_turn_ms`, each answered
    (server VAD) by `answer_ms` of agent audio; with `tool`, the answer is a short reply
    carrying the tool call and, after its output, a follow-up (together `answer_ms`). No
    barge-in: every answer plays out before the next turn."""

    greeting_ms: int = 2000
    first_turn_ms: int = 3000
    every_ms: int = 4000
    speech_ms: int = 600
    answer_ms: int = 2000
    tool: str | None = None
    repeat_from: int = 1  # the greeting is said once; the answers repeat

    @property
    def long_ms(self) -> int:
        return self.greeting_ms

    @property
    def cycle_ms(self) -> int:
        return self.every_ms

    def responses(self) -> list[PlannedResponse]:
        plan = [PlannedResponse("Hello, this is the clinic calling.", self.greeting_ms)]
        if self.tool:
            args = {"message": SMS_TEXT} if self.tool == "send_sms" else {}
            half = self.answer_ms // 2
            plan.append(PlannedResponse("Let me text you that.", half, ((self.tool, args),)))
            plan.append(PlannedResponse("Done, you have it.", self.answer_ms - half))
        else:
            plan.append(PlannedResponse("Sure, here is the answer.", self.answer_ms))
        return plan

    def caller_pattern(self, duration_ms: int) -> list[bool]:
        speech: list[bool] = []
        for index in range(duration_ms // 20):
            at = index * 20 - self.first_turn_ms
            speech.append(at >= 0 and at % self.every_ms < self.speech_ms)
        return speech


AnyScenario = Scenario | TurnCycle


@dataclass(frozen=True)
class CallerAudio:
    """One call's caller side: frames, their send offsets (s), the utterances in it (index
    of the last loud frame → index of the first) and where it came from."""

    frames: list[bytes]
    offsets: list[float]
    utterances: dict[int, int]
    source: str

    @property
    def duration_s(self) -> float:
        return self.offsets[-1] + FRAME_S if self.offsets else 0.0

    @property
    def speech_ends(self) -> frozenset[int]:
        return frozenset(self.utterances)


def find_utterances(
    frames: list[bytes], threshold: float = SPEECH_THRESHOLD, silence_frames: int = 25
) -> dict[int, int]:
    """Utterances as {last loud frame: first loud frame}: loud frames up to a run of at
    least `silence_frames` quiet ones (or the end of the audio)."""
    found: dict[int, int] = {}
    first: int | None = None
    last = 0
    quiet = 0
    for index, frame in enumerate(frames):
        if mulaw.frame_energy(frame) > threshold:
            if first is None:
                first = index
            last = index
            quiet = 0
            continue
        quiet += 1
        if first is not None and quiet >= silence_frames:
            found[last] = first
            first = None
    if first is not None:
        found[last] = first
    return found


def synthetic_audio(scenario: AnyScenario, duration_ms: int) -> CallerAudio:
    pattern = scenario.caller_pattern(duration_ms)
    speech = tone_bytes(scenario.speech_ms * mulaw.BYTES_PER_MS, 300.0)
    frames: list[bytes] = []
    run = 0
    for loud in pattern:
        if loud:
            at = (run * FRAME_BYTES) % max(len(speech), FRAME_BYTES)
            frames.append(speech[at : at + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff"))
            run += 1
        else:
            frames.append(SILENT_FRAME)
            run = 0
    offsets = [index * FRAME_S for index in range(len(frames))]
    utterances: dict[int, int] = {}
    first = 0
    for index, loud in enumerate(pattern):
        if loud and (index == 0 or not pattern[index - 1]):
            first = index
        if loud and (index + 1 == len(pattern) or not pattern[index + 1]):
            utterances[index] = first
    return CallerAudio(frames, offsets, utterances, "synthetic")


def spoken_audio(duration_ms: int, first_wait_ms: int = 4000, gap_ms: int = 6000) -> CallerAudio:
    """Real speech for a real model: the packaged caller clips in turn, with pauses."""
    lines = [name for name in CLIPS if name not in ("voicemail", "beep")]
    audio = bytearray(SILENT_FRAME * (first_wait_ms // 20))
    index = 0
    while len(audio) < duration_ms * mulaw.BYTES_PER_MS:
        audio += load_clip(lines[index % len(lines)])
        audio += SILENT_FRAME * (gap_ms // 20)
        index += 1
    audio = audio[: duration_ms * mulaw.BYTES_PER_MS]
    frames = [
        bytes(audio[at : at + FRAME_BYTES]).ljust(FRAME_BYTES, b"\xff")
        for at in range(0, len(audio), FRAME_BYTES)
    ]
    offsets = [index * FRAME_S for index in range(len(frames))]
    return CallerAudio(frames, offsets, find_utterances(frames), "clips")


@dataclass
class MarkedScript(RealtimeScript):
    """A realtime-emulator script whose response audio carries a marker on every frame:
    stream `stream`, frames numbered across the whole session. The responses of `plan`
    repeat in order (from `repeat_from` after the first pass)."""

    stream: int = 0
    plan: list[PlannedResponse] = field(default_factory=list)
    repeat_from: int = 0  # after the whole plan, it goes on from this response
    served: int = 0
    next_seq: int = 0

    def next_response(self) -> ScriptedResponse:
        if not self.plan:
            return super().next_response()
        index = self.served
        if index >= len(self.plan):
            cycle = len(self.plan) - self.repeat_from
            index = self.repeat_from + (index - self.repeat_from) % cycle
        planned = self.plan[index]
        self.served += 1
        size = planned.audio_ms * mulaw.BYTES_PER_MS
        audio = markers.stamp_frames(tone_bytes(size), self.stream, self.next_seq)
        self.next_seq += markers.count_frames(size)
        return ScriptedResponse(
            text=planned.text, audio=audio, tool_calls=[(n, dict(a)) for n, a in planned.tool_calls]
        )


@dataclass
class PlannedScript(RealtimeScript):
    """The planned responses of `plan`, in order and repeating, without markers (for the
    emulators whose events replay does not observe)."""

    plan: list[PlannedResponse] = field(default_factory=list)
    served: int = 0

    def next_response(self) -> ScriptedResponse:
        if not self.plan:
            return super().next_response()
        planned = self.plan[self.served % len(self.plan)]
        self.served += 1
        audio = tone_bytes(planned.audio_ms * mulaw.BYTES_PER_MS)
        tools = [(name, dict(args)) for name, args in planned.tool_calls]
        return ScriptedResponse(text=planned.text, audio=audio, tool_calls=tools)


@cache
def _tone_24k(ms: int) -> bytes:
    return tone_pcm(ms)


@dataclass
class PlannedGeminiScript(GeminiScript):
    """The planned responses of `plan`, in order and repeating, for the Gemini Live emulator:
    24 kHz PCM16 tones without markers (they would not survive the sample-rate conversion)."""

    plan: list[PlannedResponse] = field(default_factory=list)
    served: int = 0

    def next_response(self) -> GeminiResponse:
        if not self.plan:
            return super().next_response()
        planned = self.plan[self.served % len(self.plan)]
        self.served += 1
        tools = [(name, dict(args)) for name, args in planned.tool_calls]
        return GeminiResponse(planned.text, _tone_24k(planned.audio_ms), tools)
