"""Twilio's side of one bidirectional Media Stream (`<Connect><Stream>`), over a real WebSocket.

The client opens the signed upgrade, sends `connected` and `start`, then behaves like the
phone line: the callee's audio goes out as 20 ms μ-law `media` frames on a drift-free clock
(by default the line carries silence whenever the callee says nothing, as a phone line
does), and the application's audio is played at 8000 bytes/s with Twilio's mark and clear
semantics (see `playback.Playback`). At hang-up it sends `stop` and closes.

`playback_speed` runs the line and the playback clocks faster than real time for tests.
Durations given in ms (`send_silence`, `wait_for_quiet`) are stream time: at speed 4,
1000 ms of audio take 250 ms of real time. Timeouts are real seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from loguru import logger

from caller_engine.sim.playback import MarkEcho, Playback
from caller_engine.sim.twilio import media_frames as frames
from caller_engine.sim.twilio.media_frames import (
    FRAME_BYTES,
    FRAME_MS,
    MULAW_SILENCE,
    OutboundClear,
    OutboundMark,
    OutboundMedia,
    ProtocolViolation,
    parse_outbound,
)
from caller_engine.sim.twilio.rest import new_sid
from caller_engine.telephony.signature import sign_twilio_request

__all__ = ["MarkEcho", "TwilioMediaClient"]

MediaHook = Callable[[float, bytes], None]
ClearHook = Callable[[float], None]
MarkHook = Callable[[MarkEcho], None]

_POLL = 0.01
_SILENT_FRAME = bytes([MULAW_SILENCE]) * FRAME_BYTES
USER_AGENT = "Twilio.TmeWs/1.0"


def _mark_frame(seq: int, *, stream_sid: str, name: str) -> str:
    return frames.mark(seq, stream_sid, name)


class TwilioMediaClient:
    def __init__(
        self,
        ws_url: str,
        *,
        auth_token: str | None,
        call_sid: str,
        account_sid: str,
        custom_parameters: Mapping[str, str],
        stream_sid: str | None = None,
        playback_speed: float = 1.0,
        session: aiohttp.ClientSession | None = None,
        signature_url: str | None = None,
        continuous: bool = True,
    ) -> None:
        """`ws_url` is where to connect; `signature_url` the public URL Twilio signs (the
        Stream url of the TwiML, which a proxy may map to `ws_url`); it defaults to `ws_url`.
        With `continuous`, silence frames fill the line whenever nothing is being said."""
        if playback_speed <= 0:
            raise ValueError("playback_speed must be positive")
        self.ws_url = ws_url
        self.signature_url = signature_url or ws_url
        self.auth_token = auth_token
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.custom_parameters = dict(custom_parameters)
        self.stream_sid = stream_sid or new_sid("MZ")
        self.playback_speed = playback_speed
        self.continuous = continuous
        self._session = session
        self._own_session = session is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seq = 0
        self._chunk = 0
        self._send_lock = asyncio.Lock()
        self._playback: Playback | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._player_wake = asyncio.Event()
        self._changed = asyncio.Event()
        # the callee's side of the line
        self._outbox = bytearray()
        self._outbox_ready = asyncio.Event()
        self._queued_total = 0
        self._taken_total = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._slot = 0
        self._closing = False
        self._media_hooks: list[MediaHook] = []
        self._clear_hooks: list[ClearHook] = []
        self._mark_hooks: list[MarkHook] = []
        # observations
        self.received_audio = bytearray()
        self.sent_audio = bytearray()
        self.marks: list[MarkEcho] = []
        self.mark_requests: list[str] = []
        self.clears: list[float] = []
        self.violations: list[str] = []
        self.first_audio_at: float | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.stop_sent_at: float | None = None
        self.close_code: int | None = None
        self.closed_by_server = False
        self.closed = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------

    async def connect(self) -> None:
        """Signed upgrade, then `connected` and `start`. Raises aiohttp errors on refusal."""
        self._loop = asyncio.get_running_loop()
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"User-Agent": USER_AGENT}
        if self.auth_token:
            headers["X-Twilio-Signature"] = sign_twilio_request(
                self.auth_token, self.signature_url, {}
            )
        try:
            self._ws = await self._session.ws_connect(
                self.ws_url, headers=headers, max_msg_size=4 * 1024 * 1024
            )
        except BaseException:
            await self._close_session()
            raise
        await self._ws.send_str(frames.connected())
        await self._send(
            lambda seq: frames.start(
                seq,
                self.stream_sid,
                account_sid=self.account_sid,
                call_sid=self.call_sid,
                custom_parameters=self.custom_parameters,
            )
        )
        self.started_at = self._loop.time()
        self._playback = Playback(self.started_at, speed=self.playback_speed)
        self._tasks = [
            asyncio.create_task(self._read(), name=f"twilio-media-read-{self.stream_sid}"),
            asyncio.create_task(self._play(), name=f"twilio-media-play-{self.stream_sid}"),
            asyncio.create_task(self._line(), name=f"twilio-media-line-{self.stream_sid}"),
        ]

    async def stop(self) -> None:
        """Hang-up: the `stop` event, then close the socket."""
        if self._ws is None or self.closed.is_set() or self._closing:
            return
        self._closing = True
        await self._cancel_line()
        with contextlib.suppress(ConnectionError):
            await self._send(
                lambda seq: frames.stop(
                    seq, self.stream_sid, account_sid=self.account_sid, call_sid=self.call_sid
                )
            )
            self.stop_sent_at = self._loop_().time()
        await self.close()

    async def close(self) -> None:
        """Close the socket (without `stop`: a dropped connection) and wait for the end."""
        if self._ws is None:
            await self._close_session()
            return
        self._closing = True
        await self._cancel_line()
        with contextlib.suppress(ConnectionError):
            await self._ws.close()
        if self.close_code is None:
            self.close_code = self._ws.close_code if self._ws.close_code is not None else 1006
        if self._tasks:
            await asyncio.wait(self._tasks[:1])  # the reader finishes the stream
        await self._finish()

    # -- the callee's side ---------------------------------------------------------------

    async def send_audio(self, ulaw: bytes, *, paced: bool = True) -> None:
        """Say `ulaw` on the line in 20 ms frames (a short last frame is padded with silence).

        paced=True queues it on the line's real-time clock and returns when the last frame
        went out; paced=False sends every frame at once. Does nothing on a closed stream."""
        if not ulaw or self._ws is None or self.closed.is_set() or self._closing:
            return
        chunks = frames.split_frames(ulaw)
        if not paced:
            self._slot = max(self._slot, self._slot_now())
            for chunk in chunks:
                slot = self._slot
                self._slot += 1
                await self._send_media(chunk, slot)
            return
        data = b"".join(chunks)
        self._outbox += data
        self._queued_total += len(data)
        done = self._loop_().create_future()
        self._waiters.append((self._queued_total, done))
        self._outbox_ready.set()
        await done

    async def send_silence(self, ms: int, *, paced: bool = True) -> None:
        frames_count = max(1, round(ms / FRAME_MS))
        await self.send_audio(_SILENT_FRAME * frames_count, paced=paced)

    async def send_dtmf(self, digit: str) -> None:
        if self._ws is None or self.closed.is_set() or self._closing:
            return
        await self._send(lambda seq: frames.dtmf(seq, self.stream_sid, digit))

    async def send_raw(self, text: str) -> None:
        """Any text frame, unnumbered (for malformed-frame tests)."""
        if self._ws is None:
            raise RuntimeError("not connected")
        async with self._send_lock:
            await self._ws.send_str(text)

    # -- observations --------------------------------------------------------------------

    @property
    def played_audio(self) -> bytearray:
        """What has played on the phone so far (audio dropped by a clear never plays)."""
        if self._playback is None:
            return bytearray()
        return bytearray(self._playback.played_through(self._now()))

    @property
    def played_bytes(self) -> int:
        """len(played_audio), without copying it."""
        return self._playback.played_len(self._now()) if self._playback else 0

    @property
    def playing(self) -> bool:
        """True while application audio is playing (never after the stream closed)."""
        if self._playback is None or self.ended_at is not None:
            return False
        return self._playback.quiet_for(self._now()) == 0

    def quiet_ms(self) -> float:
        """Stream-time ms since playback went idle (0 while playing)."""
        if self._playback is None:
            return 0.0
        return self._playback.quiet_for(self._now()) * 1000 * self.playback_speed

    @property
    def cleared_bytes(self) -> int:
        return self._playback.cleared_bytes if self._playback else 0

    def on_media(self, callback: MediaHook) -> None:
        """`callback(loop_time, ulaw)` for every media frame the application sends."""
        self._media_hooks.append(callback)

    def on_clear(self, callback: ClearHook) -> None:
        self._clear_hooks.append(callback)

    def on_mark(self, callback: MarkHook) -> None:
        """`callback(echo)` when a mark is echoed."""
        self._mark_hooks.append(callback)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:  # noqa: ASYNC109
        """Until `predicate()` holds (re-checked on every stream event and every 10 ms).

        Raises TimeoutError, or ConnectionResetError when the stream closes first."""
        loop = self._loop_()
        deadline = loop.time() + timeout
        while not predicate():
            if self.closed.is_set():
                raise ConnectionResetError("media stream closed while waiting")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, _POLL))

    async def wait_for_quiet(self, ms: float, timeout: float) -> None:  # noqa: ASYNC109
        """Until nothing has played for `ms` of stream time."""
        await self.wait_until(lambda: self.quiet_ms() >= ms, timeout)

    # -- internals -----------------------------------------------------------------------

    def _loop_(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _now(self) -> float:
        """The playback clock: loop time, frozen when the stream ended."""
        return self.ended_at if self.ended_at is not None else self._loop_().time()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _send(self, build: Callable[[int], str]) -> None:
        if self._ws is None or self._ws.closed:
            raise ConnectionResetError("media stream is closed")
        async with self._send_lock:
            self._seq += 1
            await self._ws.send_str(build(self._seq))

    async def _send_media(self, ulaw: bytes, slot: int) -> None:
        self._chunk += 1
        chunk, timestamp = self._chunk, slot * FRAME_MS
        await self._send(
            lambda seq: frames.media(
                seq, self.stream_sid, chunk=chunk, timestamp=timestamp, ulaw=ulaw
            )
        )
        self.sent_audio += ulaw

    def _period(self) -> float:
        return FRAME_MS / 1000 / self.playback_speed

    def _slot_now(self) -> int:
        assert self.started_at is not None
        return int((self._loop_().time() - self.started_at) / self._period())

    def _take_frame(self) -> bytes | None:
        if not self._outbox:
            return None
        frame = bytes(self._outbox[:FRAME_BYTES])
        del self._outbox[:FRAME_BYTES]
        self._taken_total += len(frame)
        return frame

    def _release_waiters(self, everything: bool = False) -> None:
        pending = []
        for target, done in self._waiters:
            if everything or target <= self._taken_total:
                if not done.done():
                    done.set_result(None)
            else:
                pending.append((target, done))
        self._waiters = pending

    async def _line(self) -> None:
        """The callee's side of the line: one frame per 20 ms slot on a drift-free schedule."""
        assert self.started_at is not None
        loop = self._loop_()
        try:
            while True:
                slot = self._slot
                delay = self.started_at + slot * self._period() - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                    continue  # an unpaced send may have used the slot meanwhile
                frame = self._take_frame()
                if frame is None and not self.continuous:
                    self._outbox_ready.clear()
                    await self._outbox_ready.wait()
                    self._slot = max(self._slot, self._slot_now())
                    continue
                self._slot = slot + 1
                await self._send_media(frame or _SILENT_FRAME, slot)
                self._release_waiters()
        except ConnectionError:
            self._release_waiters(everything=True)

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await self._on_text(str(msg.data))
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self.violations.append("binary frame")
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    break
        except ConnectionError as exc:
            logger.debug("media stream {} read failed: {!r}", self.stream_sid, exc)
        if not self._closing:  # otherwise close() finishes, once the closing handshake is done
            self.closed_by_server = True
            self.close_code = self._ws.close_code if self._ws.close_code is not None else 1006
            await self._finish()

    async def _on_text(self, text: str) -> None:
        assert self._playback is not None
        now = self._loop_().time()
        try:
            frame = parse_outbound(text, self.stream_sid)
        except ProtocolViolation as exc:
            self.violations.append(str(exc))
            logger.warning("media stream {}: ignored frame: {}", self.stream_sid, exc)
            return
        if isinstance(frame, OutboundMedia):
            if self.first_audio_at is None:
                self.first_audio_at = now
            self.received_audio += frame.ulaw
            echoes = self._playback.add_audio(now, frame.ulaw)
            self._call_hooks(self._media_hooks, now, frame.ulaw)
        elif isinstance(frame, OutboundMark):
            self.mark_requests.append(frame.name)
            echoes = self._playback.add_mark(now, frame.name)
        else:
            assert isinstance(frame, OutboundClear)
            echoes = self._playback.clear(now)
            self.clears.append(now)
            self._call_hooks(self._clear_hooks, now)
        self._player_wake.set()
        await self._echo(echoes)
        self._notify()

    async def _play(self) -> None:
        """Advance the playback clock and echo marks as their audio finishes playing."""
        assert self._playback is not None
        loop = self._loop_()
        while True:
            due = self._playback.next_due()
            wait = None if due is None else max(0.0, due - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # no extra task per wake-up (wait_for makes one)
                    await self._player_wake.wait()
            self._player_wake.clear()
            echoes = self._playback.advance(loop.time())
            try:
                await self._echo(echoes)
            except ConnectionError:
                return
            self._notify()

    async def _echo(self, echoes: list[MarkEcho]) -> None:
        for echo in echoes:
            self.marks.append(echo)
            self._call_hooks(self._mark_hooks, echo)
        for echo in echoes:
            await self._send(
                functools.partial(_mark_frame, stream_sid=self.stream_sid, name=echo.name)
            )

    def _call_hooks(self, hooks: list[Any], *args: Any) -> None:
        for hook in hooks:
            try:
                hook(*args)
            except Exception:
                logger.exception("media stream {} hook failed", self.stream_sid)

    async def _cancel_line(self) -> None:
        line = [t for t in self._tasks if t.get_name().startswith("twilio-media-line")]
        for task in line:
            task.cancel()
        await asyncio.gather(*line, return_exceptions=True)

    async def _finish(self) -> None:
        if self.closed.is_set():
            return
        current = asyncio.current_task()
        others = [t for t in self._tasks if t is not current and not t.done()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        self._release_waiters(everything=True)
        self.ended_at = self._loop_().time()
        if self._playback is not None:
            self._playback.advance(self.ended_at)
        self.closed.set()
        self._notify()
        await self._close_session()

    async def _close_session(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None
