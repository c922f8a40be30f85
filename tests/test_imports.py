"""What the server loads: a deployment pays in memory only for what it uses."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ACCOUNT_SID, API_KEY, AUTH_TOKEN, PUBLIC_BASE

# Loaded only when their feature is configured: the Google client (calendar or email tools),
# audio conversion (providers that do not take μ-law), the HTTP/2 stack (Nova Sonic),
# SQLAlchemy's ORM (PostgreSQL), the emulators (simulate, replay, bench).
# The command line's definitions of the emulator commands are loaded; the emulators are not.
COMMANDS = (
    "caller_engine.sim.commands",
    "caller_engine.replay.cli",
    "caller_engine.replay.defaults",
)
# Never: the twilio SDK's REST client and the `requests` stack it imports.
OPTIONAL = (
    *("googleapiclient", "google.auth", "numpy", "soxr", "h2", "sqlalchemy.orm", "openai"),
    *("twilio.rest", "requests"),
)

PROBE = """
import sys
from caller_engine.cli import build_parser
build_parser()
import caller_engine.server
from caller_engine.config import load_settings
from caller_engine.web.app import create_app
create_app(load_settings(**{settings!r}))
optional = {optional!r}
loaded = [m for m in optional if m in sys.modules]
commands = {commands!r}
loaded += [
    m for m in sys.modules
    if m.startswith(("caller_engine.sim.", "caller_engine.replay.")) and m not in commands
]
print(",".join(sorted(loaded)))
"""


def test_the_server_with_openai_loads_no_optional_module() -> None:
    settings = {"_env_file": None, "database_url": "sqlite:///:memory:"}
    settings.update(
        base_url=PUBLIC_BASE,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_phone_number="+15550001111",
        openai_api_key="sk-test",
        api_key=API_KEY,
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE.format(optional=OPTIONAL, commands=COMMANDS, settings=settings),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.stdout.strip() == ""
