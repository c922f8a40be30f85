from __future__ import annotations

from caller_engine.prompts import build_prompt


def test_prompt_states_goals_capabilities_and_style() -> None:
    text = build_prompt(
        "Bright Dental",
        "dental clinic",
        "Mon–Sat 09:00–20:00",
        "cleanings",
        appointment_minutes=30,
        timezone="America/New_York",
    )
    assert "Bright Dental" in text and "dental clinic" in text
    assert "Primary: book an appointment" in text
    assert "Mon–Sat 09:00–20:00 (America/New_York time)" in text
    assert "30 minutes" in text and "cleanings" in text
    assert "check_availability" in text and "send_sms" in text and "end_call" in text
    assert "At most two sentences" in text
    assert "Greet the person first" in text


def test_prompt_leaves_out_tools_that_are_off() -> None:
    text = build_prompt("X", "shop", "Mon 9–5", calendar=False, sms=False)
    assert "check_availability" not in text and "send_sms" not in text
