"""The OpenAPI document: current, complete, and consistent with what the code accepts."""

from __future__ import annotations

from pathlib import Path

from caller_engine.config import load_settings
from caller_engine.tools.catalog import build_tools
from caller_engine.tools.end_call import END_CALL
from caller_engine.tools.names import TOOL_NAMES
from caller_engine.tools.opt_out import OPT_OUT
from caller_engine.tools.transfer import NAME as TRANSFER_CALL
from caller_engine.web.app import create_app
from caller_engine.web.openapi import OPERATIONS, render
from tests.conftest import make_settings

# Endpoints for Twilio, not for the orchestrator: signed by Twilio, not in the document.
TWILIO_FACING = {
    ("GET", "/twiml/outbound"),
    ("POST", "/twiml/outbound"),
    ("GET", "/media-stream"),
    ("GET", "/media-stream/{callbackId}"),
    ("POST", "/webhooks/call-status"),
    ("POST", "/webhooks/amd"),
    ("POST", "/twiml/transfer/whisper"),
    ("POST", "/twiml/transfer/screen"),
    ("POST", "/twiml/transfer/done"),
}


def test_openapi_json_is_current() -> None:
    committed = (Path(__file__).parent.parent / "openapi.json").read_bytes()
    assert committed == render(), "regenerate: caller-engine openapi --output openapi.json"


def test_every_orchestrator_route_is_documented() -> None:
    app = create_app(make_settings())
    routes = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    documented = {(op.method.upper(), op.path) for op in OPERATIONS}
    assert routes - TWILIO_FACING == documented


def test_documented_tool_names_are_the_tools_the_engine_has() -> None:
    from caller_engine.sim.google.keys import new_service_account_key

    private_pem, _ = new_service_account_key(1024)
    settings = load_settings(
        **{
            **make_settings().model_dump(),
            "enable_calendar_tools": True,
            "enable_email_tools": True,
            "google_client_email": "svc@project.iam.gserviceaccount.com",
            "google_private_key": private_pem,
            "google_calendar_id": "desk@example.com",
            "google_impersonated_user": "desk@example.com",
        }
    )
    tools = [*build_tools(settings, gateway=None), END_CALL, OPT_OUT]  # type: ignore[arg-type]
    # transfer_call is offered per call, to the call's transfer targets.
    assert {t.name for t in tools} | {TRANSFER_CALL} == TOOL_NAMES
