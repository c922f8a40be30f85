"""The person (or machine) at the other end of an emulated call.

A `Callee` decides how the call is picked up (`outcome`) and, once the media stream is up,
what happens on the line (`run`). `ScriptedCallee` plays a list of steps:

    ScriptedCallee([
        Say("hello"),
        WaitForAgent(quiet_ms=800),
        Say("book_tomorrow"),
        WaitForAgent(),
        BargeIn(after_ms=600, clip="wait_question"),
        PressDigits("1"),
        HangUp(),
    ])

Clip names refer to `caller_engine.sim.clips`; raw μ-law bytes work too. Milliseconds are
stream time (see `TwilioMediaClient`); step timeouts are real seconds. A step that times out
raises, which the network records as `callee_error` before the callee hangs up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from caller_engine.sim.clips import load_clip

if TYPE_CHECKING:
    from caller_engine.sim.emulated_call import ActiveEmulatedCall
    from caller_engine.sim.twilio.media import TwilioMediaClient

Outcome = Literal["human", "machine", "busy", "no-answer", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("human", "machine", "busy", "no-answer", "failed")


class Callee(Protocol):
    @property
    def outcome(self) -> Outcome:
        """How the call is picked up."""

    @property
    def answered_by(self) -> str | None:
        """AnsweredBy to report instead of the one the outcome implies (e.g. "fax")."""

    async def run(self, call: ActiveEmulatedCall) -> None:
        """What the callee does once the stream is up; cancelled when the call ends."""


@dataclass(frozen=True, slots=True)
class Utterance:
    """Something the callee said: clip name (or "audio"), loop times of its first and last frame."""

    name: str
    started_at: float
    ended_at: float


@dataclass(slots=True)
class ScriptContext:
    call: ActiveEmulatedCall
    media: TwilioMediaClient
    # received_audio length when the callee last finished speaking (or an agent turn ended):
    # audio beyond it is the agent's new turn
    turn_start: int = 0


class Step(Protocol):
    async def run(self, ctx: ScriptContext) -> None: ...


def _audio(clip: str | bytes) -> tuple[str, bytes]:
    if isinstance(clip, bytes):
        return "audio", clip
    return clip, load_clip(clip)


async def say(ctx: ScriptContext, clip: str | bytes, *, paced: bool = True) -> None:
    name, audio = _audio(clip)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await ctx.media.send_audio(audio, paced=paced)
    ctx.call.utterances.append(Utterance(name, started, loop.time()))
    ctx.turn_start = len(ctx.media.received_audio)


@dataclass(frozen=True, slots=True)
class Say:
    clip: str | bytes
    paced: bool = True

    async def run(self, ctx: ScriptContext) -> None:
        await say(ctx, self.clip, paced=self.paced)


@dataclass(frozen=True, slots=True)
class WaitForAgent:
    """Wait for the agent's turn: new agent audio, then `quiet_ms` with nothing playing."""

    quiet_ms: float = 800
    timeout: float = 30.0
    require_audio: bool = True

    async def run(self, ctx: ScriptContext) -> None:
        media = ctx.media
        if self.require_audio:
            await media.wait_until(lambda: len(media.received_audio) > ctx.turn_start, self.timeout)
        await media.wait_for_quiet(self.quiet_ms, self.timeout)
        ctx.turn_start = len(media.received_audio)


@dataclass(frozen=True, slots=True)
class BargeIn:
    """Talk over the agent once `after_ms` of its audio has played since this step began."""

    after_ms: float
    clip: str | bytes
    timeout: float = 30.0

    async def run(self, ctx: ScriptContext) -> None:
        media = ctx.media
        base = media.played_bytes
        need = int(self.after_ms * 8)
        await media.wait_until(lambda: media.played_bytes - base >= need, self.timeout)
        await say(ctx, self.clip)


@dataclass(frozen=True, slots=True)
class Silence:
    """Say nothing for `ms` (silence frames on the line)."""

    ms: int

    async def run(self, ctx: ScriptContext) -> None:
        await ctx.media.send_silence(self.ms)


@dataclass(frozen=True, slots=True)
class PressDigits:
    digits: str
    gap_ms: int = 200

    async def run(self, ctx: ScriptContext) -> None:
        for i, digit in enumerate(self.digits):
            if i:
                await ctx.media.send_silence(self.gap_ms)
            await ctx.media.send_dtmf(digit)


@dataclass(frozen=True, slots=True)
class HangUp:
    async def run(self, ctx: ScriptContext) -> None:
        await ctx.call.hang_up()


@dataclass(frozen=True, slots=True)
class OnStream:
    """Wait until the call is on its `number`-th media stream (from 1): after a transfer
    that did not connect, the caller is back with the agent on a new stream."""

    number: int

    async def run(self, ctx: ScriptContext) -> None:
        if len(ctx.call.streams) < self.number:
            await asyncio.Event().wait()  # until this stream ends; the next run goes on


@dataclass
class ScriptedCallee:
    """Plays its steps; on a later media stream of the same call it carries on with the
    step that was under way when the previous stream ended."""

    steps: Sequence[Step] = ()
    outcome: Outcome = "human"
    answered_by: str | None = None
    completed_steps: int = field(default=0, init=False)

    async def run(self, call: ActiveEmulatedCall) -> None:
        media = call.media
        if media is None:
            raise RuntimeError("the callee runs only once the media stream is up")
        ctx = ScriptContext(call, media)
        for step in self.steps[self.completed_steps :]:
            await step.run(ctx)
            self.completed_steps += 1


def voicemail(*, answered_by: str | None = None) -> ScriptedCallee:
    """An answering machine: greeting, then the tone, then it listens."""
    return ScriptedCallee(
        [Say("voicemail"), Say("beep")], outcome="machine", answered_by=answered_by
    )


def unanswered(outcome: Outcome) -> ScriptedCallee:
    """A callee that never talks: for busy, no-answer and failed calls."""
    return ScriptedCallee([], outcome=outcome)
