"""The aiohttp application: routes, shared clients, startup and cleanup."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from caller_engine.calls.service import CallService
from caller_engine.calls.store import CallStore, MemoryCallStore
from caller_engine.config import Settings
from caller_engine.telephony.rest import TwilioGateway
from caller_engine.web import calls, health, media, twiml, webhooks
from caller_engine.web.errors import error_middleware
from caller_engine.web.state import SERVICES, Services

MAX_BODY_BYTES = 256 * 1024


def create_app(settings: Settings, *, store: CallStore | None = None) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY_BYTES)
    app.router.add_get("/health", health.health)
    app.router.add_post("/call/initiate", calls.initiate)
    app.router.add_route("GET", "/twiml/outbound", twiml.outbound)
    app.router.add_route("POST", "/twiml/outbound", twiml.outbound)
    app.router.add_get("/media-stream", media.media_stream)
    app.router.add_get("/media-stream/{callbackId}", media.media_stream)
    app.router.add_post("/webhooks/call-status", webhooks.call_status)
    app.router.add_post("/webhooks/amd", webhooks.amd)

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        # The Twilio client owns an aiohttp session: create it inside the running loop.
        gateway = TwilioGateway(
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            settings.twilio_phone_number,
            base_url=settings.twilio_api_base_url,
        )
        call_store = store or MemoryCallStore()
        app[SERVICES] = Services(
            settings=settings,
            gateway=gateway,
            store=call_store,
            calls=CallService(settings, gateway, call_store),
        )
        yield
        await app[SERVICES].active.close_all("server shutdown")
        await gateway.close()
        await call_store.close()

    app.cleanup_ctx.append(services_ctx)
    return app
