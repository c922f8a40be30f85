"""The result of one call, as handed to the orchestrator (JSON keys are camelCase)."""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from caller_engine.calls.transfer import Transfer

Role = Literal["agent", "user", "tool", "dtmf", "system"]
FinalStatus = Literal["completed", "voicemail", "busy", "no-answer", "failed", "canceled"]


class TranscriptEntry(BaseModel):
    role: Role
    text: str
    at: float = Field(description="seconds since the stream started")
    interrupted: bool = False


class Summary(BaseModel):
    intent: str
    outcome: str
    nextAction: str
    scheduledDate: str | None
    sentiment: Literal["positive", "neutral", "negative"]


class ToolCallRecord(BaseModel):
    name: str
    callId: str = ""
    arguments: dict[str, Any] | str
    output: dict[str, Any]
    ok: bool
    durationMs: float
    at: float


class CallResult(BaseModel):
    callbackId: str
    callSid: str | None
    to: str | None = None
    status: FinalStatus
    answeredBy: str | None = None
    startedAt: str | None = None
    endedAt: str | None = None
    duration: float | None = Field(None, description="seconds of stream (the agent's part)")
    humanDuration: float | None = Field(
        None, description="seconds the caller talked with a person after a transfer"
    )
    transcript: list[TranscriptEntry] = Field(default_factory=list)
    fullText: str = ""
    summary: Summary | None = None
    summaryError: str | None = None
    statusHistory: list[dict[str, Any]] = Field(default_factory=list)
    recordingUrl: str | None = None
    recordingSid: str | None = None
    toolCalls: list[ToolCallRecord] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    error: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    transfer: Transfer | None = None
    optedOut: bool = Field(False, description="the callee asked not to be called again")


class ResultSink(Protocol):
    """Where finished calls go. The default logs them; the store persists and delivers."""

    async def publish(self, result: CallResult) -> None: ...
