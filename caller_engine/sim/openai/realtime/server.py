"""The emulated Realtime endpoint: WebSocket on any path ending in `/realtime`.

Handshake behaviour follows the live service: the upgrade is accepted and problems are
reported in-band, then the socket is closed: a bad or missing key gets an
`invalid_api_key` error and close 3000 `invalid_request_error.invalid_api_key`; an
`OpenAI-Beta` header gets `beta_api_shape_disabled` and close 4000; a missing `?model=`
gets `missing_model` and close 4000. `reject_connections` answers the next N upgrades
with HTTP 503 instead (a transient outage), and `fatal_on_connect` makes every
connection fail like the named account problem (`invalid_api_key`,
`insufficient_quota`), which clients must not retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from caller_engine.sim.openai.realtime.script import RealtimeScript
from caller_engine.sim.openai.realtime.session import EmulatedRealtimeSession

InputAudioHook = Callable[[EmulatedRealtimeSession, bytes, float], None]
EventHook = Callable[[EmulatedRealtimeSession, dict[str, Any], float], None]
DEFAULT_VAD_THRESHOLD = 400.0  # mean |amplitude|: speech is well above, line noise below


class RealtimeEmulator:
    """Serves emulated Realtime sessions; one `EmulatedRealtimeSession` per connection.

    `script_factory` gives each connection its script. Output audio goes out in
    `chunk_ms` deltas with `delta_interval` seconds between them (0: as fast as possible,
    yielding to the loop). `vad_energy_threshold` is the mean absolute amplitude a 20 ms
    frame must exceed to count as speech at turn_detection.threshold 0.5. `late_deltas`
    audio deltas still go out after an interruption before the cancelled response.done.
    With `keep_audio_events=False`, append and audio delta events are not kept in
    `received`/`sent` (their audio still is, in `input_audio`/`output_audio`): for long
    load runs.

    Hooks for measurements (each `callback(session, data, loop_time)`): `on_input_audio`
    gets each appended chunk of caller audio; `on_server_event` every event sent, with the
    time just before it went out; `on_client_event` every client event other than audio
    appends, with its arrival time.
    """

    def __init__(
        self,
        *,
        api_key: str = "sk-test",
        auth_header: str = "Authorization",
        script_factory: Callable[[], RealtimeScript] | None = None,
        chunk_ms: int = 100,
        delta_interval: float = 0.0,
        vad_energy_threshold: float = DEFAULT_VAD_THRESHOLD,
        late_deltas: int = 0,
        keep_audio_events: bool = True,
    ) -> None:
        self.api_key = api_key
        self.auth_header = auth_header
        self.script_factory = script_factory
        self.chunk_ms = chunk_ms
        self.delta_interval = delta_interval
        self.vad_energy_threshold = vad_energy_threshold
        self.late_deltas = late_deltas
        self.keep_audio_events = keep_audio_events
        self.sessions: list[EmulatedRealtimeSession] = []
        self.connection_attempts = 0
        self.reject_connections: int | None = None
        self.fatal_on_connect: str | None = None
        self.on_input_audio: InputAudioHook | None = None
        self.on_server_event: EventHook | None = None
        self.on_client_event: EventHook | None = None
        self._session_added = asyncio.Event()

    @property
    def violations(self) -> list[str]:
        return [violation for session in self.sessions for violation in session.violations]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._handle)
        app.on_shutdown.append(self._close_all)
        return app

    async def _close_all(self, _app: web.Application) -> None:
        """Server shutdown: close every open connection (1001 going away)."""
        open_sessions = [session for session in self.sessions if not session.closed.is_set()]
        await asyncio.gather(*(session.drop(1001) for session in open_sessions))

    async def wait_for_session(
        self, index: int = 0, within: float = 5.0
    ) -> EmulatedRealtimeSession:
        """The `index`-th accepted connection, waiting for it if needed."""
        async with asyncio.timeout(within):
            while len(self.sessions) <= index:
                signal = self._session_added
                await signal.wait()
        return self.sessions[index]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not request.path.rstrip("/").endswith("/realtime"):
            return _error_response(404, "not_found", f"Invalid URL (GET {request.path})")
        self.connection_attempts += 1
        if self.reject_connections:
            self.reject_connections -= 1
            return _error_response(503, "server_error", "The server is overloaded.")
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        session = EmulatedRealtimeSession(self, ws, request)
        self.sessions.append(session)
        self._session_added.set()
        self._session_added = asyncio.Event()
        await session.run()
        return ws


def _error_response(status: int, error_type: str, message: str) -> web.Response:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": None}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
