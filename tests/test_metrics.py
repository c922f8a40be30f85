"""GET /metrics: the production figures of calls that went through the bridge."""

from __future__ import annotations

from caller_engine.audio import mulaw
from caller_engine.sim.openai.realtime import RealtimeScript, ScriptedResponse
from caller_engine.sim.server import LoopbackServer
from caller_engine.web.metrics import metrics_app
from tests.bridge_env import bridge_env
from tests.conftest import API_KEY


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


async def test_metrics_report_latency_tools_and_outcomes() -> None:
    script = lambda: RealtimeScript(  # noqa: E731
        [
            ScriptedResponse(text="Hi.", audio=b"\x11" * 1600),
            ScriptedResponse(text="Bye.", audio=b"\x22" * 800, tool_calls=[("end_call", {})]),
        ],
        user_transcripts=["Bye."],
    )
    async with bridge_env(script) as env:
        env.stop_stream_on_hangup()
        denied = await env.http.get(env.base + "/metrics")
        assert denied.status == 401
        unsigned = await env.http.post(env.base + "/webhooks/call-status", data={"CallSid": "x"})
        assert unsigned.status == 403
        client = await env.call("cb-m", speed=4.0)
        await client.wait_until(lambda: len(client.received_audio) >= 1600, 5)
        await client.wait_for_quiet(50, 5)
        await client.send_audio(mulaw.tone(400, 300.0, 9000))
        await client.send_silence(700)
        await env.result("cb-m")
        resp = await env.http.get(env.base + "/metrics", headers={"X-API-Key": API_KEY})
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
        assert sample(text, "caller_engine_greeting_latency_seconds_count") == 1
        assert sample(text, "caller_engine_response_latency_seconds_count") == 1
        assert (
            sample(text, 'caller_engine_tool_duration_seconds_count{outcome="ok",tool="end_call"}')
            == 1
        )
        assert sample(text, 'caller_engine_calls_finished_total{status="completed"}') == 1
        assert (
            sample(
                text,
                'caller_engine_webhook_signature_failures_total{endpoint="/webhooks/call-status"}',
            )
            == 1
        )
        assert sample(text, "caller_engine_active_calls") == 0


async def test_metrics_port_app_serves_without_key() -> None:
    from caller_engine.metrics import Metrics

    metrics = Metrics()
    metrics.model_reconnects.inc()
    server = LoopbackServer(metrics_app(metrics))
    url = await server.start()
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        assert resp.status == 200
        assert sample(await resp.text(), "caller_engine_model_reconnects_total") == 1
    await server.stop()
