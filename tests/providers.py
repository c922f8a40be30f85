"""Per-provider fixtures of the conformance suite: one `Harness` per realtime provider.

A harness starts its provider's emulator, tells the app how to reach it, scripts what the
emulated model says in provider-neutral `Turn`s, and exposes each emulated connection through
the same small `ModelView`. The conformance tests (`test_conformance.py`) run once per entry
of `HARNESSES`: adding a provider is adding its harness here.
"""

from __future__ import annotations

import asyncio
import base64
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson

from caller_engine.audio import mulaw
from caller_engine.audio.codec import ulaw_to_pcm16
from caller_engine.audio.convert import CallerToPcm
from caller_engine.sim.elevenlabs import ElevenLabsEmulator, EmulatedConversation
from caller_engine.sim.gemini import (
    GeminiConnection,
    GeminiLiveEmulator,
    GeminiResponse,
    GeminiScript,
    tone_pcm,
)
from caller_engine.sim.nova_sonic import TEST_CREDENTIALS, EmulatedNovaSession, NovaSonicEmulator
from caller_engine.sim.nova_sonic.auth import Refusal
from caller_engine.sim.openai.realtime import (
    EmulatedRealtimeSession,
    RealtimeEmulator,
    RealtimeScript,
    ScriptedResponse,
)
from caller_engine.sim.server import LoopbackServer
from tests.bridge_env import BridgeEnv, bridge_env

AMPLITUDE = 9000


@dataclass
class Turn:
    """One thing the emulated model says: `ms` of a `hz` tone, its text, its tool calls."""

    text: str = "Okay."
    ms: int = 300
    hz: float = 1000.0
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def tone_ulaw(ms: int, hz: float) -> bytes:
    return mulaw.tone(ms, hz, AMPLITUDE)


class ModelView(Protocol):
    """One emulated model connection, seen the same way for every provider."""

    @property
    def closed(self) -> asyncio.Event: ...

    def input_ms(self) -> float:
        """Caller audio received so far, in ms."""

    def input_matches(self, sent: bytes) -> bool:
        """The caller's μ-law `sent` is what reached the model (byte-exact for μ-law
        providers; the same tone at the same length for converting ones)."""

    def tool_outputs(self) -> dict[str, dict[str, Any]]:
        """Tool outputs received, by tool name."""

    def prompts(self) -> list[str]:
        """Texts the client sent to make the model speak (greeting steering)."""

    async def drop(self) -> None:
        """Close the connection from the server side, unannounced."""


class Harness(Protocol):
    name: str
    passthrough: bool
    # How many times real time a test may play twenty calls' lines at once: the emulator
    # and the bridge share one process.
    line_speed: float

    @property
    def sessions(self) -> list[ModelView]: ...

    @property
    def connection_attempts(self) -> int: ...

    @property
    def violations(self) -> list[str]: ...

    async def wait_for_session(self, index: int = 0, within: float = 5.0) -> ModelView: ...

    def refuse(self, fatal: bool, count: int = 1000) -> None:
        """Make the next `count` connections fail: refused for good (bad key) or not."""


def agent_audio_ok(harness: Harness, received: bytes, turn: Turn) -> bool:
    """Twilio got this turn's audio: byte-exact for μ-law providers; for converting ones the
    same tone (frequency, SNR >= 30 dB) and the same length to within 2 ms."""
    if harness.passthrough:
        return received == tone_ulaw(turn.ms, turn.hz)
    if abs(len(received) - turn.ms * 8) > 16:
        return False
    return tone_quality(received, turn.hz) >= 30.0


def tone_quality(ulaw: bytes, hz: float, rate: int = 8000) -> float:
    """SNR in dB of a μ-law signal against the best-fitting sine at `hz` (edges skipped),
    or -inf when its dominant frequency is not `hz`."""
    pcm = ulaw_to_pcm16(ulaw).astype(np.float64)
    return pcm_tone_quality(pcm, hz, rate)


def pcm_tone_quality(pcm: np.ndarray[Any, Any], hz: float, rate: int) -> float:
    trim = rate // 100
    signal = pcm[trim:-trim] if len(pcm) > 4 * trim else pcm
    if len(signal) < rate // 50:
        return -math.inf
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    peak = float(np.argmax(spectrum) * rate / len(signal))
    if abs(peak - hz) > max(2 * rate / len(signal), 10):
        return -math.inf
    t = np.arange(len(signal)) / rate
    basis = np.stack([np.sin(2 * math.pi * hz * t), np.cos(2 * math.pi * hz * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, signal, rcond=None)
    fitted = basis @ coef
    noise = float(np.mean((signal - fitted) ** 2)) or 1e-9
    return 10 * math.log10(float(np.mean(fitted**2)) / noise)


# -- OpenAI Realtime -------------------------------------------------------------------------


class OpenAIView:
    def __init__(self, session: EmulatedRealtimeSession) -> None:
        self.session = session

    @property
    def closed(self) -> asyncio.Event:
        return self.session.closed

    def input_ms(self) -> float:
        return len(self.session.input_audio) / 8

    def input_matches(self, sent: bytes) -> bool:
        return bytes(self.session.input_audio) == sent

    def tool_outputs(self) -> dict[str, dict[str, Any]]:
        names = {
            c["call_id"]: c["name"]
            for c in self.session.events("response.function_call_arguments.done")
        }
        return {
            names.get(o["call_id"], o["call_id"]): orjson.loads(o["output"])
            for o in self.session.function_call_outputs
        }

    def prompts(self) -> list[str]:
        return [
            str((r.get("response") or {}).get("instructions", ""))
            for r in self.session.received
            if r.get("type") == "response.create"
        ]

    async def drop(self) -> None:
        await self.session.drop()


class OpenAIHarness:
    name = "openai"
    passthrough = True
    line_speed = 8.0

    def __init__(self, env: BridgeEnv) -> None:
        self.emulator: RealtimeEmulator = env.model

    @staticmethod
    def script(turns: list[Turn], users: list[str]) -> Callable[[], RealtimeScript]:
        def make() -> RealtimeScript:
            return RealtimeScript(
                responses=[
                    ScriptedResponse(
                        text=t.text, audio=tone_ulaw(t.ms, t.hz), tool_calls=list(t.tool_calls)
                    )
                    for t in turns
                ],
                user_transcripts=list(users),
            )

        return make

    @property
    def sessions(self) -> list[ModelView]:
        return [OpenAIView(s) for s in self.emulator.sessions]

    @property
    def connection_attempts(self) -> int:
        return self.emulator.connection_attempts

    @property
    def violations(self) -> list[str]:
        return self.emulator.violations

    async def wait_for_session(self, index: int = 0, within: float = 5.0) -> ModelView:
        return OpenAIView(await self.emulator.wait_for_session(index, within))

    def refuse(self, fatal: bool, count: int = 1000) -> None:
        if fatal:
            self.emulator.fatal_on_connect = "invalid_api_key"
        else:
            self.emulator.reject_connections = count


# -- Gemini Live ----------------------------------------------------------------------------

GEMINI_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


class GeminiView:
    def __init__(self, connection: GeminiConnection) -> None:
        self.connection = connection

    @property
    def closed(self) -> asyncio.Event:
        return self.connection.closed

    def input_ms(self) -> float:
        return len(self.connection.input_pcm) / 2 / self.connection.input_rate * 1000

    def input_matches(self, sent: bytes) -> bool:
        """What arrived is `sent` converted frame by frame as the bridge does (to within
        the resampler's rounding): same length, and equal to 40 dB."""
        inbound = CallerToPcm(self.connection.input_rate)
        expected = b"".join(
            base64.b64decode(inbound.convert(base64.b64encode(sent[i : i + 160]).decode()))
            for i in range(0, len(sent), 160)
        )
        got = bytes(self.connection.input_pcm)
        if len(got) != len(expected):
            return False
        a = np.frombuffer(got, dtype="<i2").astype(np.float64)
        b = np.frombuffer(expected, dtype="<i2").astype(np.float64)
        noise = float(np.sum((a - b) ** 2))
        return noise == 0 or 10 * math.log10(max(float(np.sum(b**2)), 1.0) / noise) >= 40

    def tool_outputs(self) -> dict[str, dict[str, Any]]:
        return dict(self.connection.tool_outputs)

    def prompts(self) -> list[str]:
        return list(self.connection.prompts)

    async def drop(self) -> None:
        await self.connection.drop()


class GeminiHarness:
    name = "gemini"
    passthrough = False
    line_speed = 8.0

    def __init__(self, emulator: GeminiLiveEmulator) -> None:
        self.emulator = emulator

    @staticmethod
    def script(turns: list[Turn], users: list[str]) -> Callable[[], GeminiScript]:
        def make() -> GeminiScript:
            return GeminiScript(
                [
                    GeminiResponse(t.text, tone_pcm(t.ms, t.hz, AMPLITUDE), list(t.tool_calls))
                    for t in turns
                ],
                list(users),
            )

        return make

    @property
    def sessions(self) -> list[ModelView]:
        return [GeminiView(s) for s in self.emulator.sessions]

    @property
    def connection_attempts(self) -> int:
        return self.emulator.connection_attempts

    @property
    def violations(self) -> list[str]:
        return self.emulator.violations

    async def wait_for_session(self, index: int = 0, within: float = 5.0) -> ModelView:
        return GeminiView(await self.emulator.wait_for_session(index, within))

    def refuse(self, fatal: bool, count: int = 1000) -> None:
        if fatal:
            self.emulator.api_key = "a-different-key"
        else:
            self.emulator.reject_connections = count


# -- Amazon Nova Sonic -----------------------------------------------------------------------


class NovaView:
    def __init__(self, emulator: NovaSonicEmulator, session: EmulatedNovaSession) -> None:
        self.emulator = emulator
        self.session = session

    @property
    def closed(self) -> asyncio.Event:
        return self.session.closed

    def input_ms(self) -> float:
        return len(self.session.input_audio) / 16  # PCM16 at 8 kHz

    def input_matches(self, sent: bytes) -> bool:
        return bytes(self.session.input_audio) == mulaw.decode_to_bytes(sent)

    def tool_outputs(self) -> dict[str, dict[str, Any]]:
        return {
            self.session.tool_uses.get(use_id, use_id): orjson.loads(output)
            for use_id, output in self.session.tool_results.items()
        }

    def prompts(self) -> list[str]:
        return list(self.session.prompts)

    async def drop(self) -> None:
        self.emulator.drop(self.session)


class NovaHarness:
    name = "nova_sonic"
    passthrough = False
    line_speed = 2.0  # every event signed and checked in Python on both sides

    def __init__(self, emulator: NovaSonicEmulator) -> None:
        self.emulator = emulator

    @staticmethod
    def script(turns: list[Turn], users: list[str]) -> Callable[[], RealtimeScript]:
        def make() -> RealtimeScript:
            return RealtimeScript(
                responses=[
                    ScriptedResponse(
                        text=t.text, audio=tone_ulaw(t.ms, t.hz), tool_calls=list(t.tool_calls)
                    )
                    for t in turns
                ],
                user_transcripts=list(users),
                # After the script, the model answers a tool result with nothing more.
                default_response=ScriptedResponse(text="", audio=b""),
            )

        return make

    @property
    def sessions(self) -> list[ModelView]:
        return [NovaView(self.emulator, s) for s in self.emulator.sessions]

    @property
    def connection_attempts(self) -> int:
        return self.emulator.requests

    @property
    def violations(self) -> list[str]:
        errors = [f"{kind}: {message}" for kind, message in self.emulator.stream_errors]
        return self.emulator.violations + errors

    async def wait_for_session(self, index: int = 0, within: float = 5.0) -> ModelView:
        session = await self.emulator.wait_for_session(index + 1, within)
        return NovaView(self.emulator, session)

    def refuse(self, fatal: bool, count: int = 1000) -> None:
        refusal = (
            Refusal(403, "AccessDeniedException", "You don't have access to the model.")
            if fatal
            else Refusal(429, "ThrottlingException", "Too many requests, please wait.")
        )
        self.emulator.refuse_next = [refusal] * count


@asynccontextmanager
async def nova_sonic_env(
    turns: list[Turn], users: list[str], late_chunks: int, settings: dict[str, Any]
) -> AsyncIterator[tuple[BridgeEnv, Harness]]:
    emulator = NovaSonicEmulator(
        script_factory=NovaHarness.script(turns, users),
        speedup=0,
        endpointing_ms=300,
        late_chunks=late_chunks,
    )
    await emulator.start()
    values = {
        "realtime_provider": "nova_sonic",
        "aws_access_key_id": TEST_CREDENTIALS.access_key_id,
        "aws_secret_access_key": TEST_CREDENTIALS.secret_access_key,
        "bedrock_runtime_url": emulator.url,
        **settings,
    }
    try:
        async with bridge_env(**values) as env:
            yield env, NovaHarness(emulator)
    finally:
        await emulator.stop()


# -- ElevenLabs Agents ------------------------------------------------------------------------

ELEVENLABS_AGENT = "agent_conformance"
ELEVENLABS_KEY = "xi-conformance-key"


class ElevenLabsView:
    def __init__(self, conversation: EmulatedConversation) -> None:
        self.conversation = conversation

    @property
    def closed(self) -> asyncio.Event:
        return self.conversation.closed

    def input_ms(self) -> float:
        return len(self.conversation.input_audio) / 8

    def input_matches(self, sent: bytes) -> bool:
        return bytes(self.conversation.input_audio) == sent

    def tool_outputs(self) -> dict[str, dict[str, Any]]:
        return {
            call.name: orjson.loads(call.result["result"])
            for call in self.conversation.tool_calls
            if call.result is not None
        }

    def prompts(self) -> list[str]:
        init = self.conversation.initiation or {}
        agent = (init.get("conversation_config_override") or {}).get("agent") or {}
        first = [agent["first_message"]] if agent.get("first_message") else []
        return first + self.conversation.user_messages

    async def drop(self) -> None:
        await self.conversation.drop(1011)


class ElevenLabsHarness:
    name = "elevenlabs"
    passthrough = True
    line_speed = 8.0

    def __init__(self, emulator: ElevenLabsEmulator) -> None:
        self.emulator = emulator

    @staticmethod
    def script(turns: list[Turn], users: list[str]) -> Callable[[], RealtimeScript]:
        return OpenAIHarness.script(turns, users)

    @property
    def sessions(self) -> list[ModelView]:
        return [ElevenLabsView(c) for c in self.emulator.conversations]

    @property
    def connection_attempts(self) -> int:
        return self.emulator.connection_attempts

    @property
    def violations(self) -> list[str]:
        return self.emulator.violations

    async def wait_for_session(self, index: int = 0, within: float = 5.0) -> ModelView:
        return ElevenLabsView(await self.emulator.wait_for_conversation(index, within))

    def refuse(self, fatal: bool, count: int = 1000) -> None:
        if fatal:  # the agent's prompt needs a variable no call sends: close 1008
            self.emulator.agents[ELEVENLABS_AGENT].prompt = "Call {{account_holder}}."
        else:
            self.emulator.reject_connections = count


@asynccontextmanager
async def elevenlabs_env(
    turns: list[Turn], users: list[str], late_chunks: int, settings: dict[str, Any]
) -> AsyncIterator[tuple[BridgeEnv, Harness]]:
    emulator = ElevenLabsEmulator(
        api_key=ELEVENLABS_KEY,
        script_factory=ElevenLabsHarness.script(turns, users),
        stale_chunks=late_chunks,
        silence_ms=300,
    )
    emulator.speak_script_first_line = True
    emulator.audible_speed = 4.0  # the media client's default playback speed
    agent = emulator.add_agent(ELEVENLABS_AGENT, enable_auth=True)
    agent.allow_overrides("agent.first_message", "agent.prompt.prompt", "tts.voice_id")
    agent.client_events = [*agent.client_events, "agent_response_correction"]
    names = {name for t in turns for name, _ in t.tool_calls if name != "end_call"}
    emulator.define_client_tools(
        agent,
        [
            {"type": "client", "name": n, "description": n, "expects_response": True}
            for n in sorted(names)
        ],
    )
    server = LoopbackServer(emulator.app())
    await server.start()
    values = {
        "realtime_provider": "elevenlabs",
        "elevenlabs_agent_id": ELEVENLABS_AGENT,
        "elevenlabs_api_key": ELEVENLABS_KEY,
        "elevenlabs_api_url": server.url,
        **settings,
    }
    try:
        async with bridge_env(None, **values) as env:
            yield env, ElevenLabsHarness(emulator)
    finally:
        await server.stop()


# -- the registry ----------------------------------------------------------------------------

EnvFactory = Callable[..., "AbstractAsyncContextManager[tuple[BridgeEnv, Harness]]"]


@asynccontextmanager
async def openai_env(
    turns: list[Turn], users: list[str], late_chunks: int, settings: dict[str, Any]
) -> AsyncIterator[tuple[BridgeEnv, Harness]]:
    model_kwargs = {"late_deltas": late_chunks, "delta_interval": 0.01 if late_chunks else 0.0}
    async with bridge_env(
        OpenAIHarness.script(turns, users), model_kwargs=model_kwargs, **settings
    ) as env:
        yield env, OpenAIHarness(env)


@asynccontextmanager
async def gemini_env(
    turns: list[Turn], users: list[str], late_chunks: int, settings: dict[str, Any]
) -> AsyncIterator[tuple[BridgeEnv, Harness]]:
    emulator = GeminiLiveEmulator(
        api_key="gemini-test-key",
        script_factory=GeminiHarness.script(turns, users),
        late_chunks=late_chunks,
        delta_interval=0.01 if late_chunks else 0.0,
    )
    server = LoopbackServer(emulator.app())
    await server.start()
    values = {
        "realtime_provider": "gemini",
        "gemini_api_key": "gemini-test-key",
        "gemini_live_url": server.ws_url + GEMINI_PATH,
        "gemini_api_base_url": server.url,
        **settings,
    }
    try:
        async with bridge_env(**values) as env:
            yield env, GeminiHarness(emulator)
    finally:
        await server.stop()


HARNESSES: dict[str, EnvFactory] = {
    "openai": openai_env,
    "nova_sonic": nova_sonic_env,
    "gemini": gemini_env,
    "elevenlabs": elevenlabs_env,
}
PROVIDERS = list(HARNESSES)


def provider_env(
    provider: str,
    turns: list[Turn] | None = None,
    users: list[str] | None = None,
    *,
    late_chunks: int = 0,
    **settings: Any,
) -> AbstractAsyncContextManager[tuple[BridgeEnv, Harness]]:
    """A server whose calls go to `provider`'s emulator, which says `turns` and hears
    `users`; `late_chunks` audio chunks of an interrupted turn still go out after it is cut.
    The OpenAI emulator always runs too (`env.model`: the fallback of failover tests)."""
    return HARNESSES[provider](list(turns or []), list(users or []), late_chunks, settings)
