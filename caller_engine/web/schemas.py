"""The shapes of the orchestrator API's answers, as pydantic models.

The handlers answer with these shapes and the OpenAPI document (web/openapi.py) is generated
from them, next to the request models (calls/models.py) that validate what comes in.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from caller_engine.calls.models import (
    CALLBACK_ID_PATTERN,
    E164_PATTERN,
    AgentOverrides,
    DncSource,
)
from caller_engine.calls.result import CallResult
from caller_engine.calls.transfer import Transfer
from caller_engine.results.state import DeliveryStatus

Timestamp = str  # UTC ISO 8601 with a Z
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"  # unpadded URL-safe base64
RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldError(_Answer):
    field: str = Field(description="dotted path of the offending field or parameter")
    message: str


class ErrorDetail(_Answer):
    code: str = Field(description="stable, machine-readable")
    message: str = Field(description="one sentence for people")
    fields: list[FieldError] | None = Field(None, description="for invalid input")


class ErrorAnswer(_Answer):
    success: Literal[False]
    error: ErrorDetail


class RefusalDetail(ErrorDetail):
    nextAllowedAt: Timestamp | None = Field(
        None, description="earliest time a retry may be placed (calling hours, frequency cap)"
    )
    calleeTimezones: list[str] | None = Field(
        None, description="the zones the number may be in, when they disagree"
    )


class RefusalAnswer(_Answer):
    """A refused call (do_not_call, outside_calling_hours, frequency_cap) or invalid input."""

    success: Literal[False]
    error: RefusalDetail


class InitiateAnswer(_Answer):
    success: Literal[True]
    callSid: str | None = Field(description="Twilio's CallSid (null while a racing dial runs)")
    status: str = Field(description="the call's status, e.g. queued")
    duplicate: bool = Field(
        False, description="present and true when this callbackId was already dialed"
    )


class DeliveryView(_Answer):
    state: DeliveryStatus
    url: str
    attempts: int
    enqueuedAt: Timestamp | None
    nextAttemptAt: Timestamp | None
    lastAttemptAt: Timestamp | None
    deliveredAt: Timestamp | None
    lastStatus: int | None
    lastError: str | None


class StatusEventView(BaseModel):
    """One Twilio status callback: its status, order and time, and the fields Twilio sent
    with it that we keep (CallDuration, SipResponseCode, AnsweredBy, …) as strings."""

    model_config = ConfigDict(extra="allow")

    status: str
    sequence: int | None
    timestamp: str


class CallView(_Answer):
    callbackId: str
    callSid: str | None
    to: str
    record: bool
    agent: AgentOverrides
    status: str
    statusHistory: list[StatusEventView]
    answeredBy: str | None
    createdAt: Timestamp | None
    answeredAt: Timestamp | None
    streamSid: str | None
    streamStartedAt: Timestamp | None
    streamStoppedAt: Timestamp | None
    endedAt: Timestamp | None
    duration: int | None
    recordingUrl: str | None
    recordingSid: str | None
    error: dict[str, Any] | None
    resultWebhookUrl: str | None
    calleeTimezone: str | None
    ignoreCallingHours: bool
    result: CallResult | None
    resultSource: str | None
    delivery: DeliveryView | None
    transfer: Transfer | None = Field(description="the hand-off to a person, if any")


class CallSummaryView(_Answer):
    callbackId: str
    callSid: str | None
    to: str
    status: str
    answeredBy: str | None
    createdAt: Timestamp | None
    endedAt: Timestamp | None
    duration: int | None
    resultStatus: str | None
    delivery: DeliveryStatus | None


class CallList(_Answer):
    calls: list[CallSummaryView]
    nextCursor: str | None = Field(description="pass as cursor= for the next page")


class CallsQuery(BaseModel):
    """GET /calls query parameters."""

    model_config = ConfigDict(extra="ignore")

    status: str | None = Field(
        None, description="comma-separated statuses to keep, e.g. busy,no-answer"
    )
    since: AwareDatetime | None = Field(
        None, description="only calls created at or after this time (ISO 8601 with offset)"
    )
    limit: int = Field(50, ge=1, le=200, description="page size")

    @field_validator("since", mode="before")
    @classmethod
    def _rfc3339(cls, value: object) -> object:
        """Only an RFC 3339 date-time with an offset (not a number of seconds)."""
        if not isinstance(value, str) or not RFC3339.match(value):
            raise ValueError("an RFC 3339 date-time with offset, e.g. 2025-01-31T09:00:00Z")
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))

    cursor: str | None = Field(
        None, pattern=CURSOR_PATTERN, description="nextCursor of the previous page (opaque)"
    )


class CallPath(BaseModel):
    """GET /calls/{callbackId} path parameters."""

    callbackId: str = Field(pattern=CALLBACK_ID_PATTERN)


class HealthAnswer(_Answer):
    status: Literal["ok", "degraded", "draining"] = Field(
        description="degraded: the database is unreachable (calls in progress go on)"
    )
    timestamp: Timestamp
    uptime: float = Field(description="seconds since start")
    activeCalls: int
    database: Literal["ok", "unavailable"]


class ReadyAnswer(_Answer):
    ready: bool
    database: Literal["ok", "unavailable"]
    draining: bool


class OpenApiDocument(BaseModel):
    model_config = ConfigDict(extra="allow")

    openapi: str


class DncEntryView(_Answer):
    number: str = Field(description="E.164")
    source: DncSource = Field(description="who listed it: the API or the callee (opt_out)")
    reason: str | None
    callbackId: str | None = Field(description="the call it came from, if any")
    createdAt: Timestamp


class DncList(_Answer):
    entries: list[DncEntryView]
    nextCursor: str | None = Field(description="pass as cursor= for the next page")


class DncPath(BaseModel):
    """/dnc/{number} path parameters."""

    number: str = Field(pattern=E164_PATTERN, description="E.164; send + as %2B")


class DncQuery(BaseModel):
    """GET /dnc query parameters."""

    model_config = ConfigDict(extra="ignore")

    limit: int = Field(100, ge=1, le=500, description="page size")
    cursor: str | None = Field(
        None, pattern=CURSOR_PATTERN, description="nextCursor of the previous page (opaque)"
    )
