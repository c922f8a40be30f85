"""A small full-duplex HTTP/2 client on `h2` and asyncio, for long bidirectional streams.

One connection carries one or more streams whose request body and response body flow at
the same time (which HTTP/2 clients built for request-then-response do not do). Flow
control is honoured both ways: outgoing data waits for window, and incoming data is
acknowledged as the reader consumes it, so a slow reader slows the peer instead of
growing memory. `https` URLs negotiate `h2` by ALPN with certificate verification;
`http` URLs speak HTTP/2 in cleartext with prior knowledge.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

RECEIVE_WINDOW = 1 << 20  # per stream and for the connection


class H2Error(Exception):
    """The connection or a stream failed; `reason` is a short stable description."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StreamReset(H2Error):
    def __init__(self, code: int, *, remote: bool) -> None:
        name = _error_name(code)
        super().__init__(f"stream reset by {'peer' if remote else 'us'} ({name})")
        self.code = code
        self.remote = remote


class ConnectionClosed(H2Error):
    pass


def _error_name(code: int) -> str:
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return str(code)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]


class H2Stream:
    """One request/response exchange; the body flows both ways at once."""

    def __init__(self, connection: H2Connection, stream_id: int) -> None:
        self._connection = connection
        self.stream_id = stream_id
        self._response: asyncio.Future[Response] = connection.loop.create_future()
        self._chunks: deque[bytes] = deque()
        self._unacked: deque[int] = deque()  # flow-controlled length of each chunk
        self._readable = asyncio.Event()
        self._outgoing = bytearray()
        self._end_requested = False
        self._ended_local = False
        self._ended_remote = False
        self._error: H2Error | None = None
        self.trailers: dict[str, str] = {}

    # -- reading ---------------------------------------------------------------------------

    async def response(self) -> Response:
        return await asyncio.shield(self._response)

    async def read(self) -> bytes:
        """The next piece of the response body; b"" once the peer ended the stream.
        Raises the stream's error (a reset or a lost connection)."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._ended_remote:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = self._chunks.popleft()
        self._connection.acknowledge(self.stream_id, self._unacked.popleft())
        return data

    # -- writing ---------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes accepted by `send` that are not yet handed to the socket."""
        return len(self._outgoing)

    @property
    def closed(self) -> bool:
        return self._error is not None or (self._ended_local and self._ended_remote)

    def send(self, data: bytes) -> None:
        """Queue body bytes; they go out as the peer's flow-control window allows."""
        if self._error is not None:
            raise self._error
        if self._end_requested:
            raise H2Error("stream already ended")
        self._outgoing += data
        self._connection.flush(self)

    def end(self) -> None:
        """End the request body once everything queued has been sent."""
        if self._end_requested or self._error is not None:
            return
        self._end_requested = True
        self._connection.flush(self)

    def reset(self, code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        if self._error is None and not (self._ended_local and self._ended_remote):
            self._connection.reset(self, code)

    # -- called by the connection ----------------------------------------------------------

    def _fail(self, error: H2Error) -> None:
        if self._error is None:
            self._error = error
        self._outgoing.clear()
        if not self._response.done():
            self._response.set_exception(error)
            self._response.exception()  # retrieved: a caller may never ask
        self._readable.set()

    def _data(self, data: bytes, flow_length: int) -> None:
        self._chunks.append(data)
        self._unacked.append(flow_length)
        self._readable.set()


class H2Connection(asyncio.Protocol):
    def __init__(self, authority: str, scheme: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.authority = authority
        self.scheme = scheme
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self._h2 = h2.connection.H2Connection(config)
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, H2Stream] = {}
        self._ready: asyncio.Future[None] = self.loop.create_future()
        self._closed = asyncio.Event()
        self.goaway: str | None = None  # why the peer refused new streams
        self._error: H2Error | None = None

    @classmethod
    async def open(
        cls, url: str, *, ssl_context: ssl.SSLContext | None = None, connect_timeout: float = 10.0
    ) -> H2Connection:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise H2Error(f"not an http(s) URL: {url!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        context: ssl.SSLContext | None = None
        if tls:
            context = ssl_context or ssl.create_default_context()
            context.set_alpn_protocols(["h2"])
        loop = asyncio.get_running_loop()
        authority = parts.netloc.rpartition("@")[2]
        try:
            async with asyncio.timeout(connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: cls(authority, parts.scheme),
                    parts.hostname,
                    port,
                    ssl=context,
                    server_hostname=parts.hostname if tls else None,
                )
                await connection._ready
        except TimeoutError as exc:
            raise H2Error(f"connecting to {authority} timed out") from exc
        except OSError as exc:
            raise H2Error(f"cannot connect to {authority}: {exc.strerror or exc}") from exc
        return connection

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
            self._transport.abort()
            self._ready.set_exception(H2Error("the server did not negotiate HTTP/2 (ALPN h2)"))
            return
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(RECEIVE_WINDOW - 65535)
        self._write()
        self._ready.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._terminate(H2Error(f"HTTP/2 protocol error: {exc}"))
            return
        self._handle(events)
        self._write()

    def connection_lost(self, exc: Exception | None) -> None:
        reason = "connection lost" if exc is None else f"connection lost: {exc}"
        self._fail_all(ConnectionClosed(reason))
        self._transport = None
        self._closed.set()
        if not self._ready.done():
            self._ready.set_exception(ConnectionClosed(reason))

    # -- streams ---------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return self._transport is not None and self.goaway is None and self._error is None

    def request(self, method: str, path: str, headers: Iterable[tuple[str, str]]) -> H2Stream:
        """Open a stream with the request headers (the body follows with `send`)."""
        if self._error is not None:
            raise self._error
        if self.goaway is not None:
            raise H2Error(f"connection is going away ({self.goaway})")
        stream_id = self._h2.get_next_available_stream_id()
        all_headers = [
            (":method", method),
            (":scheme", self.scheme),
            (":authority", self.authority),
            (":path", path),
            *headers,
        ]
        self._h2.send_headers(stream_id, all_headers)
        stream = H2Stream(self, stream_id)
        self._streams[stream_id] = stream
        self._write()
        return stream

    def flush(self, stream: H2Stream) -> None:
        """Send what the stream has queued, as far as the flow-control windows allow."""
        if stream._error is not None or stream._ended_local:
            return
        outgoing = stream._outgoing
        h2conn = self._h2
        try:
            while outgoing:
                size = min(
                    len(outgoing),
                    h2conn.local_flow_control_window(stream.stream_id),
                    h2conn.max_outbound_frame_size,
                )
                if size <= 0:
                    break
                h2conn.send_data(stream.stream_id, bytes(outgoing[:size]))
                del outgoing[:size]
            if not outgoing and stream._end_requested:
                h2conn.end_stream(stream.stream_id)
                stream._ended_local = True
                self._forget_if_done(stream)
        except h2.exceptions.StreamClosedError:
            stream._fail(StreamReset(h2.errors.ErrorCodes.STREAM_CLOSED, remote=True))
        self._write()

    def acknowledge(self, stream_id: int, length: int) -> None:
        if length and self._transport is not None:
            try:
                self._h2.acknowledge_received_data(length, stream_id)
            except h2.exceptions.StreamClosedError:
                return
            self._write()

    def reset(self, stream: H2Stream, code: int) -> None:
        stream._fail(StreamReset(code, remote=False))
        self._streams.pop(stream.stream_id, None)
        try:
            self._h2.reset_stream(stream.stream_id, code)
        except h2.exceptions.StreamClosedError:
            return
        self._write()

    async def close(self) -> None:
        """GOAWAY and close the socket (streams still open fail)."""
        if self._transport is not None:
            self._h2.close_connection()
            self._write()
            self._transport.close()
            self._fail_all(ConnectionClosed("connection closed"))
        await self._closed.wait()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- internals -------------------------------------------------------------------------

    def _write(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)

    def _handle(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                stream = self._streams.get(event.stream_id)
                if stream is None:
                    self._h2.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                else:
                    stream._data(event.data, event.flow_controlled_length)
            elif isinstance(event, h2.events.WindowUpdated):
                targets = (
                    list(self._streams.values())
                    if event.stream_id == 0
                    else [s for s in (self._streams.get(event.stream_id),) if s]
                )
                for stream in targets:
                    self.flush(stream)
            elif isinstance(event, h2.events.ResponseReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None and not stream._response.done():
                    headers = {str(k): str(v) for k, v in event.headers}
                    status = int(headers.pop(":status"))
                    stream._response.set_result(Response(status, headers))
            elif isinstance(event, h2.events.TrailersReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.trailers = {str(k): str(v) for k, v in event.headers}
            elif isinstance(event, h2.events.StreamEnded):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._ended_remote = True
                    stream._readable.set()
                    self._forget_if_done(stream)
            elif isinstance(event, h2.events.StreamReset):
                stream = self._streams.pop(event.stream_id, None)
                if stream is not None:
                    stream._fail(StreamReset(event.error_code, remote=event.remote_reset))
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                for stream in list(self._streams.values()):
                    self.flush(stream)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._goaway(int(event.error_code or 0), event.last_stream_id)

    def _goaway(self, code: int, last_stream_id: int | None) -> None:
        self.goaway = _error_name(code)
        last = last_stream_id if last_stream_id is not None else 0
        # Streams the peer never processed fail now; the others may still finish.
        for stream_id, stream in list(self._streams.items()):
            if stream_id > last or code != h2.errors.ErrorCodes.NO_ERROR:
                self._streams.pop(stream_id)
                stream._fail(ConnectionClosed(f"server sent GOAWAY ({self.goaway})"))
        if code != h2.errors.ErrorCodes.NO_ERROR and self._transport is not None:
            self._transport.close()

    def _forget_if_done(self, stream: H2Stream) -> None:
        if stream._ended_local and stream._ended_remote:
            self._streams.pop(stream.stream_id, None)

    def _fail_all(self, error: H2Error) -> None:
        streams = list(self._streams.values())
        self._streams.clear()
        for stream in streams:
            stream._fail(error)

    def _terminate(self, error: H2Error) -> None:
        self._error = error
        self._fail_all(error)
        if self._transport is not None:
            self._write()
            self._transport.close()
