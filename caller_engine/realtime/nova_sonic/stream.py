"""One `InvokeModelWithBidirectionalStream` call: a signed HTTP/2 request whose body and
response are event streams.

Each Nova event goes out as a `chunk` event whose JSON payload `{"bytes": <base64>}` carries
the event's JSON, wrapped in an envelope signed in the chain started by the request's
signature; the stream ends with a signed empty envelope and END_STREAM. The response's
`chunk` events are decoded back to Nova events; an `exception` message ends the stream with
its type and message.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from caller_engine.aws import sigv4
from caller_engine.aws.eventstream import Decoder, EventStreamError, encode_headers, encode_message
from caller_engine.aws.h2client import H2Connection, H2Error, H2Stream

EVENT_STREAM = "application/vnd.amazon.eventstream"
_CHUNK_HEADERS = encode_headers(
    {":message-type": "event", ":event-type": "chunk", ":content-type": "application/json"}
)
# Refusals a new stream cannot fix (credentials, permissions, model, request shape).
FATAL_ERRORS = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        "ExpiredTokenException",
        "ValidationException",
        "ResourceNotFoundException",
    }
)


class StreamRefused(Exception):
    """The request was answered with an HTTP error before any event."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(f"HTTP {status} {error_type}: {message}")
        self.status = status
        self.error_type = error_type
        self.message = message

    @property
    def fatal(self) -> bool:
        return self.error_type in FATAL_ERRORS or self.status in (400, 401, 403, 404)


class StreamFailed(Exception):
    """The stream ended abnormally: an exception message, a reset, a lost connection."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


@dataclass(frozen=True, slots=True)
class BedrockTarget:
    url: str  # https://bedrock-runtime.<region>.amazonaws.com or an http:// emulator
    region: str
    model_id: str
    credentials: sigv4.Credentials


class BedrockStream:
    def __init__(self, connection: H2Connection, stream: H2Stream, signer: sigv4.EventSigner):
        self._connection = connection
        self._stream = stream
        self._signer = signer
        self._ended = False

    @classmethod
    async def open(cls, target: BedrockTarget, *, connect_timeout: float = 10.0) -> BedrockStream:
        """Connect, send the signed request and wait for its status; raise StreamRefused or
        StreamFailed."""
        parts = urlsplit(target.url)
        host = parts.netloc
        path = (
            parts.path.rstrip("/")
            + "/model/"
            + quote(target.model_id, safe="")
            + "/invoke-with-bidirectional-stream"
        )
        try:
            connection = await H2Connection.open(target.url, connect_timeout=connect_timeout)
        except H2Error as exc:
            raise StreamFailed("ConnectionError", exc.reason) from exc
        headers, signature = sigv4.sign_request(
            method="POST",
            host=host,
            path=path,
            headers={"content-type": EVENT_STREAM, "accept": EVENT_STREAM},
            credentials=target.credentials,
            region=target.region,
            service="bedrock",
            when=datetime.now(UTC),
        )
        try:
            stream = connection.request("POST", path, headers.items())
            response = await stream.response()
            if response.status != 200:
                body = b""
                while chunk := await stream.read():
                    body += chunk
                raise StreamRefused(
                    response.status,
                    response.headers.get("x-amzn-errortype", "").split(":")[0] or "HTTPError",
                    _message(body),
                )
        except H2Error as exc:
            connection.abort()
            raise StreamFailed("ConnectionError", exc.reason) from exc
        except StreamRefused:
            connection.abort()
            raise
        signer = sigv4.EventSigner(target.credentials, target.region, "bedrock", signature)
        return cls(connection, stream, signer)

    @property
    def buffered(self) -> int:
        return self._stream.buffered

    @property
    def open_for_sending(self) -> bool:
        return not self._ended and not self._stream.closed

    def send_event(self, event: dict[str, Any]) -> None:
        self.send_raw(orjson.dumps(event))

    def send_raw(self, event_json: bytes) -> None:
        """One Nova event (its JSON) as a signed chunk; raises H2Error if the stream failed."""
        payload = b'{"bytes":"' + base64.b64encode(event_json) + b'"}'
        inner = encode_message(_CHUNK_HEADERS, payload)
        self._stream.send(self._signer.envelope(inner, time.time_ns() // 1_000_000))

    def end(self) -> None:
        """Close the signature chain and the request body."""
        if self._ended:
            return
        self._ended = True
        try:
            self._stream.send(self._signer.envelope(b"", time.time_ns() // 1_000_000))
            self._stream.end()
        except H2Error:
            return

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Nova output events until the service ends the stream; raises StreamFailed."""
        decoder = Decoder()
        while True:
            try:
                data = await self._stream.read()
            except H2Error as exc:
                raise StreamFailed("StreamError", exc.reason) from exc
            if not data:
                return
            try:
                messages = decoder.feed(data)
            except EventStreamError as exc:
                raise StreamFailed("SerializationException", str(exc)) from exc
            for message in messages:
                kind = message.headers.get(":message-type")
                if kind == "exception" or kind == "error":
                    error_type = str(
                        message.headers.get(":exception-type")
                        or message.headers.get(":error-code")
                        or "UnknownError"
                    )
                    raise StreamFailed(error_type, _message(message.payload))
                if message.headers.get(":event-type") != "chunk":
                    continue
                try:
                    raw = base64.b64decode(orjson.loads(message.payload)["bytes"])
                    yield orjson.loads(raw)
                except (orjson.JSONDecodeError, KeyError, TypeError, binascii.Error) as exc:
                    raise StreamFailed("SerializationException", "undecodable chunk") from exc

    async def close(self) -> None:
        """End the request (if not yet) and the connection."""
        self.end()
        await self._connection.close()

    def abort(self) -> None:
        self._stream.reset()
        self._connection.abort()


def _message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace")[:200]
    if isinstance(data, dict):
        return str(data.get("message") or data.get("Message") or "")
    return ""
