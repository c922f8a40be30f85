"""Settings read from the environment and `.env`, validated once at start."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from caller_engine.calls.transfer import (
    TargetError,
    TransferTarget,
    merge_configured,
    parse_targets,
    parse_targets_file,
)
from caller_engine.guardrails.hours import CallingWindow, WindowError
from caller_engine.results.destinations import url_problem

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# Realtime providers this build can use, each with the settings it cannot run without.
PROVIDER_CREDENTIALS: dict[str, tuple[str, ...]] = {
    "openai": ("openai_api_key",),
    "nova_sonic": ("aws_access_key_id", "aws_secret_access_key"),
    "gemini": ("gemini_api_key",),
    "elevenlabs": ("elevenlabs_agent_id",),
}
GEMINI_LIVE_URL = (
    "wss://generativelanguage.googleapis.com/ws/"
    "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
)


class ConfigError(Exception):
    """Raised with one message that names every missing or invalid variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,  # `NAME=` (as in .env.example) means the default
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    # Server
    port: int = Field(5050, ge=1, le=65535)
    host: str = "0.0.0.0"
    environment: Literal["development", "production"] = "development"
    base_url: str
    log_level: str = "INFO"
    drain_timeout: float = Field(280.0, ge=0)
    metrics_port: int | None = Field(None, ge=1, le=65535)
    media_capture_dir: str | None = None  # caller audio captures for replay; off when unset

    # Security
    api_key: str | None = None
    twilio_validate_signatures: bool = True
    stream_token_secret: str | None = None

    # Realtime model
    realtime_provider: str = "openai"
    realtime_fallback: str = ""  # ordered providers a call moves to when its provider fails
    openai_api_key: str | None = None
    openai_realtime_model: str = "gpt-realtime"
    openai_realtime_url: str = "wss://api.openai.com/v1/realtime"
    openai_realtime_auth_header: str = "Authorization"
    openai_voice: str = "marin"
    openai_base_url: str | None = None
    openai_transcription_model: str = "gpt-4o-mini-transcribe"
    # Amazon Nova Sonic on Bedrock
    aws_region: str = "us-east-1"
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    nova_sonic_model_id: str = "amazon.nova-2-sonic-v1:0"
    nova_sonic_voice: str = "tiffany"
    bedrock_runtime_url: str | None = None  # https://bedrock-runtime.{region}.amazonaws.com
    nova_sonic_renew_after: float = Field(360.0, ge=1, le=450)  # the service ends at 480 s
    # ElevenLabs Agents
    elevenlabs_agent_id: str | None = None
    elevenlabs_api_key: str | None = None  # set: open a signed URL fetched with it
    elevenlabs_api_url: str = "https://api.elevenlabs.io"
    summary_model: str = "gpt-4o-mini"
    gemini_api_key: str | None = None
    gemini_live_url: str = GEMINI_LIVE_URL
    gemini_model: str = "gemini-3.8-live"
    gemini_voice: str = "Kore"
    gemini_input_rate: Literal[8000, 16000] = 16000
    gemini_api_base_url: str = "https://generativelanguage.googleapis.com"
    gemini_summary_model: str = "gemini-2.5-flash"
    summary_provider: Literal["openai", "gemini"] | None = None
    vad_type: Literal["server_vad", "semantic_vad"] = "server_vad"
    vad_threshold: float = Field(0.5, ge=0, le=1)
    vad_silence_ms: int = Field(500, ge=0)
    vad_prefix_ms: int = Field(300, ge=0)
    vad_interrupt_response: bool = True
    noise_reduction: Literal["near_field", "far_field", "off"] = "near_field"
    prewarm_timeout: float = Field(15.0, gt=0)
    playback_mark_ms: int = Field(200, ge=0, le=2000)
    system_prompt: str | None = None
    business_name: str = "our office"
    business_type: str = "business"
    business_services: str = ""

    # Twilio
    twilio_account_sid: str
    twilio_auth_token: str
    twilio_phone_number: str
    twilio_api_base_url: str | None = None
    call_time_limit: int = Field(300, ge=10, le=14400)
    voicemail_action: Literal["hangup", "message"] = "hangup"
    voicemail_message: str = ""

    # Hand-off to a person (transfer_call)
    transfer_targets: str = ""  # name=+E164,name=+E164
    transfer_targets_file: str | None = None  # JSON list of {name, number, description}
    transfer_hold_music_url: str | None = None
    transfer_ring_timeout: int = Field(20, ge=5, le=600)
    transfer_whisper_timeout: int = Field(6, ge=1, le=60)
    transfer_time_limit: int = Field(14_400, ge=60, le=86_400)
    _transfer_targets: list[TransferTarget] = PrivateAttr(default_factory=list)

    # Call records and result delivery to the orchestrator
    database_url: str = "sqlite:///./caller_engine.db"
    result_webhook_url: str | None = None
    result_webhook_secret: str | None = None
    # Lets results go to loopback/private/link-local receivers (on-premises, development).
    result_webhook_allow_private: bool = False
    delivery_retry_period: float = Field(86_400.0, gt=0)
    delivery_backoff_base: float = Field(2.0, gt=0)
    delivery_backoff_cap: float = Field(600.0, gt=0)
    delivery_poll_interval: float = Field(2.0, gt=0)
    delivery_timeout: float = Field(10.0, gt=0)
    delivery_lease: float = Field(60.0, gt=0)
    delivery_concurrency: int = Field(8, ge=1, le=100)
    result_grace: float = Field(600.0, gt=0)
    # Writes kept in memory while the database is unavailable (stream events, results, ...).
    pending_writes_limit: int = Field(5_000, ge=1)

    # Dialing guardrails (callee's local time; a per-number cap in a rolling window)
    calling_hours: str = "08:00-21:00"
    calling_days: str = ",".join(WEEKDAYS)
    allow_calling_hours_override: bool = False
    max_calls_per_number: int = Field(3, ge=0)
    frequency_window: float = Field(86_400.0, gt=0)

    # Google tools
    enable_calendar_tools: bool = False
    enable_email_tools: bool = False
    google_client_email: str | None = None
    google_private_key: str | None = None
    google_calendar_id: str | None = None
    google_impersonated_user: str | None = None
    google_api_base_url: str | None = None
    google_token_uri: str = "https://oauth2.googleapis.com/token"
    business_timezone: str = "America/New_York"
    workday_start_hour: int = Field(9, ge=0, le=23)
    workday_end_hour: int = Field(20, ge=1, le=24)
    working_days: str = "mon,tue,wed,thu,fri,sat"
    booking_horizon_days: int = Field(90, ge=1)
    appointment_minutes: int = Field(30, ge=5, le=480)
    sms_allow_any_recipient: bool = False

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as https://calls.example.com")
        return value

    @field_validator("twilio_phone_number")
    @classmethod
    def _e164(cls, value: str) -> str:
        if not E164.match(value):
            raise ValueError("must be an E.164 number such as +15551234567")
        return value

    @field_validator("working_days")
    @classmethod
    def _days(cls, value: str) -> str:
        days = [d.strip().lower()[:3] for d in value.split(",") if d.strip()]
        unknown = [d for d in days if d not in WEEKDAYS]
        if unknown or not days:
            raise ValueError(f"must list days among {','.join(WEEKDAYS)}")
        return ",".join(days)

    @field_validator("calling_hours")
    @classmethod
    def _calling_hours(cls, value: str) -> str:
        try:
            CallingWindow.parse(value)
        except WindowError as exc:
            raise ValueError(str(exc)) from None
        return value.strip()

    @field_validator("calling_days")
    @classmethod
    def _calling_days(cls, value: str) -> str:
        try:
            window = CallingWindow.parse("00:00-24:00", value)
        except WindowError as exc:
            raise ValueError(str(exc)) from None
        return ",".join(WEEKDAYS[d] for d in sorted(window.days))

    @field_validator("frequency_window", mode="before")
    @classmethod
    def _frequency_window(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("realtime_provider")
    @classmethod
    def _provider(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in PROVIDER_CREDENTIALS:
            raise ValueError(f"must be one of {', '.join(PROVIDER_CREDENTIALS)}")
        return value

    @field_validator("realtime_fallback")
    @classmethod
    def _fallback(cls, value: str) -> str:
        names = [n.strip().lower() for n in value.split(",") if n.strip()]
        unknown = [n for n in names if n not in PROVIDER_CREDENTIALS]
        if unknown:
            raise ValueError(
                f"unknown provider {', '.join(unknown)} (one of {', '.join(PROVIDER_CREDENTIALS)})"
            )
        return ",".join(dict.fromkeys(names))

    @field_validator(
        "openai_api_key",
        "gemini_api_key",
        "elevenlabs_agent_id",
        "aws_access_key_id",
        "aws_secret_access_key",
    )
    @classmethod
    def _credential(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A provider's credential is required when it is selected or a fallback."""
        value = value or None
        if value is not None:
            return value
        primary = info.data.get("realtime_provider")
        fallback = (info.data.get("realtime_fallback") or "").split(",")
        for provider, fields in PROVIDER_CREDENTIALS.items():
            if info.field_name not in fields:
                continue
            if provider == primary:
                raise ValueError(f"required when REALTIME_PROVIDER={provider}")
            if provider in fallback:
                raise ValueError(f"required when REALTIME_FALLBACK lists {provider}")
        return value

    @field_validator("elevenlabs_api_url")
    @classmethod
    def _elevenlabs_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as https://api.elevenlabs.io")
        return value

    @field_validator("gemini_input_rate", mode="before")
    @classmethod
    def _input_rate(cls, value: Any) -> Any:
        """From the environment the rate is a string; the choice is between numbers."""
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("summary_provider", mode="before")
    @classmethod
    def _summary_provider_set(cls, value: Any) -> Any:
        return value.strip().lower() or None if isinstance(value, str) else value

    @field_validator("summary_provider")
    @classmethod
    def _summary_provider(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not info.data.get(f"{value}_api_key"):
            raise ValueError(f"{value.upper()}_API_KEY is required when SUMMARY_PROVIDER={value}")
        return value

    @field_validator("api_key")
    @classmethod
    def _api_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("environment") == "production" and not value:
            raise ValueError("required in production")
        return value

    @field_validator("twilio_validate_signatures")
    @classmethod
    def _signatures(cls, value: bool, info: ValidationInfo) -> bool:
        if info.data.get("environment") == "production" and not value:
            raise ValueError("cannot be off in production")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return _check_database_url(value)

    @field_validator("result_webhook_url")
    @classmethod
    def _result_webhook_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        return value.strip()

    @model_validator(mode="after")
    def _result_webhook_destination(self) -> Settings:
        url = self.result_webhook_url
        if url and not self.result_webhook_allow_private and (problem := url_problem(url)):
            raise ValueError(f"RESULT_WEBHOOK_URL: {problem}")
        return self

    @field_validator("result_webhook_secret")
    @classmethod
    def _result_webhook_secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        value = value or None
        production = info.data.get("environment") == "production"
        if production and not value and info.data.get("result_webhook_url"):
            raise ValueError("required in production when RESULT_WEBHOOK_URL is set")
        return value

    @field_validator("delivery_lease")
    @classmethod
    def _delivery_lease(cls, value: float, info: ValidationInfo) -> float:
        if value <= info.data.get("delivery_timeout", 0):
            raise ValueError("must be longer than DELIVERY_TIMEOUT")
        return value

    @field_validator("workday_end_hour")
    @classmethod
    def _workday(cls, value: int, info: ValidationInfo) -> int:
        if value <= info.data.get("workday_start_hour", 0):
            raise ValueError("must be later than WORKDAY_START_HOUR")
        return value

    @field_validator(
        "google_client_email",
        "google_private_key",
        "google_calendar_id",
        "google_impersonated_user",
    )
    @classmethod
    def _google(cls, value: str | None, info: ValidationInfo) -> str | None:
        calendar = info.data.get("enable_calendar_tools", False)
        email = info.data.get("enable_email_tools", False)
        needed = {
            "google_client_email": calendar or email,
            "google_private_key": calendar or email,
            "google_calendar_id": calendar,
            "google_impersonated_user": email,
        }[info.field_name or ""]
        if needed and not value:
            raise ValueError("required when the Google tools that use it are enabled")
        if info.field_name == "google_private_key" and value:
            return value.replace("\\n", "\n")
        return value

    @field_validator("transfer_hold_music_url")
    @classmethod
    def _hold_music(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL of an audio file")
        return value

    @model_validator(mode="after")
    def _targets(self) -> Settings:
        try:
            from_file: list[TransferTarget] = []
            if self.transfer_targets_file:
                try:
                    with open(self.transfer_targets_file, encoding="utf-8") as f:
                        text = f.read()
                except OSError as exc:
                    raise TargetError(f"cannot be read ({exc.strerror})") from None
                try:
                    from_file = parse_targets_file(text)
                except TargetError as exc:
                    raise TargetError(f"TRANSFER_TARGETS_FILE: {exc}") from None
            from_env = parse_targets(self.transfer_targets)
        except TargetError as exc:
            message = str(exc)
            prefix = "" if message.startswith("TRANSFER_TARGETS_FILE") else "TRANSFER_TARGETS: "
            if "cannot be read" in message:
                prefix = "TRANSFER_TARGETS_FILE: "
            raise ValueError(prefix + message) from None
        self._transfer_targets = merge_configured(from_env, from_file)
        return self

    # Derived values

    @property
    def configured_providers(self) -> tuple[str, ...]:
        """Providers whose credentials are all set (a call may pick any of them)."""
        return tuple(
            name
            for name, fields in PROVIDER_CREDENTIALS.items()
            if all(getattr(self, f, None) for f in fields)
        )

    @property
    def summary_backend(self) -> str | None:
        """Who writes post-call summaries: SUMMARY_PROVIDER, else OpenAI when its key is set,
        else Gemini when its key is; None without either."""
        if self.summary_provider is not None:
            return self.summary_provider
        if self.openai_api_key:
            return "openai"
        return "gemini" if self.gemini_api_key else None

    def provider_chain(self, primary: str | None = None) -> tuple[str, ...]:
        """The providers a call tries in order: its own, then the fallbacks."""
        first = primary or self.realtime_provider
        rest = [n for n in self.realtime_fallback.split(",") if n and n != first]
        return (first, *rest)

    @property
    def bedrock_url(self) -> str:
        url = self.bedrock_runtime_url or f"https://bedrock-runtime.{self.aws_region}.amazonaws.com"
        return url.rstrip("/")

    @property
    def configured_transfer_targets(self) -> list[TransferTarget]:
        """TRANSFER_TARGETS_FILE's targets with TRANSFER_TARGETS' over them."""
        return list(self._transfer_targets)

    def public_url(self, path: str) -> str:
        """Public http(s) URL of a path on this service."""
        return self.base_url + "/" + path.lstrip("/")

    def public_ws_url(self, path: str) -> str:
        """Public ws(s) URL of a path: https becomes wss, http becomes ws."""
        parts = urlsplit(self.public_url(path))
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))

    @property
    def stream_secret(self) -> bytes:
        """Key for per-call stream tokens; derived from the auth token when not set."""
        if self.stream_token_secret:
            return self.stream_token_secret.encode()
        return hmac.new(
            self.twilio_auth_token.encode(), b"caller-engine/stream-token", hashlib.sha256
        ).digest()

    @property
    def calling_window(self) -> CallingWindow:
        return CallingWindow.parse(self.calling_hours, self.calling_days)

    @property
    def working_weekdays(self) -> frozenset[int]:
        return frozenset(WEEKDAYS.index(d) for d in self.working_days.split(","))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration(value: str) -> float:
    """Seconds from `86400`, `90s`, `30m`, `24h` or `7d`."""
    match = _DURATION.match(value)
    if match is None:
        raise ValueError("must be seconds or a number with s, m, h or d (e.g. 24h)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]


def _check_database_url(value: str) -> str:
    value = value.strip()
    scheme = value.partition(":")[0].partition("+")[0].lower()
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ValueError("must be sqlite:///path/to/file.db or postgresql://user@host/db")
    return value


class DatabaseSettings(BaseSettings):
    """Just DATABASE_URL, for maintenance commands that need no other configuration."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    database_url: str = "sqlite:///./caller_engine.db"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return _check_database_url(value)


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"]).upper()
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            lines.append(f"  {loc}: missing")
        elif not loc:
            lines.extend(f"  {part}" for part in msg.split("; "))
        else:
            lines.append(f"  {loc}: {msg}")
    return "invalid configuration:\n" + "\n".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Read settings; raise ConfigError naming every problem at once."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
