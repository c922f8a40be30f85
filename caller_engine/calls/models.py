"""Call-control data: the initiate request and the call record."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from caller_engine.calls.transfer import TargetSpec, Transfer
from caller_engine.guardrails.zones import valid_zone
from caller_engine.realtime.names import ProviderName
from caller_engine.results.destinations import url_problem
from caller_engine.tools.names import ToolName

if TYPE_CHECKING:
    from caller_engine.calls.result import CallResult
    from caller_engine.results.state import DeliveryState

CALLBACK_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
# An absolute http(s) URL with a host name or IPv4 address, optional port, path and query.
WEBHOOK_URL_PATTERN = r"^https?://[A-Za-z0-9._~-]+(:[0-9]{1,5})?([/?#][^\s]*)?$"

TERMINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


class AgentOverrides(BaseModel):
    """Per-call agent settings kept with the call for the bridge."""

    model_config = ConfigDict(extra="forbid", strict=True)

    instructions: str | None = Field(None, max_length=20_000)
    voice: str | None = Field(None, min_length=1, max_length=64)
    greeting: str | None = Field(None, max_length=2_000)
    tools: list[ToolName] | None = Field(
        None, max_length=32, description="the subset of this deployment's tools to offer"
    )
    provider: ProviderName | None = Field(
        None, description="the realtime provider of this call; it must be configured here"
    )
    # People the agent may hand the call to; replaces TRANSFER_TARGETS for this call.
    transferTargets: list[TargetSpec] | None = Field(
        None,
        max_length=20,
        description="replaces TRANSFER_TARGETS for this call; names are unique and an entry "
        "without a number names a configured target",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)


class InitiateRequest(BaseModel):
    # Strict: JSON types as documented (no 0 for false, no "1" for true).
    model_config = ConfigDict(extra="ignore", populate_by_name=True, strict=True)

    callback_id: str = Field(alias="callbackId", pattern=CALLBACK_ID_PATTERN)
    to: str = Field(pattern=E164_PATTERN)
    record: bool = False
    agent: AgentOverrides = Field(default_factory=lambda: AgentOverrides())
    result_webhook_url: str | None = Field(
        None,
        alias="resultWebhookUrl",
        max_length=2048,
        pattern=WEBHOOK_URL_PATTERN,
        description="where this call's result is POSTed instead of RESULT_WEBHOOK_URL; "
        "loopback, private and link-local addresses are refused unless the server allows them",
    )
    callee_timezone: str | None = Field(None, alias="calleeTimezone", max_length=64)
    ignore_calling_hours: bool = Field(False, alias="ignoreCallingHours")

    @field_validator("callee_timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is not None and not valid_zone(value):
            raise ValueError("must be an IANA time zone name such as America/New_York")
        return value

    @field_validator("result_webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Validate with `context={"allow_private": True}` to allow inward destinations."""
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL")
        allow_private = bool((info.context or {}).get("allow_private"))
        if not allow_private and (problem := url_problem(value)) is not None:
            raise ValueError(problem)
        return value


# Twilio's AnsweredBy values that mean a machine (or fax), not a person, took the call.
MACHINE_ANSWERS = frozenset(
    {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"}
)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class StatusEvent:
    """One Twilio status callback, reduced to the fields we keep."""

    status: str
    sequence: int | None
    timestamp: str
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class CallRecord:
    callback_id: str
    to: str
    record: bool
    agent: AgentOverrides
    call_sid: str | None = None
    status: str = "pending"
    status_history: list[StatusEvent] = field(default_factory=list)
    answered_by: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration: int | None = None
    recording_url: str | None = None
    recording_sid: str | None = None
    error: dict[str, Any] | None = None
    stream_sid: str | None = None
    stream_started_at: datetime | None = None
    stream_stopped_at: datetime | None = None
    result: CallResult | None = None
    result_webhook_url: str | None = None
    result_source: str | None = None
    delivery: DeliveryState | None = None
    transfer: Transfer | None = None
    callee_timezone: str | None = None  # given at initiate instead of the number's zones
    ignore_calling_hours: bool = False  # calling hours were overridden for this call

    @property
    def is_final(self) -> bool:
        return self.status in TERMINAL_STATUSES


DncSource = Literal["api", "opt_out"]


@dataclass(frozen=True, slots=True)
class DncEntry:
    """A number on the do-not-call list."""

    number: str
    source: DncSource
    reason: str | None = None
    callback_id: str | None = None  # the call it came from (opt-out), or the caller's own id
    created_at: datetime = field(default_factory=utcnow)
