"""Twilio's webhook connection overrides, as the emulated network reads them."""

from __future__ import annotations

from caller_engine.sim.twilio.webhooks import ConnectionOverrides
from caller_engine.telephony.rest import CALLBACK_RETRY


def test_our_callback_urls_ask_for_retries_on_5xx_and_timeouts() -> None:
    overrides = ConnectionOverrides.parse(CALLBACK_RETRY.removeprefix("#"))
    assert overrides.retries == 5 and overrides.total == 15.0
    assert overrides.retry(503, timed_out=False) and overrides.retry(500, timed_out=False)
    assert overrides.retry(None, timed_out=False) and overrides.retry(None, timed_out=True)
    assert not overrides.retry(403, timed_out=False) and not overrides.retry(200, timed_out=False)


def test_twilio_defaults_retry_a_failed_connection_once() -> None:
    default = ConnectionOverrides.parse("")
    assert default.retries == 1 and default.policy == {"ct"}
    assert default.retry(None, timed_out=False)
    assert not default.retry(None, timed_out=True) and not default.retry(503, timed_out=False)
    capped = ConnectionOverrides.parse("rc=9&rp=all&tt=60000")
    assert capped.retries == 5 and capped.total == 15.0 and capped.retry(404, timed_out=False)
