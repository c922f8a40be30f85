"""Hand-off to a person: who may be reached, and what became of a transfer. Pure.

Targets come from configuration (`TRANSFER_TARGETS`, `TRANSFER_TARGETS_FILE`) and from the
initiate body (`agent.transferTargets`); the model only ever names one of them. A per-call
list replaces the configured one for that call; an entry without a number refers to a
configured target by name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

E164_PATTERN = r"^\+[1-9]\d{6,14}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"

TransferStatus = Literal[
    "ringing", "connected", "no-answer", "busy", "declined", "failed", "canceled"
]
FINAL_STATUSES: frozenset[str] = frozenset(
    {"connected", "no-answer", "busy", "declined", "failed", "canceled"}
)


class TransferTarget(BaseModel):
    """A person or team the agent may hand a call to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    number: str = Field(pattern=E164_PATTERN)
    description: str | None = Field(None, max_length=300)


class TargetSpec(BaseModel):
    """An entry of `agent.transferTargets`: a full target, or the name of a configured one."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    number: str | None = Field(None, pattern=E164_PATTERN)
    description: str | None = Field(None, max_length=300)


class Transfer(BaseModel):
    """One transfer of a call, as kept in the record and reported in the result."""

    target: str
    number: str
    reason: str = ""
    summary: str = ""
    status: TransferStatus = "ringing"
    requestedAt: str
    connectedAt: str | None = None
    endedAt: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


class TargetError(ValueError):
    """A target list that cannot be used; the message names the problem."""


def parse_targets(text: str, descriptions: Mapping[str, str] | None = None) -> list[TransferTarget]:
    """`sales=+15551230001,support=+15551230002` into targets (descriptions by name)."""
    descriptions = descriptions or {}
    targets: list[TransferTarget] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, number = (s.strip() for s in part.partition("="))
        if not sep:
            raise TargetError(f"'{part}' is not name=+number")
        try:
            targets.append(
                TransferTarget(name=name, number=number, description=descriptions.get(name))
            )
        except ValidationError:
            raise TargetError(
                f"'{part}': a name (letters, digits, _ . -) and an E.164 number"
            ) from None
    return _unique(targets)


def parse_targets_file(text: str) -> list[TransferTarget]:
    """A JSON list of {name, number, description} (or an object of name → entry)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TargetError(f"not JSON: {exc.msg}") from None
    if isinstance(data, dict):
        data = [{"name": name, **(entry or {})} for name, entry in data.items()]
    if not isinstance(data, list):
        raise TargetError("must be a JSON list of {name, number, description}")
    targets: list[TransferTarget] = []
    for entry in data:
        try:
            targets.append(TransferTarget.model_validate(entry))
        except ValidationError as exc:
            field = ".".join(str(p) for p in exc.errors()[0]["loc"])
            raise TargetError(f"entry {entry!r}: invalid {field or 'entry'}") from None
    return targets


def merge_configured(
    from_env: Iterable[TransferTarget], from_file: Iterable[TransferTarget]
) -> list[TransferTarget]:
    """The configured targets: the file's, then the variable's (which fill in or replace
    the number; a description comes from the file when the variable has none)."""
    merged: dict[str, TransferTarget] = {t.name: t for t in from_file}
    for target in from_env:
        described = target.description or (
            merged[target.name].description if target.name in merged else None
        )
        merged[target.name] = target.model_copy(update={"description": described})
    return list(merged.values())


def call_targets(
    configured: Iterable[TransferTarget], per_call: Iterable[TargetSpec] | None
) -> list[TransferTarget]:
    """The targets of one call. Raises TargetError for a name-only entry that names no
    configured target."""
    known = {t.name: t for t in configured}
    if per_call is None:
        return list(known.values())
    targets: list[TransferTarget] = []
    for spec in per_call:
        if spec.number is None:
            if spec.name not in known:
                raise TargetError(f"'{spec.name}' is not a configured transfer target")
            base = known[spec.name]
            targets.append(
                base.model_copy(update={"description": spec.description or base.description})
            )
        else:
            targets.append(TransferTarget(**spec.model_dump()))
    return _unique(targets)


def _unique(targets: list[TransferTarget]) -> list[TransferTarget]:
    seen: set[str] = set()
    for target in targets:
        if target.name in seen:
            raise TargetError(f"'{target.name}' is listed twice")
        seen.add(target.name)
    return targets


def dial_outcome(dial_call_status: str, accepted: bool) -> TransferStatus:
    """What a `<Dial>` ended as: Twilio's DialCallStatus, and whether the person who
    answered pressed 1 at the whisper (an answered leg that never accepted is a voicemail
    or a person who declined)."""
    if accepted and dial_call_status in ("completed", "answered"):
        return "connected"
    if dial_call_status in ("completed", "answered"):
        return "declined"
    if dial_call_status in ("busy", "no-answer", "failed", "canceled"):
        return dial_call_status  # type: ignore[return-value]
    return "failed"
