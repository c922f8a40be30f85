"""The names of every in-call tool the engine offers (a deployment enables a subset).

A call's `agent.tools` may only name these; a new tool adds its name here.
"""

from __future__ import annotations

from typing import Literal, get_args

ToolName = Literal[
    "check_availability",
    "schedule_meeting",
    "send_sms",
    "send_email",
    "end_call",
    "transfer_call",
    "opt_out",
]
TOOL_NAMES: frozenset[str] = frozenset(get_args(ToolName))
