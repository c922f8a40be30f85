"""check_availability and schedule_meeting through the dispatch table, the real Google client
and the Google emulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from google.auth.exceptions import RefreshError

from caller_engine.telephony.rest import TwilioGateway
from caller_engine.tools.catalog import build_tools
from caller_engine.tools.failures import google_message
from caller_engine.tools.google_client import GoogleApis, from_refresh_error
from caller_engine.tools.registry import ToolContext, ToolOutcome, ToolRegistry
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.google_env import (
    CALENDAR_ID,
    CALLEE,
    CLIENT_EMAIL,
    GoogleEnv,
    context,
    other_key,
    running_google,
    service_key,
)

NY = ZoneInfo("America/New_York")
MONDAY_EARLY = datetime(2025, 3, 3, 7, 0, tzinfo=NY)
TUESDAY = "2025-03-04"


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NY)


@pytest.fixture
async def env() -> AsyncIterator[GoogleEnv]:
    async with running_google() as google_env:
        yield google_env


@pytest.fixture
async def gateway() -> AsyncIterator[TwilioGateway]:
    gw = TwilioGateway(ACCOUNT_SID, AUTH_TOKEN, "+15550001111", base_url="http://127.0.0.1:9")
    yield gw
    await gw.close()


Make = Callable[..., ToolRegistry]


@pytest.fixture
def make(env: GoogleEnv, gateway: TwilioGateway) -> Make:
    def build(
        now: datetime = MONDAY_EARLY, apis: GoogleApis | None = None, **settings: Any
    ) -> ToolRegistry:
        tools = build_tools(
            env.settings(**settings), gateway, google=apis or env.apis(), clock=lambda: now
        )
        return ToolRegistry(tools)

    return build


async def call(
    registry: ToolRegistry, tool: str, ctx: ToolContext | None = None, /, **args: Any
) -> ToolOutcome:
    return await registry.dispatch(tool, orjson.dumps(args).decode(), ctx or context())


async def slots(registry: ToolRegistry, day: str, ctx: ToolContext | None = None) -> Any:
    outcome = await call(registry, "check_availability", ctx, date=day)
    assert outcome.ok, outcome.output
    return outcome.output["availableSlots"]


def inserts(env: GoogleEnv) -> int:
    return env.emulator.calls("calendar", "POST", "/events")


# -- check_availability ----------------------------------------------------------------


async def test_free_slots_exclude_busy_blocks(env: GoogleEnv, make: Make) -> None:
    env.calendar.add_event(local(2025, 3, 4, 10, 0), local(2025, 3, 4, 11, 0), "Dentist")
    env.calendar.add_event(local(2025, 3, 4, 13, 15), local(2025, 3, 4, 13, 45), "Lunch")
    env.calendar.add_event(local(2025, 3, 4, 15, 0), local(2025, 3, 4, 17, 0), transparent=True)
    outcome = await call(make(), "check_availability", date=TUESDAY)
    assert outcome.ok
    free = outcome.output["availableSlots"]
    assert outcome.output["date"] == TUESDAY and "message" not in outcome.output
    assert free[:4] == ["09:00", "09:30", "11:00", "11:30"]
    assert "13:00" not in free and "13:30" not in free and "12:30" in free and "14:00" in free
    assert "15:00" in free  # a transparent event does not block
    assert len(free) == 22 - 4


async def test_freebusy_query_is_in_the_business_timezone(env: GoogleEnv, make: Make) -> None:
    await slots(make(), TUESDAY)
    request = next(r for r in env.emulator.requests if r.path.endswith("/freeBusy"))
    body = orjson.loads(request.body)
    assert body["timeZone"] == "America/New_York"
    assert body["items"] == [{"id": CALENDAR_ID}]
    assert body["timeMin"] == "2025-03-04T14:00:00Z" and body["timeMax"] == "2025-03-05T01:00:00Z"


async def test_slots_across_spring_forward(env: GoogleEnv, make: Make) -> None:
    registry = make(working_days="mon,tue,wed,thu,fri,sat,sun")
    for day in (8, 9):  # Saturday (EST) and Sunday (EDT): the same UTC hour
        env.calendar.add_event(
            datetime(2025, 3, day, 13, tzinfo=UTC), datetime(2025, 3, day, 14, tzinfo=UTC)
        )
    saturday = await slots(registry, "2025-03-08")
    sunday = await slots(registry, "2025-03-09")
    assert saturday[0] == "09:00" and len(saturday) == 22  # 13:00Z = 08:00 EST
    assert sunday[:2] == ["10:00", "10:30"] and len(sunday) == 20  # 13:00Z = 09:00 EDT


async def test_slots_across_fall_back(env: GoogleEnv, make: Make) -> None:
    registry = make(working_days="mon,tue,wed,thu,fri,sat,sun", booking_horizon_days=365)
    env.calendar.add_event(
        datetime(2025, 11, 2, 14, tzinfo=UTC), datetime(2025, 11, 2, 15, tzinfo=UTC)
    )
    free = await slots(registry, "2025-11-02")  # 14:00Z = 09:00 EST (was 10:00 EDT)
    assert free[:2] == ["10:00", "10:30"]


async def test_slots_already_past_today_are_excluded(env: GoogleEnv, make: Make) -> None:
    free = await slots(make(now=local(2025, 3, 4, 13, 10)), TUESDAY)
    assert free[0] == "13:30" and free[-1] == "19:30"


async def test_no_availability_message(env: GoogleEnv, make: Make) -> None:
    env.calendar.add_event(local(2025, 3, 4, 8, 0), local(2025, 3, 4, 21, 0), "Closed")
    outcome = await call(make(), "check_availability", date=TUESDAY)
    assert outcome.output == {
        "date": TUESDAY,
        "availableSlots": [],
        "message": "No availability on this date",
    }
    after_hours = await call(
        make(now=local(2025, 3, 4, 19, 45)), "check_availability", date=TUESDAY
    )
    assert after_hours.output["availableSlots"] == []
    assert after_hours.output["message"] == "No availability on this date"


async def test_closed_day_has_no_availability_without_asking_google(
    env: GoogleEnv, make: Make
) -> None:
    outcome = await call(make(), "check_availability", date="2025-03-09")
    assert outcome.output["availableSlots"] == []
    assert outcome.output["message"] == "No availability on this date"
    assert "closed on Sundays" in outcome.output["reason"]
    assert env.emulator.calls("calendar") == 0


@pytest.mark.parametrize(
    ("day", "message"),
    [
        ("2025-03-02", "in the past; today is Monday 2025-03-03"),
        ("2025-06-02", "at most 90 days ahead (until 2025-06-01)"),
        ("2025-02-30", "use YYYY-MM-DD"),
        ("next tuesday", "invalid arguments: date"),
    ],
)
async def test_availability_refuses_bad_dates(
    env: GoogleEnv, make: Make, day: str, message: str
) -> None:
    outcome = await call(make(), "check_availability", date=day)
    assert not outcome.ok
    assert message in outcome.output["error"]
    assert env.emulator.calls("calendar") == 0


async def test_horizon_is_configurable(env: GoogleEnv, make: Make) -> None:
    outcome = await call(make(booking_horizon_days=7), "check_availability", date="2025-03-11")
    assert "at most 7 days ahead" in outcome.output["error"]


# -- schedule_meeting ------------------------------------------------------------------


async def test_booking_creates_the_event(env: GoogleEnv, make: Make) -> None:
    ctx = context("cb-42")
    outcome = await call(
        make(),
        "schedule_meeting",
        ctx,
        date=TUESDAY,
        time="10:00",
        name="Ada  Lovelace",
        email="ada@example.org",
    )
    assert outcome.ok, outcome.output
    result = outcome.output
    assert set(result) == {"status", "eventId", "startTime", "endTime"}
    assert result["status"] == "confirmed"
    assert result["startTime"] == "2025-03-04T10:00:00-05:00"
    assert result["endTime"] == "2025-03-04T10:30:00-05:00"
    event = env.calendar.events[result["eventId"]]
    assert event.summary == "Appointment - Ada Lovelace"
    assert event.body["start"] == {
        "dateTime": "2025-03-04T10:00:00-05:00",
        "timeZone": "America/New_York",
    }
    assert event.body["end"]["timeZone"] == "America/New_York"
    assert (event.end - event.start).total_seconds() == 1800
    assert f"Phone: {CALLEE}" in event.description  # defaults to the number being called
    assert "Email: ada@example.org" in event.description
    assert "callbackId: cb-42" in event.description
    assert "10:00" not in await slots(make(), TUESDAY)


async def test_booking_uses_the_given_phone_and_appointment_length(
    env: GoogleEnv, make: Make
) -> None:
    outcome = await call(
        make(appointment_minutes=60),
        "schedule_meeting",
        date=TUESDAY,
        time="11:00",
        name="Grace",
        phone="+44 20 7946 0000",
    )
    assert outcome.output["endTime"] == "2025-03-04T12:00:00-05:00"
    event = env.calendar.events[outcome.output["eventId"]]
    assert "Phone: +44 20 7946 0000" in event.description


async def test_the_same_booking_twice_in_a_call_returns_the_first_event(
    env: GoogleEnv, make: Make
) -> None:
    registry, ctx = make(), context("cb-7")
    args = {"date": TUESDAY, "time": "14:00", "name": "Alan Turing"}
    first = await call(registry, "schedule_meeting", ctx, **args)
    second = await call(registry, "schedule_meeting", ctx, **args)
    both = await asyncio.gather(
        *(call(registry, "schedule_meeting", ctx, **args) for _ in range(2))
    )
    assert first.ok and second.output == first.output
    assert all(o.output == first.output for o in both)
    assert inserts(env) == 1 and len(env.calendar.events) == 1


async def test_a_retry_after_a_lost_answer_finds_the_calls_own_event(
    env: GoogleEnv, make: Make
) -> None:
    args = {"date": TUESDAY, "time": "15:00", "name": "Alan Turing"}
    first = await call(make(), "schedule_meeting", context("cb-8"), **args)
    # A new process (empty memo) retrying the same call's booking.
    again = await call(make(), "schedule_meeting", context("cb-8"), **args)
    assert again.ok and again.output == first.output
    assert inserts(env) == 1
    other = await call(make(), "schedule_meeting", context("cb-9"), **args)
    assert "already taken" in other.output["error"]


async def test_a_booked_slot_is_refused(env: GoogleEnv, make: Make) -> None:
    env.calendar.add_event(local(2025, 3, 4, 9, 45), local(2025, 3, 4, 10, 15), "Walk-in")
    for time in ("09:30", "10:00"):
        outcome = await call(make(), "schedule_meeting", date=TUESDAY, time=time, name="Bob")
        assert not outcome.ok
        assert outcome.output["error"].startswith(f"{time} on {TUESDAY} is already taken")
    assert inserts(env) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"date": "2025-03-09", "time": "10:00"}, "closed on Sundays"),
        ({"date": "2025-03-08", "time": "20:00"}, "outside working hours"),
        ({"date": TUESDAY, "time": "08:30"}, "outside working hours"),
        ({"date": TUESDAY, "time": "09:10"}, "start every 30 minutes"),
        ({"date": "2025-03-03", "time": "06:30"}, "outside working hours"),
        ({"date": "2025-03-01", "time": "10:00"}, "in the past"),
        ({"date": "2025-07-01", "time": "10:00"}, "at most 90 days ahead"),
        ({"date": TUESDAY, "time": "10:00", "email": "not-an-address"}, "not a valid email"),
        ({"date": TUESDAY, "time": "10:00", "name": "   "}, "A name is needed"),
        ({"date": TUESDAY, "time": "ten"}, "invalid arguments: time"),
    ],
)
async def test_booking_refusals(
    env: GoogleEnv, make: Make, args: dict[str, str], message: str
) -> None:
    outcome = await call(make(), "schedule_meeting", **{"name": "Bob", **args})
    assert not outcome.ok
    assert message in outcome.output["error"]
    assert env.emulator.calls("calendar") == 0


async def test_past_times_today_are_refused(env: GoogleEnv, make: Make) -> None:
    registry = make(now=local(2025, 3, 4, 13, 10))
    late = await call(registry, "schedule_meeting", date=TUESDAY, time="13:00", name="Bob")
    assert "already passed" in late.output["error"]
    ok = await call(registry, "schedule_meeting", date=TUESDAY, time="13:30", name="Bob")
    assert ok.ok


async def test_working_days_and_hours_are_configurable(env: GoogleEnv, make: Make) -> None:
    registry = make(working_days="sun", workday_start_hour=8, workday_end_hour=12)
    sunday = await call(registry, "schedule_meeting", date="2025-03-09", time="08:00", name="Bob")
    assert sunday.ok, sunday.output
    monday = await call(registry, "schedule_meeting", date="2025-03-10", time="09:00", name="Bob")
    assert "closed on Mondays; we are open Sunday" in monday.output["error"]


async def test_two_calls_racing_for_one_slot_book_it_once(env: GoogleEnv, make: Make) -> None:
    registry = make()
    outcomes = await asyncio.gather(
        *(
            call(
                registry,
                "schedule_meeting",
                context(f"cb-{i}", f"+1555000300{i}"),
                date=TUESDAY,
                time="16:00",
                name=f"Caller {i}",
            )
            for i in range(4)
        )
    )
    confirmed = [o for o in outcomes if o.ok]
    assert len(confirmed) == 1
    assert all("already taken" in o.output["error"] for o in outcomes if not o.ok)
    assert len(env.calendar.live_events()) == 1
    assert inserts(env) == 1  # the per-calendar lock: later calls saw the slot busy


async def test_two_processes_racing_for_one_slot_book_it_once(env: GoogleEnv, make: Make) -> None:
    # Separate tool sets (separate locks, as in two processes) both pass the freebusy check;
    # the deterministic event id makes Google accept only one insert.
    first, second = make(apis=env.apis()), make(apis=env.apis())
    env.emulator.hold_freebusy(2)
    outcomes = await asyncio.gather(
        call(first, "schedule_meeting", context("cb-a"), date=TUESDAY, time="17:00", name="A"),
        call(second, "schedule_meeting", context("cb-b"), date=TUESDAY, time="17:00", name="B"),
    )
    assert sorted(o.ok for o in outcomes) == [False, True]
    loser = next(o for o in outcomes if not o.ok)
    assert "already taken" in loser.output["error"]
    assert inserts(env) == 2  # both tried; one got 409 duplicate
    assert len(env.calendar.live_events()) == 1


async def test_a_cancelled_booking_frees_the_slot_again(env: GoogleEnv, make: Make) -> None:
    args = {"date": TUESDAY, "time": "18:00", "name": "Carol"}
    first = await call(make(), "schedule_meeting", context("cb-1"), **args)
    env.calendar.events[first.output["eventId"]].status = "cancelled"
    second = await call(make(), "schedule_meeting", context("cb-2"), **args)
    assert second.ok, second.output
    assert second.output["eventId"] != first.output["eventId"]
    assert len(env.calendar.live_events()) == 1 and len(env.calendar.events) == 2


async def test_a_moved_booking_frees_its_old_slot(env: GoogleEnv, make: Make) -> None:
    args = {"date": TUESDAY, "time": "18:30", "name": "Carol"}
    first = await call(make(), "schedule_meeting", context("cb-1"), **args)
    moved = env.calendar.events[first.output["eventId"]]
    moved.start, moved.end = local(2025, 3, 5, 9, 0), local(2025, 3, 5, 9, 30)
    moved.body["start"] = {"dateTime": "2025-03-05T09:00:00-05:00"}
    second = await call(make(), "schedule_meeting", context("cb-2"), **args)
    assert second.ok and second.output["eventId"] != first.output["eventId"]


# -- failures --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "times", "reason", "message"),
    [
        (401, 3, None, "authorization failed"),
        (403, 1, "forbidden", "permission denied"),
        (403, 1, "rateLimitExceeded", "busy right now"),
        (404, 1, None, "not found or is not shared"),
        (409, 1, None, "rejected the request"),
        (429, 1, None, "busy right now"),
        (500, 1, None, "temporarily unavailable"),
        (503, 1, None, "temporarily unavailable"),
    ],
)
async def test_google_errors_become_error_results(
    env: GoogleEnv, make: Make, status: int, times: int, reason: str | None, message: str
) -> None:
    registry = make()
    env.emulator.fail_next("calendar", status, times=times, reason=reason)
    availability = await call(registry, "check_availability", date=TUESDAY)
    assert not availability.ok
    assert set(availability.output) == {"error"} and message in availability.output["error"]
    env.emulator.fail_next("calendar", status, times=times, reason=reason)
    booking = await call(registry, "schedule_meeting", date=TUESDAY, time="10:00", name="Bob")
    assert not booking.ok and message in booking.output["error"]
    assert len(env.calendar.events) == 0


async def test_a_failed_insert_is_an_error_result(env: GoogleEnv, make: Make) -> None:
    env.emulator.fail_next("calendar", 500, match="POST /calendar/v3/calendars/")
    outcome = await call(make(), "schedule_meeting", date=TUESDAY, time="10:00", name="Bob")
    assert "temporarily unavailable" in outcome.output["error"]
    retry = await call(make(), "schedule_meeting", date=TUESDAY, time="10:00", name="Bob")
    assert retry.ok


async def test_read_only_sharing_refuses_bookings(env: GoogleEnv, make: Make) -> None:
    env.calendar.share(CLIENT_EMAIL, "reader")
    assert (await call(make(), "check_availability", date=TUESDAY)).ok
    outcome = await call(make(), "schedule_meeting", date=TUESDAY, time="10:00", name="Bob")
    assert "permission denied" in outcome.output["error"]


async def test_a_calendar_not_shared_with_the_account(env: GoogleEnv, make: Make) -> None:
    env.calendar.acl.clear()
    outcome = await call(make(), "check_availability", date=TUESDAY)
    assert "not found or is not shared" in outcome.output["error"]


async def test_an_expired_token_is_refreshed_transparently(env: GoogleEnv, make: Make) -> None:
    registry = make()
    await slots(registry, TUESDAY)
    env.emulator.tokens.revoke_all()
    await slots(registry, TUESDAY)
    assert env.emulator.tokens.issued == 2
    await slots(registry, TUESDAY)
    assert env.emulator.tokens.issued == 2  # the credentials object is reused


async def test_a_key_the_token_endpoint_does_not_know(env: GoogleEnv, make: Make) -> None:
    registry = make(apis=env.apis(private_key=other_key()[0]))
    outcome = await call(registry, "check_availability", date=TUESDAY)
    assert "authorization failed" in outcome.output["error"]


async def test_token_endpoint_failure(env: GoogleEnv, make: Make) -> None:
    env.emulator.fail_next("token", 400, reason="invalid_grant", message="Invalid JWT Signature.")
    outcome = await call(make(), "check_availability", date=TUESDAY)
    assert "authorization failed" in outcome.output["error"]


async def test_a_slow_google_times_out_into_an_error(env: GoogleEnv, make: Make) -> None:
    registry = make(apis=env.apis(timeout=0.2))
    await slots(registry, TUESDAY)  # token fetched
    env.emulator.delay_next("calendar", 0.6)
    outcome = await call(registry, "check_availability", date=TUESDAY)
    assert "did not answer in time" in outcome.output["error"]


async def test_unreachable_google(env: GoogleEnv, gateway: TwilioGateway) -> None:
    apis = GoogleApis(
        CLIENT_EMAIL,
        service_key()[0],
        token_uri="http://127.0.0.1:9/token",
        api_base_url="http://127.0.0.1:9",
        timeout=1.0,
    )
    env.clients.append(apis)
    registry = ToolRegistry(
        build_tools(env.settings(), gateway, google=apis, clock=lambda: MONDAY_EARLY)
    )
    outcome = await call(registry, "check_availability", date=TUESDAY)
    assert "cannot be reached" in outcome.output["error"]


def test_token_endpoint_outage_is_not_reported_as_an_authorization_failure() -> None:
    refused = from_refresh_error(
        RefreshError("invalid_grant: bad", {"error": "invalid_grant"}, retryable=False)
    )
    down = from_refresh_error(
        RefreshError("internal_failure: x", {"error": "internal_failure"}, retryable=True)
    )
    assert (refused.status, refused.reason) == (401, "invalid_grant")
    assert (down.status, down.reason) == (503, "internal_failure")
    assert "authorization failed" in google_message("calendar", refused)
    assert "temporarily unavailable" in google_message("calendar", down)
