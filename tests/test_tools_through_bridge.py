"""A booking through the bridge: the model asks, the real Google client books, the agent speaks."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from caller_engine.audio import mulaw
from caller_engine.sim.openai.realtime import RealtimeScript, ScriptedResponse
from tests.bridge_env import bridge_env
from tests.google_env import (
    CALENDAR_ID,
    CLIENT_EMAIL,
    MAILBOX,
    TIMEZONE,
    running_google,
    service_key,
)

SPEECH = mulaw.tone(500, 300.0, 9000)


def next_working_day() -> str:
    day = datetime.now(ZoneInfo(TIMEZONE)).date() + timedelta(days=2)
    while day.weekday() == 6:  # Sunday is closed by default
        day += timedelta(days=1)
    return day.isoformat()


async def test_availability_and_booking_through_the_bridge() -> None:
    date = next_working_day()
    responses = [
        ScriptedResponse(text="Hi, when would suit you?", audio=b"\x11" * 800),
        ScriptedResponse(text="", tool_calls=[("check_availability", {"date": date})]),
        ScriptedResponse(text="Ten is free.", audio=b"\x22" * 800),
        ScriptedResponse(
            text="",
            tool_calls=[
                ("schedule_meeting", {"date": date, "time": "10:00", "name": "Alex Morgan"})
            ],
        ),
        ScriptedResponse(text="You are booked.", audio=b"\x33" * 800),
    ]
    users = ["What do you have?", "Ten please, I'm Alex Morgan."]

    def script() -> RealtimeScript:
        return RealtimeScript(responses=[*responses], user_transcripts=[*users])

    async with running_google() as google:
        settings: dict[str, Any] = {
            "enable_calendar_tools": True,
            "google_client_email": CLIENT_EMAIL,
            "google_private_key": service_key()[0],
            "google_calendar_id": CALENDAR_ID,
            "google_impersonated_user": MAILBOX,
            "google_api_base_url": google.url,
            "google_token_uri": f"{google.url}/token",
            "business_timezone": TIMEZONE,
        }
        async with bridge_env(script, **settings) as env:
            client = await env.call("cb-book", speed=4.0)
            await client.wait_until(lambda: b"\x11" in client.received_audio, 5)
            await client.wait_for_quiet(100, 5)
            await client.send_audio(SPEECH)
            await client.send_silence(700)
            await client.wait_until(lambda: b"\x22" in client.received_audio, 10)
            await client.wait_for_quiet(100, 5)
            await client.send_audio(SPEECH)
            await client.send_silence(700)
            await client.wait_until(lambda: b"\x33" in client.received_audio, 10)
            session = env.model.sessions[0]
            tools = session.session["tools"]
            assert {t["name"] for t in tools} >= {"check_availability", "schedule_meeting"}
            outputs = [
                orjson.loads(o["item"]["output"])
                for o in session.received
                if o.get("type") == "conversation.item.create"
            ]
            availability, booking = outputs
            assert availability["date"] == date and "10:00" in availability["availableSlots"]
            assert booking["status"] == "confirmed"
            [event] = google.calendar.events.values()
            assert event.summary == "Appointment - Alex Morgan"
            assert "cb-book" in event.body["description"]
            await client.stop()
            result = await env.result("cb-book")
            assert [t.name for t in result.toolCalls] == ["check_availability", "schedule_meeting"]
            assert all(t.ok for t in result.toolCalls)
            assert env.model.violations == []
