"""Calendar v3 over an in-memory store: freeBusy.query and events insert/list/get/delete.

Access follows calendar sharing: the token's principal (impersonated user, else the service
account) needs a role on the calendar — `freeBusyReader` for freebusy, `reader` to read
events, `writer` to create or delete them; a calendar's own id is its owner. Client-chosen
event ids must be base32hex and unique per calendar, deleted events included (409).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from aiohttp import web

from caller_engine.sim.google.auth import Grant
from caller_engine.sim.google.errors import api_error

ROLES = ("freeBusyReader", "reader", "writer", "owner")
EVENT_ID = re.compile(r"^[a-v0-9]{5,1024}$")
SCOPES_FREEBUSY = frozenset(
    {
        "https://www.googleapis.com/auth/calendar",
        "https://www.googleapis.com/auth/calendar.readonly",
        "https://www.googleapis.com/auth/calendar.freebusy",
        "https://www.googleapis.com/auth/calendar.events.freebusy",
    }
)
SCOPES_READ = frozenset(
    {
        "https://www.googleapis.com/auth/calendar",
        "https://www.googleapis.com/auth/calendar.readonly",
        "https://www.googleapis.com/auth/calendar.events",
        "https://www.googleapis.com/auth/calendar.events.readonly",
    }
)
SCOPES_WRITE = frozenset(
    {
        "https://www.googleapis.com/auth/calendar",
        "https://www.googleapis.com/auth/calendar.events",
    }
)

# Checks the bearer token against accepted scopes: a Grant, or the error answer to return.
Authorize = Callable[[web.Request, frozenset[str]], Grant | web.Response]
Gate = Callable[[], Awaitable[None]]


class BadTime(ValueError):
    pass


def rfc3339(instant: datetime, tz: ZoneInfo | None = None) -> str:
    if tz is None or tz.key == "UTC":
        return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return instant.astimezone(tz).isoformat()


def parse_rfc3339(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadTime(f"Bad date-time: {value}") from None
    if parsed.tzinfo is None:
        raise BadTime(f"Date-time needs an offset: {value}")
    return parsed.astimezone(UTC)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadTime(f"Invalid time zone definition: {name}") from None


def event_time(raw: Any, calendar_tz: str, which: str) -> datetime:
    """An event's start or end (`dateTime` with offset or `timeZone`, or all-day `date`)."""
    if not isinstance(raw, dict):
        raise BadTime(f"Missing {which} time.")
    zone = raw.get("timeZone") or calendar_tz
    if isinstance(raw.get("dateTime"), str):
        text = raw["dateTime"]
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise BadTime(f"Invalid {which} time: {text}") from None
        if parsed.tzinfo is None:
            if not raw.get("timeZone"):
                raise BadTime(f"Missing time zone definition for {which} time.")
            parsed = parsed.replace(tzinfo=_zone(str(zone)))
        return parsed.astimezone(UTC)
    if isinstance(raw.get("date"), str):
        try:
            day = date.fromisoformat(raw["date"])
        except ValueError:
            raise BadTime(f"Invalid {which} date: {raw['date']}") from None
        return datetime.combine(day, time(), _zone(str(zone))).astimezone(UTC)
    raise BadTime(f"Missing {which} time.")


@dataclass
class EmulatedEvent:
    id: str
    calendar_id: str
    start: datetime  # UTC
    end: datetime  # UTC
    body: dict[str, Any]
    creator: str
    status: str = "confirmed"
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def summary(self) -> str:
        return str(self.body.get("summary", ""))

    @property
    def description(self) -> str:
        return str(self.body.get("description", ""))

    @property
    def opaque(self) -> bool:
        return bool(self.body.get("transparency", "opaque") != "transparent")

    def private_properties(self) -> dict[str, Any]:
        props = self.body.get("extendedProperties") or {}
        private = props.get("private") if isinstance(props, dict) else None
        return private if isinstance(private, dict) else {}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "calendar#event",
            "etag": f'"{int(self.updated.timestamp() * 1000)}"',
            "id": self.id,
            "status": self.status,
            "htmlLink": f"https://www.google.com/calendar/event?eid={self.id}",
            "created": rfc3339(self.created),
            "updated": rfc3339(self.updated),
            "creator": {"email": self.creator},
            "organizer": {"email": self.calendar_id, "self": True},
            "iCalUID": f"{self.id}@google.com",
            "sequence": 0,
            "reminders": {"useDefault": True},
            "eventType": "default",
        }
        for key in ("summary", "description", "location", "start", "end", "transparency"):
            if key in self.body:
                out[key] = self.body[key]
        if "extendedProperties" in self.body:
            out["extendedProperties"] = self.body["extendedProperties"]
        return out


@dataclass
class EmulatedCalendar:
    id: str
    timezone: str = "UTC"
    acl: dict[str, str] = field(default_factory=dict)  # principal → role
    events: dict[str, EmulatedEvent] = field(default_factory=dict)

    def share(self, principal: str, role: str = "writer") -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        self.acl[principal] = role

    def role_of(self, principal: str) -> int:
        """Index in ROLES, or -1 without access."""
        if principal == self.id:
            return ROLES.index("owner")
        role = self.acl.get(principal)
        return ROLES.index(role) if role else -1

    def add_event(
        self,
        start: datetime,
        end: datetime,
        summary: str = "Busy",
        *,
        event_id: str | None = None,
        transparent: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> EmulatedEvent:
        """Seed an event directly (as if someone had added it in the calendar UI)."""
        body: dict[str, Any] = {
            "summary": summary,
            "start": {"dateTime": rfc3339(start)},
            "end": {"dateTime": rfc3339(end)},
            **(extra or {}),
        }
        if transparent:
            body["transparency"] = "transparent"
        event = EmulatedEvent(
            event_id or secrets.token_hex(13),
            self.id,
            start.astimezone(UTC),
            end.astimezone(UTC),
            body,
            self.id,
        )
        self.events[event.id] = event
        return event

    def live_events(self) -> list[EmulatedEvent]:
        return sorted(
            (e for e in self.events.values() if e.status != "cancelled"), key=lambda e: e.start
        )

    def busy(self, time_min: datetime, time_max: datetime) -> list[tuple[datetime, datetime]]:
        """Merged busy periods of opaque live events, clipped to the window."""
        spans = sorted(
            (max(e.start, time_min), min(e.end, time_max))
            for e in self.live_events()
            if e.opaque and e.start < time_max and e.end > time_min
        )
        merged: list[tuple[datetime, datetime]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


class CalendarApi:
    def __init__(
        self, calendars: dict[str, EmulatedCalendar], authorize: Authorize, gate: Gate
    ) -> None:
        self.calendars = calendars
        self._authorize = authorize
        self._gate = gate

    def routes(self, app: web.Application) -> None:
        base = "/calendar/v3"
        app.router.add_post(base + "/freeBusy", self.freebusy)
        app.router.add_post(base + "/calendars/{calendarId}/events", self.insert)
        app.router.add_get(base + "/calendars/{calendarId}/events", self.list)
        app.router.add_get(base + "/calendars/{calendarId}/events/{eventId}", self.get)
        app.router.add_delete(base + "/calendars/{calendarId}/events/{eventId}", self.delete)

    def _calendar(
        self, request: web.Request, grant: Grant, role: str
    ) -> EmulatedCalendar | web.Response:
        calendar = self.calendars.get(request.match_info["calendarId"])
        level = calendar.role_of(grant.principal) if calendar else -1
        if calendar is None or level < ROLES.index("freeBusyReader"):
            return api_error(404, "notFound", "Not Found")
        if level < ROLES.index(role):
            if role == "reader":
                return api_error(404, "notFound", "Not Found")
            return api_error(
                403, "requiredAccessLevel", "You need to have writer access to this calendar."
            )
        return calendar

    async def freebusy(self, request: web.Request) -> web.Response:
        grant = self._authorize(request, SCOPES_FREEBUSY)
        if isinstance(grant, web.Response):
            return grant
        body = await _json_body(request)
        if body is None:
            return api_error(400, "parseError", "Parse Error")
        try:
            time_min = parse_rfc3339(str(body.get("timeMin") or ""))
            time_max = parse_rfc3339(str(body.get("timeMax") or ""))
            zone = _zone(str(body.get("timeZone") or "UTC"))
        except BadTime as exc:
            return api_error(400, "invalid", str(exc))
        if time_max <= time_min:
            return api_error(
                400, "timeRangeEmpty", "The specified time range is empty.", domain="calendar"
            )
        await self._gate()
        calendars: dict[str, Any] = {}
        for item in body.get("items") or []:
            cal_id = str(item.get("id", "")) if isinstance(item, dict) else ""
            calendar = self.calendars.get(cal_id)
            if calendar is None or calendar.role_of(grant.principal) < 0:
                calendars[cal_id] = {
                    "errors": [{"domain": "global", "reason": "notFound"}],
                    "busy": [],
                }
                continue
            calendars[cal_id] = {
                "busy": [
                    {"start": rfc3339(s, zone), "end": rfc3339(e, zone)}
                    for s, e in calendar.busy(time_min, time_max)
                ]
            }
        answer = {
            "kind": "calendar#freeBusy",
            "timeMin": rfc3339(time_min),
            "timeMax": rfc3339(time_max),
            "calendars": calendars,
        }
        return web.json_response(answer, dumps=lambda o: orjson.dumps(o).decode())

    async def insert(self, request: web.Request) -> web.Response:
        grant = self._authorize(request, SCOPES_WRITE)
        if isinstance(grant, web.Response):
            return grant
        calendar = self._calendar(request, grant, "writer")
        if isinstance(calendar, web.Response):
            return calendar
        body = await _json_body(request)
        if body is None:
            return api_error(400, "parseError", "Parse Error")
        try:
            start = event_time(body.get("start"), calendar.timezone, "start")
            end = event_time(body.get("end"), calendar.timezone, "end")
        except BadTime as exc:
            return api_error(400, "invalid", str(exc))
        if end <= start:
            return api_error(
                400, "timeRangeEmpty", "The specified time range is empty.", domain="calendar"
            )
        event_id = body.get("id")
        if event_id is None:
            event_id = secrets.token_hex(13)
        elif not isinstance(event_id, str) or not EVENT_ID.match(event_id):
            return api_error(400, "invalid", "Invalid resource id value.")
        elif event_id in calendar.events:
            return api_error(409, "duplicate", "The requested identifier already exists.")
        stored = {k: v for k, v in body.items() if k != "id"}
        event = EmulatedEvent(event_id, calendar.id, start, end, stored, grant.principal)
        calendar.events[event_id] = event
        return web.json_response(event.to_json(), dumps=lambda o: orjson.dumps(o).decode())

    async def list(self, request: web.Request) -> web.Response:
        grant = self._authorize(request, SCOPES_READ)
        if isinstance(grant, web.Response):
            return grant
        calendar = self._calendar(request, grant, "reader")
        if isinstance(calendar, web.Response):
            return calendar
        query = request.query
        try:
            time_min = parse_rfc3339(query["timeMin"]) if "timeMin" in query else None
            time_max = parse_rfc3339(query["timeMax"]) if "timeMax" in query else None
        except BadTime as exc:
            return api_error(400, "invalid", str(exc))
        wanted = [p.partition("=") for p in query.getall("privateExtendedProperty", [])]
        show_deleted = query.get("showDeleted") == "true"
        limit = int(query.get("maxResults", "250"))
        items = []
        for event in sorted(calendar.events.values(), key=lambda e: e.start):
            if event.status == "cancelled" and not show_deleted:
                continue
            if time_min is not None and event.end <= time_min:
                continue
            if time_max is not None and event.start >= time_max:
                continue
            private = event.private_properties()
            if any(str(private.get(k)) != v for k, _, v in wanted):
                continue
            items.append(event.to_json())
        answer = {
            "kind": "calendar#events",
            "summary": calendar.id,
            "timeZone": calendar.timezone,
            "items": items[:limit],
        }
        return web.json_response(answer, dumps=lambda o: orjson.dumps(o).decode())

    async def get(self, request: web.Request) -> web.Response:
        grant = self._authorize(request, SCOPES_READ)
        if isinstance(grant, web.Response):
            return grant
        calendar = self._calendar(request, grant, "reader")
        if isinstance(calendar, web.Response):
            return calendar
        event = calendar.events.get(request.match_info["eventId"])
        if event is None:
            return api_error(404, "notFound", "Not Found")
        return web.json_response(event.to_json(), dumps=lambda o: orjson.dumps(o).decode())

    async def delete(self, request: web.Request) -> web.Response:
        grant = self._authorize(request, SCOPES_WRITE)
        if isinstance(grant, web.Response):
            return grant
        calendar = self._calendar(request, grant, "writer")
        if isinstance(calendar, web.Response):
            return calendar
        event = calendar.events.get(request.match_info["eventId"])
        if event is None:
            return api_error(404, "notFound", "Not Found")
        if event.status == "cancelled":
            return api_error(410, "deleted", "Resource has been deleted")
        event.status = "cancelled"
        event.updated = datetime.now(UTC)
        return web.Response(status=204)
