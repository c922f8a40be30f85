"""The aiohttp application: routes, shared clients, startup and cleanup."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from aiohttp import web
from loguru import logger

from caller_engine.bridge.bridge import Bridge, LogResultSink, MetricsSink
from caller_engine.bridge.registry import ActiveCalls
from caller_engine.calls.models import CallRecord, utcnow
from caller_engine.calls.service import CallService
from caller_engine.calls.sql_store import SqlCallStore
from caller_engine.calls.store import CallStore
from caller_engine.config import Settings
from caller_engine.metrics import Metrics
from caller_engine.realtime.providers import build_connectors
from caller_engine.results.outbox import Outbox
from caller_engine.results.worker import DeliveryConfig, DeliveryWorker
from caller_engine.telephony.rest import TwilioGateway
from caller_engine.tools import catalog
from caller_engine.tools.end_call import END_CALL
from caller_engine.tools.opt_out import OPT_OUT
from caller_engine.tools.registry import Tool, ToolRegistry
from caller_engine.transcript.summary import GeminiSummarizer, Summarizer, SummaryModel
from caller_engine.web import (
    calls,
    dnc,
    health,
    media,
    metrics,
    openapi,
    records,
    transfer,
    twiml,
    webhooks,
)
from caller_engine.web.errors import error_middleware
from caller_engine.web.state import SERVICES, Services

if TYPE_CHECKING:
    from caller_engine.tools.google_client import GoogleApis

MAX_BODY_BYTES = 256 * 1024
OPENAPI_DOCUMENT = openapi.render()
NO_RESULT = {"code": "no_result", "message": "the call ended but its post-call result never came"}


async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of the orchestrator API (the same as openapi.json)."""
    return web.Response(body=OPENAPI_DOCUMENT, content_type="application/json")


def build_tools(
    settings: Settings, gateway: TwilioGateway, google: GoogleApis | None
) -> Iterable[Tool]:
    """Every tool this deployment offers (per-call subsets are chosen at initiate)."""
    return [*catalog.build_tools(settings, gateway, google=google), END_CALL, OPT_OUT]


def create_app(
    settings: Settings,
    *,
    store: CallStore | None = None,
    clock: Callable[[], datetime] | None = None,
) -> web.Application:
    """The application. `store` replaces the one DATABASE_URL names; `clock` replaces the
    wall clock calling hours are judged by (tests pin it)."""
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY_BYTES)
    app.router.add_get("/health", health.health)
    app.router.add_get("/ready", health.ready)
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_post("/call/initiate", calls.initiate)
    app.router.add_route("GET", "/twiml/outbound", twiml.outbound)
    app.router.add_route("POST", "/twiml/outbound", twiml.outbound)
    app.router.add_post("/twiml/transfer/whisper", transfer.whisper)
    app.router.add_post("/twiml/transfer/screen", transfer.screen)
    app.router.add_post("/twiml/transfer/done", transfer.done)
    app.router.add_get("/media-stream", media.media_stream)
    app.router.add_get("/media-stream/{callbackId}", media.media_stream)
    app.router.add_post("/webhooks/call-status", webhooks.call_status)
    app.router.add_post("/webhooks/amd", webhooks.amd)
    if not settings.metrics_port:
        app.router.add_get("/metrics", metrics.metrics)
    app.router.add_get("/calls", records.list_calls)
    app.router.add_get("/calls/{callbackId}", records.get_call)
    app.router.add_get("/dnc", dnc.list_numbers)
    app.router.add_put("/dnc/{number}", dnc.put_number)
    app.router.add_delete("/dnc/{number}", dnc.delete_number)
    app.router.add_get("/dnc/{number}", dnc.get_number)

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        # Clients that own aiohttp/httpx sessions are created inside the running loop.
        gateway = TwilioGateway(
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            settings.twilio_phone_number,
            base_url=settings.twilio_api_base_url,
        )
        call_store = store or await SqlCallStore.open(settings.database_url)
        app_metrics = Metrics()
        call_service = CallService(
            settings, gateway, call_store, metrics=app_metrics, clock=clock or utcnow
        )
        call_service.add_sink(LogResultSink())
        call_service.add_sink(MetricsSink(app_metrics))
        worker = _delivery_worker(settings, call_store, call_service)
        if worker is not None:
            call_service.on_delivery_queued(worker.wake)
            app[records.DELIVERY_WORKER] = worker
            worker.start()
        summarizer = _summarizer(settings)
        google: GoogleApis | None = None
        if settings.enable_calendar_tools or settings.enable_email_tools:
            from caller_engine.tools.google_client import GoogleApis  # ~30 MB: only when used

            google = GoogleApis.from_settings(settings)
        active = ActiveCalls()
        bridge = Bridge(
            settings,
            store=call_store,
            calls=call_service,
            gateway=gateway,
            tools=ToolRegistry(build_tools(settings, gateway, google)),
            connectors=build_connectors(settings),
            summarizer=summarizer,
            active=active,
            metrics=app_metrics,
        )
        app[SERVICES] = Services(
            settings=settings,
            gateway=gateway,
            store=call_store,
            calls=call_service,
            bridge=bridge,
            active=active,
            metrics=app_metrics,
        )
        yield
        await active.close_all("server shutdown")
        await bridge.close()
        await call_service.pending.stop()
        if worker is not None:
            await worker.stop(flush=True)
        if summarizer is not None:
            await summarizer.close()
        if google is not None:
            google.close()
        await gateway.close()
        await call_store.close()

    app.cleanup_ctx.append(services_ctx)
    return app


def _summarizer(settings: Settings) -> SummaryModel | None:
    """The post-call summary model SUMMARY_PROVIDER (or the keys present) selects."""
    backend = settings.summary_backend
    if backend == "gemini" and settings.gemini_api_key:
        return GeminiSummarizer(
            api_key=settings.gemini_api_key,
            model=settings.gemini_summary_model,
            base_url=settings.gemini_api_base_url,
        )
    if backend == "openai":
        return Summarizer(
            settings.openai_api_key, settings.summary_model, base_url=settings.openai_base_url
        )
    return None


def _delivery_worker(
    settings: Settings, store: CallStore, calls: CallService
) -> DeliveryWorker | None:
    """The outbox drain of this instance, for stores that have an outbox."""
    outbox: Outbox | None = getattr(store, "outbox", None)
    if outbox is None:
        if settings.result_webhook_url:
            logger.warning("this call store has no outbox: results will not be delivered")
        return None
    if not settings.result_webhook_secret:
        logger.warning("RESULT_WEBHOOK_SECRET is not set: result webhooks go out unsigned")

    async def missing(record: CallRecord) -> bool:
        streamed = record.stream_started_at is not None
        return await calls.finish_from_record(record, error=NO_RESULT if streamed else None)

    return DeliveryWorker(outbox, DeliveryConfig.from_settings(settings), on_missing_result=missing)
