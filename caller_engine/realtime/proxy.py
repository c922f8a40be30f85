"""The proxy a model connection goes through, looked up once per host instead of per call.

`websockets.connect` reads the proxy settings from the environment on every connection
(about 70 µs of CPU per call with a few dozen variables set). They do not change while the
server runs, so each scheme, host and port is looked up once, by websockets' own rules
(`no_proxy` first, then a ws/wss, socks, https or http proxy), and the answer is passed to
`connect(proxy=...)`: None connects directly.
"""

from __future__ import annotations

import functools

from websockets.proxy import get_proxy
from websockets.uri import parse_uri


def model_proxy(url: str) -> str | None:
    """The proxy URL for a WebSocket connection to `url`, or None for a direct one."""
    uri = parse_uri(url)
    return _lookup(uri.secure, uri.host, uri.port)


@functools.lru_cache(maxsize=64)
def _lookup(secure: bool, host: str, port: int) -> str | None:
    return get_proxy(parse_uri(f"{'wss' if secure else 'ws'}://{host}:{port}/"))


def forget_proxies() -> None:
    """Look the environment up again at the next connection (for tests)."""
    _lookup.cache_clear()
