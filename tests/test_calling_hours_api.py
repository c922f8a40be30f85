"""Calling hours through POST /call/initiate: refusals an orchestrator can act on."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from caller_engine.sim.twilio.rest import TwilioRestEmulator
from tests.conftest import Api

Twilio = tuple[TwilioRestEmulator, str]
NEW_YORK = "+12125551234"
ALASKA = "+19075551234"  # Anchorage and Adak
TOLL_FREE = "+18005551234"  # every zone of +1


class Clock:
    def __init__(self, *args: int) -> None:
        self.now = datetime(*args, tzinfo=UTC)  # type: ignore[misc]

    def __call__(self) -> datetime:
        return self.now

    def set(self, *args: int) -> None:
        self.now = datetime(*args, tzinfo=UTC)  # type: ignore[misc]


async def _refused(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    resp = await api.initiate(body)
    payload = await resp.json()
    assert resp.status == 422, payload
    assert payload["success"] is False
    error: dict[str, Any] = payload["error"]
    assert error["code"] == "outside_calling_hours"
    return error


async def test_late_evening_is_refused_until_the_next_local_morning(
    api_factory: Callable[..., Any], twilio: Twilio
) -> None:
    # Tuesday 22:00 in New York (03:00 UTC Wednesday).
    api = await api_factory(clock=Clock(2030, 1, 2, 3, 0))
    error = await _refused(api, {"callbackId": "cb-late", "to": NEW_YORK})
    assert error["nextAllowedAt"] == "2030-01-02T13:00:00Z"
    assert error["calleeTimezones"] == ["America/New_York"]
    assert "08:00-21:00" in error["message"]
    assert twilio[0].requests == []
    resp = await api.session.get(api.url("/calls/cb-late"), headers={"X-API-Key": "test-api-key"})
    assert resp.status == 404  # no record of a call
    metrics = await (
        await api.session.get(api.url("/metrics"), headers={"X-API-Key": "test-api-key"})
    ).text()
    assert 'caller_engine_initiate_refused_total{reason="outside_calling_hours"} 1.0' in metrics


async def test_both_sides_of_local_midnight(
    api_factory: Callable[..., Any], twilio: Twilio
) -> None:
    clock = Clock(2030, 1, 2, 4, 59)  # 23:59 in New York
    api = await api_factory(clock=clock)
    error = await _refused(api, {"callbackId": "cb-a", "to": NEW_YORK})
    assert error["nextAllowedAt"] == "2030-01-02T13:00:00Z"
    clock.set(2030, 1, 2, 5, 1)  # 00:01: the same local morning
    error = await _refused(api, {"callbackId": "cb-b", "to": NEW_YORK})
    assert error["nextAllowedAt"] == "2030-01-02T13:00:00Z"
    clock.set(2030, 1, 2, 13, 0)  # 08:00 sharp
    assert (await api.initiate({"callbackId": "cb-c", "to": NEW_YORK})).status == 200
    clock.set(2030, 1, 2, 1, 59)  # 20:59 the evening before
    assert (await api.initiate({"callbackId": "cb-d", "to": NEW_YORK})).status == 200
    assert len(twilio[0].calls) == 2


async def test_dst_switch_day(api_factory: Callable[..., Any]) -> None:
    # 2030-03-10: New York springs forward at 02:00. At 22:00 EST the evening before, the
    # next morning's 08:00 is EDT: 12:00 UTC.
    api = await api_factory(clock=Clock(2030, 3, 10, 3, 0))
    error = await _refused(api, {"callbackId": "cb-dst", "to": NEW_YORK})
    assert error["nextAllowedAt"] == "2030-03-10T12:00:00Z"


async def test_a_multi_zone_region_waits_for_its_last_zone(
    api_factory: Callable[..., Any],
) -> None:
    # 16:30 UTC in June: 08:30 in Anchorage, 07:30 in Adak.
    api = await api_factory(clock=Clock(2030, 6, 12, 16, 30))
    error = await _refused(api, {"callbackId": "cb-ak", "to": ALASKA})
    assert sorted(error["calleeTimezones"]) == ["America/Adak", "America/Anchorage"]
    assert error["nextAllowedAt"] == "2030-06-12T17:00:00Z"
    resp = await api.initiate(
        {"callbackId": "cb-ak", "to": ALASKA, "calleeTimezone": "America/Anchorage"}
    )
    assert resp.status == 200
    record = await api.services.store.get("cb-ak")
    assert record is not None and record.callee_timezone == "America/Anchorage"


async def test_no_common_time_asks_for_the_callee_timezone(
    api_factory: Callable[..., Any],
) -> None:
    api = await api_factory(clock=Clock(2030, 6, 12, 16, 0), calling_hours="09:00-17:00")
    error = await _refused(api, {"callbackId": "cb-800", "to": TOLL_FREE})
    assert error["nextAllowedAt"] is None
    assert "calleeTimezone" in error["message"]
    assert {"Pacific/Guam", "Pacific/Pago_Pago"} <= set(error["calleeTimezones"])
    resp = await api.initiate(
        {"callbackId": "cb-800", "to": TOLL_FREE, "calleeTimezone": "America/Chicago"}
    )
    assert resp.status == 200  # 11:00 in Chicago


async def test_calling_days(api_factory: Callable[..., Any]) -> None:
    # Saturday 12:00 in New York, weekdays only: Monday 09:00 EST.
    api = await api_factory(
        clock=Clock(2030, 1, 5, 17, 0),
        calling_hours="09:00-17:00",
        calling_days="mon,tue,wed,thu,fri",
    )
    error = await _refused(api, {"callbackId": "cb-sat", "to": NEW_YORK})
    assert error["nextAllowedAt"] == "2030-01-07T14:00:00Z"
    assert "09:00-17:00 mon,tue,wed,thu,fri" in error["message"]


async def test_an_unknown_timezone_name_is_a_field_error(api: Api) -> None:
    resp = await api.initiate(
        {"callbackId": "cb-tz", "to": NEW_YORK, "calleeTimezone": "Mars/Base"}
    )
    body = await resp.json()
    assert resp.status == 422 and body["error"]["code"] == "invalid_request"
    assert [f["field"] for f in body["error"]["fields"]] == ["calleeTimezone"]


async def test_the_override_needs_the_server_setting(
    api_factory: Callable[..., Any], twilio: Twilio
) -> None:
    night = Clock(2030, 1, 2, 3, 0)
    body = {"callbackId": "cb-930", "to": NEW_YORK, "ignoreCallingHours": True}
    strict = await api_factory(clock=night)
    error = await _refused(strict, body)
    assert "ALLOW_CALLING_HOURS_OVERRIDE" in error["message"]
    lenient = await api_factory(clock=night, allow_calling_hours_override=True)
    resp = await lenient.initiate(body)
    assert resp.status == 200
    record = await lenient.services.store.get("cb-930")
    assert record is not None and record.ignore_calling_hours is True
    view = await (
        await lenient.session.get(
            lenient.url("/calls/cb-930"), headers={"X-API-Key": "test-api-key"}
        )
    ).json()
    assert view["ignoreCallingHours"] is True and view["calleeTimezone"] is None
    # Without the flag the lenient server still keeps the hours.
    await _refused(lenient, {"callbackId": "cb-931", "to": NEW_YORK})
    assert len(twilio[0].calls) == 1


async def test_a_retry_of_an_accepted_call_stays_a_duplicate_after_hours(
    api_factory: Callable[..., Any], twilio: Twilio
) -> None:
    clock = Clock(2030, 1, 2, 1, 59)  # 20:59 in New York
    api = await api_factory(clock=clock)
    first = await (await api.initiate({"callbackId": "cb-r", "to": NEW_YORK})).json()
    clock.set(2030, 1, 2, 2, 1)  # 21:01
    again = await api.initiate({"callbackId": "cb-r", "to": NEW_YORK})
    body = await again.json()
    assert again.status == 200 and body["duplicate"] is True
    assert body["callSid"] == first["callSid"]
    assert len(twilio[0].calls) == 1


async def test_a_number_no_zone_data_places_is_refused_until_a_zone_is_given(
    api_factory: Callable[..., Any],
) -> None:
    api = await api_factory(clock=Clock(2030, 1, 2, 15, 0))
    error = await _refused(api, {"callbackId": "cb-999", "to": "+999123456789"})
    assert error["nextAllowedAt"] is None and error["calleeTimezones"] == []
    assert "calleeTimezone" in error["message"]
    resp = await api.initiate(
        {"callbackId": "cb-999", "to": "+999123456789", "calleeTimezone": "Europe/Paris"}
    )
    assert resp.status == 200
