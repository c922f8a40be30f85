"""Open an ElevenLabs conversation: URL (signed when an API key is set), the initiation message,
and the service's metadata with the agent's audio formats.

The conversation is set up before `connect` returns, so a refusal (overrides the agent does not
allow, a missing dynamic variable, quota) is a `ConnectError` with the call's error code, and
an agent whose formats we cannot carry is refused here: `ulaw_8000` passes through untouched,
`pcm_*` goes through the shared conversion path, anything else ends the call as
`model_refused` naming the setting to change.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from caller_engine.realtime.base import ConnectError, SessionConfig
from caller_engine.realtime.elevenlabs import urls, wire
from caller_engine.realtime.elevenlabs.session import ElevenLabsSession, closed_event
from caller_engine.realtime.proxy import model_proxy

MAX_FRAME = 16 * 1024 * 1024  # a burst can carry seconds of audio


def overrides_for(config: SessionConfig) -> wire.Overrides:
    """Only what the call itself sets: the agent keeps its own prompt, first message and voice
    otherwise (each override must be allowed on the agent)."""
    return wire.Overrides(
        prompt=config.call_instructions or None,
        first_message=config.greeting,
        voice_id=config.voice or None,
        dynamic_variables=wire.dynamic_variables(config.metadata),
    )


class ElevenLabsConnector:
    def __init__(
        self,
        api_url: str,
        agent_id: str,
        api_key: str | None = None,
        *,
        slice_bytes: int = 1920,
        open_timeout: float = 5.0,
    ) -> None:
        self.api_url = api_url
        self.agent_id = agent_id
        self.api_key = api_key or None
        self.slice_bytes = slice_bytes
        self.open_timeout = open_timeout

    async def _url(self) -> str:
        if self.api_key is None:
            return urls.public_url(self.api_url, self.agent_id)
        async with aiohttp.ClientSession() as http:
            try:
                return await urls.signed_url(
                    http, self.api_url, self.agent_id, self.api_key, wait=self.open_timeout
                )
            except urls.SignedUrlError as exc:
                raise ConnectError(str(exc), fatal=exc.fatal) from exc

    async def connect(self, config: SessionConfig) -> ElevenLabsSession:
        url = await self._url()
        try:
            ws = await connect(
                url,
                proxy=model_proxy(url),
                open_timeout=self.open_timeout,
                close_timeout=1.0,
                compression=None,
                max_size=MAX_FRAME,
                max_queue=16,
                ping_interval=20,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise ConnectError(
                f"ElevenLabs refused the connection: HTTP {status}", fatal=status in (401, 403, 404)
            ) from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ConnectError(f"ElevenLabs unreachable: {exc!r}", fatal=False) from exc
        overrides = overrides_for(config)
        try:
            async with asyncio.timeout(self.open_timeout):
                await ws.send(orjson.dumps(wire.initiation(overrides)).decode())
                metadata = await _metadata(ws, overrides.override_paths)
        except TimeoutError:
            await ws.close()
            raise ConnectError("ElevenLabs did not start the conversation", fatal=False) from None
        except ConnectError:
            await ws.close()
            raise
        formats = _formats(metadata)
        if isinstance(formats, str):
            await ws.close()
            raise ConnectError(formats, fatal=True, code="model_refused")
        return ElevenLabsSession(
            ws,
            metadata,
            formats[0],
            formats[1],
            override_paths=overrides.override_paths,
            slice_bytes=self.slice_bytes,
        )


async def _metadata(ws: ClientConnection, override_paths: list[str]) -> wire.Metadata:
    """Read until `conversation_initiation_metadata` (answering pings); a close before it
    becomes the ConnectError its close code means."""
    error: wire.ServerError | None = None
    try:
        async for raw in ws:
            with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                msg = wire.parse(raw)
                if type(msg) is wire.Metadata:
                    return msg
                if type(msg) is wire.Ping:
                    await ws.send(orjson.dumps(wire.pong(msg.event_id)).decode())
                elif type(msg) is wire.ServerError:
                    error = msg
        close = ws.protocol.close_rcvd
    except ConnectionClosed as exc:
        close = exc.rcvd
    closed = closed_event(close, error, override_paths)
    if closed.fatal:
        raise ConnectError(closed.reason, fatal=True, code=closed.code)
    raise ConnectError(
        closed.reason.replace("conversation closed", "closed during setup"), fatal=False
    )


def _formats(metadata: wire.Metadata) -> tuple[wire.AudioFormat, wire.AudioFormat] | str:
    out = wire.audio_format(metadata.output_format)
    inp = wire.audio_format(metadata.input_format)
    if out is None or inp is None:
        bad = metadata.output_format if out is None else metadata.input_format
        return (
            f"the ElevenLabs agent uses audio format {bad!r}, which a phone call cannot carry: "
            "set the agent's input and output formats to μ-law 8000 Hz (ulaw_8000)"
        )
    return inp, out
