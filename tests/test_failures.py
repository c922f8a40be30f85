"""Failure messages are plain sentences: no exception class names, no reprs."""

from __future__ import annotations

import re
import socket
import ssl

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from caller_engine.failures import describe
from caller_engine.results.sender import post_result

REPR = re.compile(r"\w+\(|\w+=|<\w+|Error\b|Exception\b")


def _key(host: str = "api.twilio.com", port: int = 443) -> ConnectionKey:
    return ConnectionKey(host, port, True, True, None, None, None)


CASES: list[tuple[BaseException, str]] = [
    (TimeoutError(), "no answer in time"),
    (
        aiohttp.ClientConnectorError(_key(), ConnectionRefusedError(111, "Connect call failed")),
        "could not connect to api.twilio.com:443",
    ),
    (
        aiohttp.ClientConnectorDNSError(_key("nowhere.invalid"), socket.gaierror(-2, "unknown")),
        "the host name nowhere.invalid could not be resolved",
    ),
    (
        aiohttp.ClientConnectorSSLError(_key(), ssl.SSLError(1, "bad handshake")),
        "the TLS handshake failed",
    ),
    (aiohttp.ServerDisconnectedError(), "the connection was closed by the other side"),
    (aiohttp.ClientPayloadError("cut"), "the answer was cut off"),
    (ConnectionRefusedError(111, "Connection refused"), "the connection was refused"),
    (OSError(28, "No space left on device"), "no space left on device"),
    (aiohttp.ClientError("x"), "a network error"),
    (RuntimeError("ConnectionKey(host='x')"), "an unexpected error"),
]


@pytest.mark.parametrize(("exc", "sentence"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_failures_are_told_as_plain_sentences(exc: BaseException, sentence: str) -> None:
    assert describe(exc) == sentence
    assert not REPR.search(sentence)


async def test_a_failed_result_delivery_keeps_a_plain_sentence() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with aiohttp.ClientSession() as session:
        attempt = await post_result(
            session, f"http://127.0.0.1:{port}/r", "cb-1", b"{}", secret=None, request_timeout=2
        )
    assert attempt.status is None
    assert attempt.error == f"could not connect to 127.0.0.1:{port}"
