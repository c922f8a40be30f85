"""Two-sided transcript in conversation order. Pure.

Entries are placed where their item entered the conversation (the caller's turn when speech
started, the agent's when its item was added), not when their text arrived: input
transcription often completes after the agent has begun answering.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from caller_engine.calls.result import Role, ToolCallRecord, TranscriptEntry
from caller_engine.realtime.base import HistoryItem

_LABELS = {"agent": "Agent", "user": "User", "dtmf": "User", "system": "Call"}


@dataclass(slots=True)
class _Slot:
    role: Role
    at: float
    item_id: str = ""
    text: str = ""
    interrupted: bool = False
    heard_fraction: float | None = None
    tool: ToolCallRecord | None = None


def heard_part(text: str, fraction: float) -> str:
    """The words of `text` spoken in the first `fraction` of its audio (an estimate by length)."""
    if fraction >= 1:
        return text
    if fraction <= 0:
        return ""
    cut = int(len(text) * fraction)
    head = text[:cut]
    if cut < len(text) and not text[cut].isspace() and " " in head:
        head = head[: head.rindex(" ")]
    return head.rstrip(" ,;:")


class TranscriptCollector:
    def __init__(self) -> None:
        self._slots: list[_Slot] = []
        self._by_item: dict[str, _Slot] = {}
        self.tool_calls: list[ToolCallRecord] = []

    def _slot(self, role: Role, item_id: str, at: float) -> _Slot:
        slot = self._by_item.get(item_id) if item_id else None
        if slot is None:
            slot = _Slot(role, at, item_id)
            self._slots.append(slot)
            if item_id:
                self._by_item[item_id] = slot
        return slot

    def user_item(self, item_id: str, at: float) -> None:
        self._slot("user", item_id, at)

    def user_text(self, item_id: str, text: str, at: float) -> None:
        self._slot("user", item_id, at).text = text.strip()

    def agent_item(self, item_id: str, at: float) -> None:
        self._slot("agent", item_id, at)

    def agent_text(self, item_id: str, text: str, at: float) -> None:
        self._slot("agent", item_id, at).text = text.strip()

    def interrupted(self, item_id: str, heard_ms: int, sent_ms: int) -> None:
        slot = self._by_item.get(item_id)
        if slot is not None:
            slot.interrupted = True
            slot.heard_fraction = heard_ms / sent_ms if sent_ms > 0 else None

    def dtmf(self, digit: str, at: float) -> None:
        self._slots.append(_Slot("dtmf", at, text=digit))

    def system(self, text: str, at: float) -> None:
        """Something that happened to the call itself (a transfer to a person)."""
        self._slots.append(_Slot("system", at, text=text))

    def tool(self, record: ToolCallRecord) -> None:
        self.tool_calls.append(record)
        self._slots.append(_Slot("tool", record.at, text=record.name, tool=record))

    def entries(self) -> list[TranscriptEntry]:
        out: list[TranscriptEntry] = []
        for slot in self._slots:
            text = slot.text
            if slot.role == "agent" and slot.interrupted and slot.heard_fraction is not None:
                text = heard_part(text, slot.heard_fraction)
            if slot.role == "tool" and slot.tool is not None:
                text = f"{slot.tool.name} -> {'ok' if slot.tool.ok else 'error'}"
            if slot.role == "dtmf":
                text = f"pressed {slot.text}"
            if not text and not slot.interrupted:
                continue
            out.append(
                TranscriptEntry(
                    role=slot.role, text=text, at=round(slot.at, 3), interrupted=slot.interrupted
                )
            )
        return out

    def history(self) -> list[HistoryItem]:
        """Finished turns to replay into a fresh model session after a reconnect."""
        items: list[HistoryItem] = []
        for slot in self._slots:
            if slot.role == "user" and slot.text:
                items.append(HistoryItem("user", slot.text))
            elif slot.role == "agent" and slot.text:
                text = slot.text
                if slot.interrupted and slot.heard_fraction is not None:
                    text = heard_part(text, slot.heard_fraction)
                items.append(HistoryItem("assistant", text))
            elif slot.role == "dtmf":
                items.append(HistoryItem("user", f"[The caller pressed {slot.text}]"))
            elif slot.role == "system":
                items.append(HistoryItem("user", f"[{slot.text}]"))
            elif slot.tool is not None and slot.tool.callId:
                tool = slot.tool
                args = (
                    tool.arguments
                    if isinstance(tool.arguments, str)
                    else orjson.dumps(tool.arguments).decode()
                )
                items.append(HistoryItem("tool_call", args, tool.callId, tool.name))
                output = orjson.dumps(tool.output).decode()
                items.append(HistoryItem("tool_output", output, tool.callId, tool.name))
        return items

    def finalize(self, call_sid: str | None, callback_id: str, duration: float) -> dict[str, Any]:
        entries = self.entries()
        lines = [
            f"[{_LABELS[e.role]}]: {e.text}{' [interrupted]' if e.interrupted else ''}"
            for e in entries
            if e.role in _LABELS
        ]
        return {
            "callSid": call_sid,
            "callbackId": callback_id,
            "duration": round(duration, 3),
            "entries": entries,
            "fullText": "\n".join(lines),
        }
