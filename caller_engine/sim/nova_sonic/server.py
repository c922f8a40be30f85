"""The emulated Bedrock runtime endpoint for `InvokeModelWithBidirectionalStream`.

HTTP/2 in cleartext with prior knowledge, on `h2` and asyncio. A request is checked like the
service checks it (method, path, SigV4, model id) and answered at once with status 200 and
an event stream, or refused with the service's JSON error. Each DATA frame is acknowledged
as it is read; output waits for the client's flow-control window. Each client message must
be a signed envelope continuing the signature chain, wrapping a `chunk` event whose JSON
payload `{"bytes": <base64>}` holds one Nova Sonic event (at most 1,000,000 bytes); the
chain closes with a signed empty envelope before END_STREAM. Faults refuse or break
streams on demand: `refuse_next` (pre-stream HTTP errors), `fail_stream` (an in-stream
exception), `reset_stream`, `goaway`, the stream time limit and the idle timeout.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import orjson

from caller_engine.aws import sigv4
from caller_engine.aws.eventstream import Decoder, EventStreamError, encode_headers, encode_message
from caller_engine.sim.nova_sonic.auth import TEST_CREDENTIALS, EventChain, Refusal, verify_request
from caller_engine.sim.nova_sonic.session import EmulatedNovaSession, SessionFailure
from caller_engine.sim.nova_sonic.validation import MAX_EVENT_BYTES
from caller_engine.sim.openai.realtime.script import RealtimeScript

MODELS = ("amazon.nova-2-sonic-v1:0", "amazon.nova-sonic-v1:0", "amazon.nova-2-5-sonic")
PATH_PREFIX = "/model/"
PATH_SUFFIX = "/invoke-with-bidirectional-stream"
EVENT_TYPE = "application/vnd.amazon.eventstream"
_CHUNK_HEADERS = encode_headers(
    {":message-type": "event", ":event-type": "chunk", ":content-type": "application/json"}
)


class NovaSonicEmulator:
    """Serves emulated streams; one `EmulatedNovaSession` per accepted stream.

    `stream_limit_s` ends a stream with `modelTimeoutException` (the service's limit is
    8 minutes); `idle_timeout_s` ends one that received no audio for that long with the
    service's error 531. Output audio goes out in `chunk_ms` pieces at `speedup` times
    real time (0: as fast as the connection takes it); after a barge-in `late_chunks` more
    chunks of the cut audio still go out. `endpointing_ms` overrides the
    pause that ends a caller's turn (otherwise 1.5 / 1.75 / 2 s by sensitivity).
    `playback_speed` is how fast the caller's line plays a reply (a simulated phone may run
    faster than real time): caller speech before the reply has played is a barge-in.
    """

    def __init__(
        self,
        *,
        credentials: sigv4.Credentials = TEST_CREDENTIALS,
        region: str = "us-east-1",
        script_factory: Callable[[], RealtimeScript] | None = None,
        stream_limit_s: float = 480.0,
        idle_timeout_s: float = 175.0,
        chunk_ms: int = 100,
        speedup: float = 4.0,
        endpointing_ms: int | None = None,
        vad_energy_threshold: float = 400.0,
        late_chunks: int = 0,
        playback_speed: float = 1.0,
    ) -> None:
        self.credentials = credentials
        self.region = region
        self.script_factory = script_factory
        self.stream_limit_s = stream_limit_s
        self.idle_timeout_s = idle_timeout_s
        self.chunk_ms = chunk_ms
        self.speedup = speedup
        self.endpointing_ms = endpointing_ms
        self.vad_energy_threshold = vad_energy_threshold
        self.late_chunks = late_chunks
        self.playback_speed = playback_speed
        self.sessions: list[EmulatedNovaSession] = []
        self.streams: list[_Stream] = []
        self.refusals: list[Refusal] = []  # pre-stream refusals sent
        self.stream_errors: list[tuple[str, str]] = []  # in-stream exceptions sent
        self.violations: list[str] = []  # client mistakes there was no way to answer
        self.refuse_next: list[Refusal] = []
        self.requests = 0
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._session_added = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.url

    async def stop(self) -> None:
        for connection in list(self._connections):
            connection.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def wait_for_session(self, count: int = 1, within: float = 5.0) -> EmulatedNovaSession:
        async with asyncio.timeout(within):
            while len(self.sessions) < count:
                self._session_added.clear()
                await self._session_added.wait()
        return self.sessions[count - 1]

    # -- faults ----------------------------------------------------------------------------

    def stream_of(self, session: EmulatedNovaSession) -> _Stream:
        return next(stream for stream in self.streams if stream.session is session)

    def fail_stream(self, session: EmulatedNovaSession, exception_type: str, message: str) -> None:
        self.stream_of(session).fail(exception_type, message)

    def reset_stream(
        self, session: EmulatedNovaSession, code: int = h2.errors.ErrorCodes.INTERNAL_ERROR
    ) -> None:
        self.stream_of(session).reset(code)

    def drop(self, session: EmulatedNovaSession) -> None:
        """Close the stream's connection unannounced (no GOAWAY, no reset)."""
        self.stream_of(session).connection.abort()

    def goaway(self, session: EmulatedNovaSession, code: int = 0) -> None:
        self.stream_of(session).connection.goaway(code)


class _Stream:
    def __init__(self, connection: _Connection, stream_id: int, seed: str, model_id: str) -> None:
        emulator = connection.emulator
        self.connection = connection
        self.stream_id = stream_id
        self.model_id = model_id
        self.decoder = Decoder()
        self.chain = EventChain(emulator.credentials, emulator.region, seed)
        self.outgoing = bytearray()
        self.end_after_flush = False
        self.local_ended = False  # END_STREAM sent: the client may still close its chain
        self.closed = False
        self.final_frame = False  # the signed empty envelope arrived
        self.client_ended = False
        self.session = EmulatedNovaSession(emulator, model_id, self.send_event, self.fail)
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        self._timer = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        emulator = self.connection.emulator
        loop = asyncio.get_running_loop()
        while not self.closed:
            now = loop.time()
            if now - self.started >= emulator.stream_limit_s:
                self.fail(
                    "modelTimeoutException",
                    f"Stream duration exceeded the maximum of {emulator.stream_limit_s:g} seconds",
                )
                return
            last_audio = self.session.audio_last_at or self.started
            if now - last_audio >= emulator.idle_timeout_s:
                self.fail(
                    "validationException",
                    "Timed out waiting for input events. InternalErrorCode=531",
                )
                return
            await asyncio.sleep(
                max(
                    0.01,
                    min(
                        self.started + emulator.stream_limit_s,
                        last_audio + emulator.idle_timeout_s,
                    )
                    - now,
                )
            )

    def received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.final_frame:
            self.fail("validationException", "Data received after the final signed frame")
            return
        try:
            envelopes = self.decoder.feed(data)
        except EventStreamError as exc:
            self.fail("validationException", f"Malformed event stream frame: {exc}")
            return
        for envelope in envelopes:
            opened = self.chain.open(envelope)
            if isinstance(opened, str):
                self.fail("validationException", opened)
                return
            if not opened:
                self.final_frame = True
                continue
            if self.final_frame:
                self.fail("validationException", "Data received after the final signed frame")
                return
            if self.end_after_flush:
                self.connection.emulator.violations.append(
                    f"event after the stream ended: {opened[:60]!r}"
                )
                continue
            try:
                self._event(opened)
            except SessionFailure as exc:
                self.fail(exc.exception_type, exc.message)
                return
            if self.closed:
                return

    def _event(self, wrapped: bytes) -> None:
        try:
            (inner,) = Decoder().feed(wrapped)
        except (EventStreamError, ValueError) as exc:
            raise SessionFailure("validationException", "Signed frame must wrap one event") from exc
        headers = inner.headers
        if headers.get(":message-type") != "event" or headers.get(":event-type") != "chunk":
            raise SessionFailure(
                "validationException", "Only chunk events are accepted on this stream"
            )
        try:
            payload = orjson.loads(inner.payload)
            raw = base64.b64decode(payload["bytes"], validate=True)
        except (orjson.JSONDecodeError, KeyError, TypeError, binascii.Error) as exc:
            raise SessionFailure(
                "validationException", 'A chunk payload must be {"bytes": "<base64>"}'
            ) from exc
        if len(raw) > MAX_EVENT_BYTES:
            raise SessionFailure("validationException", "Chunk bytes exceed 1000000 bytes")
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise SessionFailure("validationException", "Invalid input request") from exc
        self.session.handle(event)
        if self.session.state == "ended":
            self.end()

    def client_end(self) -> None:
        self.client_ended = True
        if not self.final_frame:
            if self.end_after_flush:
                self.connection.emulator.violations.append(
                    "the request ended without its final signed frame"
                )
            else:
                self.fail("validationException", "The stream ended without its final signed frame")
        self.end()
        self.connection.forget_if_done(self)

    # -- output ----------------------------------------------------------------------------

    def send_event(self, event: dict[str, Any]) -> None:
        if self.closed or self.end_after_flush:
            return
        payload = b'{"bytes":"' + base64.b64encode(orjson.dumps(event)) + b'"}'
        self.outgoing += encode_message(_CHUNK_HEADERS, payload)
        self.connection.flush(self)

    def fail(self, exception_type: str, message: str) -> None:
        if self.closed or self.end_after_flush:
            return
        self.connection.emulator.stream_errors.append((exception_type, message))
        headers = {
            ":message-type": "exception",
            ":exception-type": exception_type,
            ":content-type": "application/json",
        }
        self.outgoing += encode_message(headers, orjson.dumps({"message": message}))
        self.end()

    def end(self) -> None:
        self.session.stop()
        self.end_after_flush = True
        self.connection.flush(self)

    def reset(self, code: int) -> None:
        self.connection.reset(self, code)

    def close(self) -> None:
        self.closed = True
        self.session.stop()
        self.session.closed.set()
        self._timer.cancel()


class _Connection(asyncio.Protocol):
    def __init__(self, emulator: NovaSonicEmulator) -> None:
        self.emulator = emulator
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.emulator._connections.add(self)
        self.h2.initiate_connection()
        self.write()

    def connection_lost(self, exc: Exception | None) -> None:
        self.emulator._connections.discard(self)
        for stream in self.streams.values():
            stream.close()
        self.streams.clear()
        self.transport = None

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def write(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.write()
            self.abort()
            return
        for event in events:
            self._event(event)
        self.write()

    def _event(self, event: Any) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event.stream_id, {str(k): str(v) for k, v in event.headers})
        elif isinstance(event, h2.events.DataReceived):
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.received(event.data)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.client_end()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                stream.close()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            for stream in list(self.streams.values()):
                self.flush(stream)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.abort()

    def _request(self, stream_id: int, headers: dict[str, str]) -> None:
        emulator = self.emulator
        emulator.requests += 1
        method, path = headers.get(":method", ""), headers.get(":path", "")
        if method != "POST" or not (path.startswith(PATH_PREFIX) and path.endswith(PATH_SUFFIX)):
            self._refuse(stream_id, Refusal(404, "UnknownOperationException", "Not found"))
            return
        model_id = unquote(path[len(PATH_PREFIX) : -len(PATH_SUFFIX)])
        headers["host"] = headers.get(":authority", "")
        seed, refusal = verify_request(
            headers,
            method,
            path,
            credentials=emulator.credentials,
            region=emulator.region,
            now=datetime.now(UTC),
        )
        if refusal is None and emulator.refuse_next:
            refusal = emulator.refuse_next.pop(0)
        if refusal is None and model_id not in MODELS:
            refusal = Refusal(
                404, "ResourceNotFoundException", "The requested model was not found."
            )
        if refusal is None and headers.get("content-type") != EVENT_TYPE:
            refusal = Refusal(400, "ValidationException", f"content-type must be {EVENT_TYPE}")
        if refusal is not None:
            self._refuse(stream_id, refusal)
            return
        self.h2.send_headers(
            stream_id,
            [
                (":status", "200"),
                ("content-type", EVENT_TYPE),
                ("x-amzn-requestid", str(uuid.uuid4())),
            ],
        )
        stream = _Stream(self, stream_id, seed, model_id)
        self.streams[stream_id] = stream
        emulator.streams.append(stream)
        emulator.sessions.append(stream.session)
        emulator._session_added.set()

    def _refuse(self, stream_id: int, refusal: Refusal) -> None:
        self.emulator.refusals.append(refusal)
        body = orjson.dumps({"message": refusal.message})
        self.h2.send_headers(
            stream_id,
            [
                (":status", str(refusal.status)),
                ("content-type", "application/json"),
                ("x-amzn-errortype", refusal.error_type),
                ("x-amzn-requestid", str(uuid.uuid4())),
                ("content-length", str(len(body))),
            ],
        )
        self.h2.send_data(stream_id, body, end_stream=True)

    def flush(self, stream: _Stream) -> None:
        if stream.closed or stream.local_ended or self.transport is None:
            return
        outgoing = stream.outgoing
        try:
            while outgoing:
                size = min(
                    len(outgoing),
                    self.h2.local_flow_control_window(stream.stream_id),
                    self.h2.max_outbound_frame_size,
                )
                if size <= 0:
                    break
                self.h2.send_data(stream.stream_id, bytes(outgoing[:size]))
                del outgoing[:size]
            if not outgoing and stream.end_after_flush and not stream.local_ended:
                self.h2.end_stream(stream.stream_id)
                stream.local_ended = True
                stream.session.stop()
                self.forget_if_done(stream)
        except h2.exceptions.ProtocolError:  # the stream or the whole connection is closed
            stream.close()
            self.streams.pop(stream.stream_id, None)
        self.write()

    def forget_if_done(self, stream: _Stream) -> None:
        if stream.local_ended and stream.client_ended:
            stream.close()
            self.streams.pop(stream.stream_id, None)

    def reset(self, stream: _Stream, code: int) -> None:
        stream.close()
        self.streams.pop(stream.stream_id, None)
        try:
            self.h2.reset_stream(stream.stream_id, code)
        except h2.exceptions.StreamClosedError:
            return
        self.write()

    def goaway(self, code: int) -> None:
        last = max(self.streams, default=0)
        self.h2.close_connection(error_code=code, last_stream_id=last)
        self.write()
        if code:
            for stream in self.streams.values():
                stream.close()
            self.streams.clear()
            if self.transport is not None:
                self.transport.close()
