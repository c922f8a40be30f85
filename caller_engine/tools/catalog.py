"""The in-call tools this deployment offers, from settings.

`send_sms` is always offered; the calendar tools need ENABLE_CALENDAR_TOOLS and `send_email`
needs ENABLE_EMAIL_TOOLS. The per-call subset (`agent.tools`) is applied by
`ToolRegistry.select`. Build once per process: the Google credentials live on `GoogleApis`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfoNotFoundError

from caller_engine.config import ConfigError, Settings
from caller_engine.telephony.rest import TwilioGateway
from caller_engine.tools.calendar import CalendarTools
from caller_engine.tools.email import EmailTool
from caller_engine.tools.registry import Tool
from caller_engine.tools.slots import BusinessHours
from caller_engine.tools.sms import SmsTool

if TYPE_CHECKING:
    from caller_engine.tools.google_client import GoogleApis


def _utc_now() -> datetime:
    return datetime.now(UTC)


def build_tools(
    settings: Settings,
    gateway: TwilioGateway,
    *,
    google: GoogleApis | None = None,
    clock: Callable[[], datetime] | None = None,
) -> list[Tool]:
    """The enabled tools. `google` defaults to a client built from the settings."""
    now = clock or _utc_now
    tools: list[Tool] = []
    if (settings.enable_calendar_tools or settings.enable_email_tools) and google is None:
        from caller_engine.tools.google_client import GoogleApis  # ~30 MB: only when used

        google = GoogleApis.from_settings(settings)
    if settings.enable_calendar_tools:
        assert google is not None
        if not settings.google_calendar_id:
            raise ConfigError("GOOGLE_CALENDAR_ID is required when ENABLE_CALENDAR_TOOLS is on")
        try:
            hours = BusinessHours.from_settings(settings)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"BUSINESS_TIMEZONE: unknown time zone {settings.business_timezone!r}"
            ) from None
        tools.extend(CalendarTools(google, settings.google_calendar_id, hours, now).tools())
    tools.append(SmsTool(gateway, allow_any_recipient=settings.sms_allow_any_recipient).tool())
    if settings.enable_email_tools:
        assert google is not None
        if not settings.google_impersonated_user:
            raise ConfigError("GOOGLE_IMPERSONATED_USER is required when ENABLE_EMAIL_TOOLS is on")
        default_name = Settings.model_fields["business_name"].default
        sender_name = settings.business_name if settings.business_name != default_name else None
        tools.append(EmailTool(google, settings.google_impersonated_user, sender_name).tool())
    return tools
