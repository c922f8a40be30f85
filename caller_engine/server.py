"""Running the application: listen, then drain gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import gc
import signal

from aiohttp import web
from loguru import logger

from caller_engine.config import Settings
from caller_engine.web.app import create_app
from caller_engine.web.metrics import metrics_app
from caller_engine.web.state import SERVICES


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Serve until a signal (or `stop`), then drain: /health answers 503, new calls are
    refused, active calls may finish for up to DRAIN_TIMEOUT seconds, the rest are closed."""
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    # Everything built so far lives for the whole process: move it out of the collector's
    # reach, so full collections under load scan only call-scoped objects (shorter pauses).
    gc.collect()
    gc.freeze()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    metrics_runner: web.AppRunner | None = None
    if settings.metrics_port:
        metrics_runner = web.AppRunner(metrics_app(app[SERVICES].metrics), access_log=None)
        await metrics_runner.setup()
        await web.TCPSite(metrics_runner, settings.host, settings.metrics_port).start()
        logger.info("metrics on :{}/metrics", settings.metrics_port)
    logger.info("listening on {}:{} (public {})", settings.host, settings.port, settings.base_url)
    if not settings.api_key:
        logger.warning("API_KEY is not set: /call/initiate accepts unauthenticated requests")
    if not settings.twilio_validate_signatures:
        logger.warning("TWILIO_VALIDATE_SIGNATURES is off: webhooks are not authenticated")

    stop = stop or asyncio.Event()
    force = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signame: str) -> None:
        if stop.is_set():
            logger.warning("{} again: closing active calls now", signame)
            force.set()
        else:
            logger.info("{} received: draining", signame)
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        await stop.wait()
        services = app[SERVICES]
        services.draining = True
        active = len(services.active)
        logger.info("draining {} active call(s), up to {} s", active, settings.drain_timeout)
        drained = asyncio.create_task(services.active.wait_idle(settings.drain_timeout))
        forced = asyncio.create_task(force.wait())
        await asyncio.wait({drained, forced}, return_when=asyncio.FIRST_COMPLETED)
        forced.cancel()
        if not drained.done() or not drained.result():
            drained.cancel()
            logger.warning("drain limit reached; closing {} call(s)", len(services.active))
            await services.active.close_all("server shutdown")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()
        logger.info("stopped")
