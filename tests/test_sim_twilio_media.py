"""The emulated Twilio side of a Media Stream: wire format, pacing, playback, marks and clear."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType, web

from caller_engine.sim.playback import MarkEcho, Playback
from caller_engine.sim.server import LoopbackServer
from caller_engine.sim.twilio import media_frames
from caller_engine.sim.twilio.media import TwilioMediaClient
from caller_engine.sim.twilio.media_frames import (
    OutboundClear,
    OutboundMark,
    OutboundMedia,
    ProtocolViolation,
    parse_outbound,
    split_frames,
)
from caller_engine.telephony.media_stream import Media, Start, parse_frame
from caller_engine.telephony.signature import twilio_signature_valid

TOKEN = "media-token"
ACCOUNT = "AC" + "1" * 32
CALL = "CA" + "2" * 32


# -- the pure playback model --------------------------------------------------------------


def test_marks_echo_when_the_audio_before_them_has_played() -> None:
    p = Playback(10.0)
    assert p.add_mark(10.0, "empty") == [MarkEcho("empty", 10.0, cleared=False)]
    p.add_audio(10.0, b"\x01" * 800)  # 100 ms
    p.add_mark(10.0, "a")
    p.add_audio(10.05, b"\x02" * 400)  # queued behind: plays 10.1 .. 10.15
    p.add_mark(10.05, "b")
    assert p.next_due() == pytest.approx(10.1)
    assert p.advance(10.099) == []
    assert len(p.played) == int(0.099 * 8000)
    assert p.advance(10.12) == [MarkEcho("a", pytest.approx(10.1), cleared=False)]  # type: ignore[arg-type]
    assert p.next_due() == pytest.approx(10.15)
    [b] = p.advance(11.0)
    assert b.name == "b" and b.time == pytest.approx(10.15) and not b.cleared
    assert bytes(p.played) == b"\x01" * 800 + b"\x02" * 400
    assert p.idle and p.quiet_for(11.0) == pytest.approx(0.85)


def test_clear_drops_unplayed_audio_and_echoes_pending_marks_at_once() -> None:
    p = Playback(0.0)
    p.add_audio(0.0, b"\x01" * 8000)  # 1 s
    p.add_mark(0.0, "m1")
    p.add_audio(0.0, b"\x02" * 800)
    p.add_mark(0.0, "m2")
    assert p.pending_marks == ["m1", "m2"]
    echoes = p.clear(0.25)
    assert echoes == [MarkEcho("m1", 0.25, True), MarkEcho("m2", 0.25, True)]
    assert len(p.played) == 2000 and p.cleared_bytes == 6800
    assert p.idle and p.queued_bytes == 0 and p.next_due() is None
    # audio after a clear starts playing from the clear on
    p.add_audio(0.3, b"\x03" * 80)
    p.add_mark(0.3, "m3")
    assert p.advance(1.0) == [MarkEcho("m3", pytest.approx(0.31), False)]  # type: ignore[arg-type]
    assert bytes(p.played[-80:]) == b"\x03" * 80


def test_played_through_and_quiet_for_do_not_consume_echoes() -> None:
    p = Playback(0.0, speed=2.0)  # 16000 bytes per second
    p.add_audio(0.0, b"\x01" * 1600)  # 0.1 s at speed 2
    p.add_mark(0.0, "end")
    assert len(p.played_through(0.05)) == 800
    assert p.quiet_for(0.05) == 0.0
    assert p.quiet_for(0.3) == pytest.approx(0.2)
    assert p.advance(0.3) == [MarkEcho("end", pytest.approx(0.1), False)]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        Playback(0.0, speed=0)


# -- frames ---------------------------------------------------------------------------------


def test_frames_are_20ms_and_the_last_is_padded_with_silence() -> None:
    chunks = split_frames(b"\x01" * 330)
    assert [len(c) for c in chunks] == [160, 160, 160]
    assert chunks[2] == b"\x01" * 10 + b"\xff" * 150
    assert split_frames(b"") == []


def test_media_frame_values_are_strings_and_our_parser_reads_them() -> None:
    text = media_frames.media(7, "MZ1", chunk=3, timestamp=40, ulaw=b"\x00\x01")
    raw = orjson.loads(text)
    assert raw["sequenceNumber"] == "7" and raw["streamSid"] == "MZ1"
    assert raw["media"] == {"track": "inbound", "chunk": "3", "timestamp": "40", "payload": "AAE="}
    event = parse_frame(text)
    assert event == Media(payload="AAE=", timestamp=40, chunk=3, track="inbound")


def test_outbound_frames_are_read_like_twilio() -> None:
    sid = "MZ9"
    media = orjson.dumps({"event": "media", "streamSid": sid, "media": {"payload": "AAE="}})
    assert parse_outbound(media.decode(), sid) == OutboundMedia(b"\x00\x01")
    mark = {"event": "mark", "streamSid": sid, "mark": {"name": "x"}}
    assert parse_outbound(orjson.dumps(mark).decode(), sid) == OutboundMark("x")
    clear = {"event": "clear", "streamSid": sid}
    assert parse_outbound(orjson.dumps(clear).decode(), sid) == OutboundClear()
    bad = [
        ("nope", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"event":"media","streamSid":"MZ0","media":{"payload":""}}', "streamSid"),
        ('{"event":"speak","streamSid":"MZ9"}', "unknown event"),
        ('{"event":"media","streamSid":"MZ9","media":{"payload":"***"}}', "base64"),
        ('{"event":"media","streamSid":"MZ9"}', "'media' object"),
        ('{"event":"mark","streamSid":"MZ9","mark":{"name":3}}', "name"),
    ]
    for text, reason in bad:
        with pytest.raises(ProtocolViolation, match=reason):
            parse_outbound(text, sid)


# -- the client against a tiny application ---------------------------------------------------


class App:
    """A WebSocket application recording every frame Twilio sends, with its arrival time."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self.headers: dict[str, str] = {}
        self.ws: web.WebSocketResponse | None = None
        self.ready = asyncio.Event()
        self.ended = asyncio.Event()
        self.url = ""
        self._changed = asyncio.Condition()
        self.clients: list[TwilioMediaClient] = []

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        self.headers = dict(request.headers)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws = ws
        self.ready.set()
        loop = asyncio.get_running_loop()
        async for msg in ws:
            assert msg.type == WSMsgType.TEXT
            self.frames.append((loop.time(), orjson.loads(msg.data)))
            async with self._changed:
                self._changed.notify_all()
        self.ended.set()
        return ws

    async def until(self, condition: Callable[[], bool], limit: float = 5.0) -> None:
        """Until `condition()` holds, re-checked on every frame received."""
        async with asyncio.timeout(limit), self._changed:
            await self._changed.wait_for(condition)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [f for _, f in self.frames if f["event"] == name]

    def arrivals(self, name: str) -> list[float]:
        return [t for t, f in self.frames if f["event"] == name]

    async def send(self, obj: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(orjson.dumps(obj).decode())

    async def media(self, sid: str, ulaw: bytes) -> None:
        payload = base64.b64encode(ulaw).decode()
        await self.send({"event": "media", "streamSid": sid, "media": {"payload": payload}})

    async def mark(self, sid: str, name: str) -> None:
        await self.send({"event": "mark", "streamSid": sid, "mark": {"name": name}})


@pytest.fixture
async def app() -> AsyncIterator[App]:
    application = App()
    web_app = web.Application()
    web_app.router.add_get("/media-stream", application.handler)
    server = LoopbackServer(web_app)
    await server.start()
    application.url = server.ws_url + "/media-stream"
    yield application
    for client in application.clients:  # a failed test leaves its stream open
        await client.close()
    await server.stop()


def _client(app: App, **kwargs: Any) -> TwilioMediaClient:
    defaults: dict[str, Any] = {
        "auth_token": TOKEN,
        "call_sid": CALL,
        "account_sid": ACCOUNT,
        "custom_parameters": {"callbackId": "cb-1", "token": "t0k"},
        "continuous": False,
    }
    client = TwilioMediaClient(app.url, **{**defaults, **kwargs})
    app.clients.append(client)
    return client


async def test_connect_signs_the_upgrade_and_sends_connected_then_start(app: App) -> None:
    client = _client(app, signature_url="wss://calls.example.com/media-stream")
    await client.connect()
    await app.until(lambda: len(app.frames) >= 2)
    signature = app.headers["X-Twilio-Signature"]
    assert twilio_signature_valid(TOKEN, "wss://calls.example.com/media-stream", {}, signature)
    assert not twilio_signature_valid(TOKEN, app.url, {}, signature)
    connected, start = (f for _, f in app.frames[:2])
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    sid = client.stream_sid
    assert sid.startswith("MZ") and len(sid) == 34
    assert start == {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": sid,
        "start": {
            "accountSid": ACCOUNT,
            "streamSid": sid,
            "callSid": CALL,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"callbackId": "cb-1", "token": "t0k"},
        },
    }
    parsed = parse_frame(orjson.dumps(start))
    assert isinstance(parsed, Start) and parsed.custom_parameters["token"] == "t0k"
    assert client.started_at is not None
    await client.close()


async def test_paced_audio_follows_the_line_clock(app: App) -> None:
    speed = 10.0
    client = _client(app, playback_speed=speed)
    await client.connect()
    assert client.started_at is not None
    audio = bytes(range(256)) * 6 + b"\x00" * 64  # 1600 bytes = 10 frames
    await client.send_audio(audio)
    await app.until(lambda: len(app.events("media")) == 10)
    media = app.events("media")
    assert [m["sequenceNumber"] for m in media] == [str(n) for n in range(2, 12)]
    assert [m["media"]["chunk"] for m in media] == [str(n) for n in range(1, 11)]
    stamps = [int(m["media"]["timestamp"]) for m in media]
    assert stamps == [stamps[0] + 20 * i for i in range(10)]
    assert all(isinstance(v, str) for m in media for v in m["media"].values())
    assert b"".join(base64.b64decode(m["media"]["payload"]) for m in media) == audio
    period = 0.02 / speed
    # never ahead of the clock: frame i leaves no earlier than its slot
    for arrival, stamp in zip(app.arrivals("media"), stamps, strict=True):
        assert arrival >= client.started_at + stamp / 20 * period - 1e-6
    await client.stop()


async def test_unpaced_audio_goes_at_once_and_the_line_waits_for_its_time(app: App) -> None:
    client = _client(app, continuous=True, playback_speed=4.0)
    await client.connect()
    await client.send_audio(b"\x01" * 1600, paced=False)
    await app.until(lambda: len(app.events("media")) >= 14)
    media = app.events("media")
    stamps = [int(m["media"]["timestamp"]) for m in media]
    assert stamps == [stamps[0] + 20 * i for i in range(len(stamps))]  # one timeline, no overlap
    payloads = [base64.b64decode(m["media"]["payload"]) for m in media]
    first = payloads.index(b"\x01" * 160)
    assert payloads[first : first + 10] == [b"\x01" * 160] * 10
    assert all(p == b"\xff" * 160 for p in payloads[first + 10 :])  # silence fills the line
    await client.stop()


async def test_gaps_show_in_timestamps_when_the_line_is_not_continuous(app: App) -> None:
    client = _client(app, playback_speed=10.0)
    await client.connect()
    await client.send_audio(b"\x01" * 160)
    await asyncio.sleep(0.05)  # 25 slots at speed 10
    await client.send_audio(b"\x02" * 160)
    await app.until(lambda: len(app.events("media")) == 2)
    first, second = (int(m["media"]["timestamp"]) for m in app.events("media"))
    assert second - first >= 20 * 20
    await client.stop()


async def test_mark_echoes_follow_playback_in_order(app: App) -> None:
    client = _client(app)
    await client.connect()
    await app.ready.wait()
    sid = client.stream_sid
    await app.mark(sid, "nothing-queued")
    await app.media(sid, b"\x01" * 800)  # 100 ms
    await app.mark(sid, "a")
    await app.media(sid, b"\x02" * 400)  # 50 ms
    await app.mark(sid, "b")
    await app.until(lambda: len(app.events("mark")) == 3)
    assert [m.name for m in client.marks] == ["nothing-queued", "a", "b"]
    assert not any(m.cleared for m in client.marks)
    start = client.first_audio_at
    assert start is not None
    assert client.marks[0].time <= start
    assert client.marks[1].time == pytest.approx(start + 0.1)
    assert client.marks[2].time == pytest.approx(start + 0.15)
    echoed = app.events("mark")
    assert [e["mark"]["name"] for e in echoed] == ["nothing-queued", "a", "b"]
    assert all(e["streamSid"] == sid and isinstance(e["sequenceNumber"], str) for e in echoed)
    # an echo never reaches the application before its audio has played
    arrivals = app.arrivals("mark")
    assert arrivals[1] >= start + 0.1 and arrivals[2] >= start + 0.15
    assert client.played_audio == b"\x01" * 800 + b"\x02" * 400 == client.received_audio
    assert client.mark_requests == ["nothing-queued", "a", "b"]
    await client.stop()


async def test_clear_drops_unplayed_audio_and_echoes_pending_marks(app: App) -> None:
    client = _client(app)
    cleared_at: list[float] = []
    client.on_clear(cleared_at.append)
    await client.connect()
    await app.ready.wait()
    sid = client.stream_sid
    await app.media(sid, b"\x01" * 80_000)  # 10 s
    await app.mark(sid, "m1")
    await app.media(sid, b"\x02" * 800)
    await app.mark(sid, "m2")
    await client.wait_until(
        lambda: len(client.played_audio) > 0 and len(client.mark_requests) == 2, 5
    )
    assert client.playing
    await app.send({"event": "clear", "streamSid": sid})
    await app.until(lambda: len(app.events("mark")) == 2)
    assert len(client.clears) == 1 and cleared_at == client.clears
    assert [(m.name, m.cleared, m.time) for m in client.marks] == [
        ("m1", True, client.clears[0]),
        ("m2", True, client.clears[0]),
    ]
    played = client.played_audio
    assert 0 < len(played) < 80_000
    assert played == client.received_audio[: len(played)]
    assert len(played) + client.cleared_bytes == 80_800
    assert not client.playing
    # playback continues with audio sent after the clear
    await app.media(sid, b"\x03" * 160)
    await app.mark(sid, "m3")
    await app.until(lambda: len(app.events("mark")) == 3)
    assert client.marks[-1].name == "m3" and not client.marks[-1].cleared
    assert client.played_audio == played + b"\x03" * 160
    await client.stop()


async def test_wait_for_quiet_and_media_hooks(app: App) -> None:
    client = _client(app, playback_speed=4.0)
    heard: list[tuple[float, bytes]] = []
    client.on_media(lambda t, b: heard.append((t, b)))
    await client.connect()
    await app.ready.wait()
    await app.media(client.stream_sid, b"\x05" * 1600)  # 200 ms of stream time
    await client.wait_until(lambda: client.first_audio_at is not None, 5)
    assert client.quiet_ms() == 0
    await client.wait_for_quiet(100, timeout=5)
    assert client.quiet_ms() >= 100
    assert client.played_audio == b"\x05" * 1600
    assert heard == [(client.first_audio_at, b"\x05" * 1600)]
    with pytest.raises(TimeoutError):
        await client.wait_until(lambda: False, timeout=0.05)
    await client.stop()


async def test_dtmf_and_raw_frames(app: App) -> None:
    client = _client(app)
    await client.connect()
    await client.send_dtmf("7")
    await client.send_raw("{not json")
    await app.until(lambda: len(app.frames) >= 3)
    dtmf = app.events("dtmf")
    assert dtmf == [
        {
            "event": "dtmf",
            "streamSid": client.stream_sid,
            "sequenceNumber": "2",
            "dtmf": {"track": "inbound_track", "digit": "7"},
        }
    ]
    await client.close()


async def test_frames_twilio_rejects_are_recorded_and_ignored(app: App) -> None:
    client = _client(app)
    await client.connect()
    await app.ready.wait()
    assert app.ws is not None
    await app.ws.send_str("garbage")
    await app.ws.send_bytes(b"\x00")
    await app.send({"event": "media", "streamSid": "MZother", "media": {"payload": "AAE="}})
    await app.media(client.stream_sid, b"\x09" * 10)
    await client.wait_until(lambda: len(client.received_audio) == 10, 5)
    assert client.violations == ["not JSON", "binary frame", "media for streamSid 'MZother'"]
    await client.stop()


async def test_stop_sends_stop_then_closes(app: App) -> None:
    client = _client(app, continuous=True, playback_speed=4.0)
    await client.connect()
    await app.until(lambda: len(app.events("media")) >= 3)
    await client.stop()
    await asyncio.wait_for(app.ended.wait(), 5)
    assert app.frames[-1][1] == {
        "event": "stop",
        "sequenceNumber": str(len(app.frames) - 1),
        "streamSid": client.stream_sid,
        "stop": {"accountSid": ACCOUNT, "callSid": CALL},
    }
    assert client.closed.is_set() and not client.closed_by_server
    assert client.close_code == 1000
    await client.send_audio(b"\x01" * 160)  # a dead line: nothing happens
    await client.send_dtmf("1")
    await client.stop()
    assert app.frames[-1][1]["event"] == "stop"


async def test_application_closing_the_socket_ends_the_stream(app: App) -> None:
    client = _client(app)
    await client.connect()
    await app.ready.wait()
    assert app.ws is not None
    await app.ws.close(code=4000, message=b"bye")
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.closed_by_server and client.close_code == 4000
    with pytest.raises(ConnectionResetError):
        await client.wait_until(lambda: False, timeout=1)
    assert not app.events("stop")
    await client.close()
