"""Failures of outgoing connections, told as one plain sentence.

Messages that leave the process (API answers, call results, delivery states) say what
happened, never how the code is built: no exception class names, no reprs. The exception
itself goes to the log, next to the call's ids.
"""

from __future__ import annotations

import socket
import ssl

import aiohttp


def describe(exc: BaseException) -> str:
    """What went wrong with a connection or request, for people."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientConnectorDNSError | socket.gaierror):
        host = getattr(exc, "host", None)
        return f"the host name {host} could not be resolved" if host else "name resolution failed"
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return "the TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"could not connect to {exc.host}:{exc.port}"
    if isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError):
        return "the connection was closed by the other side"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer was cut off"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status}"
    if isinstance(exc, aiohttp.InvalidURL):
        return "the URL is not valid"
    if isinstance(exc, ConnectionRefusedError):
        return "the connection was refused"
    status = getattr(exc, "status_code", None)  # HTTP client errors of vendor SDKs
    if isinstance(status, int):
        return f"HTTP {status}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    if isinstance(exc, aiohttp.ClientError | OSError):
        return "a network error"
    return "an unexpected error"
