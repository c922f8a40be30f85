"""A minimal pass-through bridge: the floor `caller-engine bench` measures the product against.

Not part of the product. It does only what every Twilio ⇄ OpenAI Realtime bridge must: answer
the TwiML fetch with a <Connect><Stream>, open the model socket when the stream starts, send
the session configuration and a greeting request, forward caller audio as
`input_audio_buffer.append` and model audio as Twilio `media`, and send `clear` when the caller
starts speaking. No records, transcript, tools, marks, metrics, pre-warming, reconnects or
logging per call. Same loop (uvloop), same libraries (aiohttp, websockets, orjson) as the
product, so the difference in CPU is what the product's features and bookkeeping cost.

    python bench/floor_bridge.py --port 5071 --model-url ws://127.0.0.1:18180/v1/realtime \
        --api-key sk-replay
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any
from xml.sax.saxutils import quoteattr

import orjson
from aiohttp import WSMsgType, web
from websockets.asyncio.client import ClientConnection, connect

SESSION = {
    "type": "session.update",
    "session": {
        "type": "realtime",
        "instructions": "You are a friendly receptionist calling on behalf of a clinic.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "turn_detection": {
                    "type": "server_vad",
                    "create_response": True,
                    "interrupt_response": True,
                    "silence_duration_ms": 500,
                },
            },
            "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
        },
    },
}
GREETING = {"type": "response.create", "response": {"instructions": "Greet the caller."}}


class Floor:
    def __init__(self, public_ws: str, model_url: str, api_key: str) -> None:
        self.public_ws = public_ws
        self.model_url = model_url
        self.headers = {"Authorization": f"Bearer {api_key}"}

    async def twiml(self, request: web.Request) -> web.Response:
        callback_id = request.query.get("callbackId", "")
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
            f"<Stream url={quoteattr(self.public_ws)}>"
            f'<Parameter name="callbackId" value={quoteattr(callback_id)}/>'
            "</Stream></Connect></Response>"
        )
        return web.Response(text=body, content_type="text/xml")

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def media(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024)
        await ws.prepare(request)
        stream_sid = ""
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                return ws
            event = orjson.loads(msg.data)
            if event.get("event") == "start":
                stream_sid = event["start"]["streamSid"]
                break
        else:
            return ws
        model = await connect(
            self.model_url, additional_headers=self.headers, compression=None, max_size=2**22
        )
        try:
            await model.send(orjson.dumps(SESSION).decode())
            await model.send(orjson.dumps(GREETING).decode())
            downstream = asyncio.create_task(self._model_to_twilio(model, ws, stream_sid))
            await self._twilio_to_model(ws, model)
            downstream.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await downstream
        finally:
            await model.close()
        return ws

    async def _twilio_to_model(self, ws: web.WebSocketResponse, model: ClientConnection) -> None:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                return
            event: dict[str, Any] = orjson.loads(msg.data)
            kind = event.get("event")
            if kind == "media":
                payload = event["media"]["payload"]
                await model.send('{"type":"input_audio_buffer.append","audio":"' + payload + '"}')
            elif kind == "stop":
                return

    async def _model_to_twilio(
        self, model: ClientConnection, ws: web.WebSocketResponse, stream_sid: str
    ) -> None:
        prefix = '{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"'
        clear = orjson.dumps({"event": "clear", "streamSid": stream_sid}).decode()
        async for raw in model:
            event = orjson.loads(raw)
            kind = event.get("type")
            if kind == "response.output_audio.delta":
                await ws.send_str(prefix + event["delta"] + '"}}')
            elif kind == "input_audio_buffer.speech_started":
                await ws.send_str(clear)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-url", required=True, help="the Realtime URL with ?model=")
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args()
    floor = Floor(f"ws://{args.host}:{args.port}/media-stream", args.model_url, args.api_key)
    app = web.Application()
    app.router.add_get("/health", floor.health)
    app.router.add_route("*", "/twiml/outbound", floor.twiml)
    app.router.add_get("/media-stream", floor.media)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
