"""The media bridge as a service: shared clients, pre-warming, sessions and post-call work."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime

from aiohttp import web
from loguru import logger

from caller_engine.bridge.config import call_provider, session_config
from caller_engine.bridge.handoff import Handoff, Handoffs
from caller_engine.bridge.prewarm import Prewarmer
from caller_engine.bridge.registry import ActiveCalls
from caller_engine.bridge.session import CallSession
from caller_engine.calls import gate
from caller_engine.calls.availability import StoreUnavailable
from caller_engine.calls.models import MACHINE_ANSWERS, AgentOverrides, CallRecord
from caller_engine.calls.result import CallResult, Summary
from caller_engine.calls.service import CallService
from caller_engine.calls.store import CallStore
from caller_engine.calls.transfer import TargetError, call_targets
from caller_engine.config import Settings
from caller_engine.failures import describe
from caller_engine.logging import call_logger
from caller_engine.metrics import Metrics
from caller_engine.realtime.base import RealtimeConnector
from caller_engine.telephony.rest import TelephonyError, TwilioGateway
from caller_engine.tools.opt_out import OPT_OUT
from caller_engine.tools.registry import Tool, ToolRegistry
from caller_engine.tools.transfer import NAME as TRANSFER_CALL
from caller_engine.tools.transfer import transfer_tool
from caller_engine.transcript.summary import SummaryModel

POST_CALL_TIMEOUT = 60.0


class Bridge:
    def __init__(
        self,
        settings: Settings,
        *,
        store: CallStore,
        calls: CallService,
        gateway: TwilioGateway,
        tools: ToolRegistry,
        connectors: Mapping[str, RealtimeConnector],
        summarizer: SummaryModel | None,
        active: ActiveCalls,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.calls = calls
        self.gateway = gateway
        self.tools = tools
        self.connectors = connectors
        self.summarizer = summarizer
        self.active = active
        self.metrics = metrics
        metrics.active_calls.set_function(lambda: len(active))
        self.prewarmer = Prewarmer(settings.prewarm_timeout)
        self._post_call: set[asyncio.Task[None]] = set()
        self.handoffs = Handoffs(self)
        calls.on_answered_by(self.on_answered_by)
        calls.on_ended(self.handoffs.call_ended)

    def tools_for(self, agent: AgentOverrides) -> list[Tool]:
        """The call's tools: its subset; `transfer_call` when it has people to transfer to;
        always `opt_out` when the deployment has it (a callee's request not to be called
        again is honoured on every call)."""
        tools = self.tools.select(agent.tools)
        if agent.tools is None or TRANSFER_CALL in agent.tools:
            configured = self.settings.configured_transfer_targets
            try:
                targets = call_targets(configured, agent.transferTargets)
            except TargetError as exc:  # the configuration changed since the initiate
                logger.warning("transfer_call not offered: {}", exc)
                targets = []
            if targets:
                tools.append(transfer_tool(targets))
        opt_out = self.tools.get(OPT_OUT.name)
        if opt_out is not None and opt_out not in tools:
            tools.append(opt_out)
        return tools

    def observe_tool(self, name: str, ok: bool, duration_ms: float) -> None:
        outcome = "ok" if ok else "error"
        self.metrics.tool_duration.labels(name, outcome).observe(duration_ms / 1000)

    async def prewarm(self, callback_id: str, call_sid: str) -> None:
        """Twilio fetched the TwiML: the call is answered. Open the model session now."""
        read = True
        try:
            record = self.calls.placed.take(callback_id) or await self.store.get(callback_id)
        except StoreUnavailable as exc:
            call_logger(callback_id, call_sid).warning(
                "database unavailable ({}): the default agent takes the call", exc
            )
            record, read = None, False
        agent = record.agent if record is not None else AgentOverrides()
        provider = call_provider(self.settings, agent)
        connector = self.connectors.get(provider)
        if connector is None:
            return  # the stream reports it
        config = session_config(self.settings, agent, self.tools_for(agent), provider)
        if config.greeting and self.handoffs.returning(call_sid):
            # Back from a transfer: a provider that speaks first must not greet again.
            config = replace(config, greeting="")
        self.prewarmer.start(call_sid, provider, connector, config, record, read=read)

    async def handle(self, ws: web.WebSocketResponse, hint: str | None) -> None:
        await CallSession(self, ws, hint).run()

    async def on_answered_by(self, record: CallRecord, answered_by: str) -> None:
        """A machine answered. The instance carrying the stream acts on it; a stream that has
        not started yet sees `answeredBy` in the record at its start. When the stream runs on
        another instance, this one can still hang up through Twilio."""
        if answered_by not in MACHINE_ANSWERS or record.call_sid is None:
            return
        session = self.active.by_call_sid(record.call_sid)
        if isinstance(session, CallSession):
            await session.on_machine(answered_by)
            return
        if record.stream_sid is None or record.stream_stopped_at is not None:
            return
        log = call_logger(record.callback_id, record.call_sid, record.stream_sid)
        if self.settings.voicemail_action == "hangup" or not self.settings.voicemail_message:
            log.info("answered by {}; the stream is on another instance: hanging up", answered_by)
            try:
                await self.gateway.hangup(record.call_sid)
            except TelephonyError as exc:
                log.warning("hang-up after AMD failed: {}", exc)
        else:
            log.warning(
                "answered by {} but the stream is on another instance; "
                "its voicemail message cannot be left from here",
                answered_by,
            )

    # -- after the call --------------------------------------------------------------

    def after_call(self, session: CallSession) -> None:
        """A stream ended. A call being transferred waits for its outcome; others are done."""
        if not self.handoffs.park(session):
            self.post_call(session)

    def post_call(self, session: CallSession) -> None:
        self.track(asyncio.create_task(self._post_call_work(session), name="post-call"))

    def track(self, task: asyncio.Task[None]) -> None:
        self._post_call.add(task)
        task.add_done_callback(self._post_call.discard)

    async def _post_call_work(self, session: CallSession) -> None:
        gate.priority.set(gate.BACKGROUND)  # behind live calls' store work
        log = session.log
        try:
            async with asyncio.timeout(POST_CALL_TIMEOUT):
                await session.pending_tools()
                result = await self._build_result(session)
                await self.calls.finish(result)
        except TimeoutError:
            log.error("post-call processing timed out")
        except Exception:
            log.exception("post-call processing failed")

    async def _build_result(self, session: CallSession) -> CallResult:
        stopped = session.stopped_at or session.loop.time()
        duration = session.ai_seconds()
        final = session.transcript.finalize(session.call_sid, session.callback_id, duration)
        handoff = session.handoff
        summary: Summary | None = None
        summary_error: str | None = None
        if self.summarizer is not None:
            tool_lines = [
                f"{t.name}({t.arguments}) -> {t.output}" for t in session.transcript.tool_calls
            ]
            if handoff is not None:
                tool_lines.append(transfer_line(handoff))
            try:
                summary = await self.summarizer.summarize(final["fullText"], tool_lines)
            except Exception as exc:
                summary_error = (
                    "the summary model's answer was not a valid summary"
                    if isinstance(exc, ValueError)
                    else f"the summary model failed: {describe(exc)}"
                )
                session.log.opt(exception=exc).warning("summary failed")
        # The status callbacks, recording and a late answering-machine verdict come from the
        # record as the result is stored (results.build.complete_from_record).
        answered_by = session.answered_by
        started = datetime.fromtimestamp(session.started_wall, UTC)
        ended_wall = session.started_wall + (stopped - session.started_at)
        if handoff is not None and handoff.ended_wall is not None:
            ended_wall = max(ended_wall, handoff.ended_wall)
        ended = datetime.fromtimestamp(ended_wall, UTC)
        human = handoff.human_seconds if handoff is not None else None
        return CallResult(
            callbackId=session.callback_id,
            callSid=session.call_sid,
            to=session.callee or None,
            status="voicemail" if answered_by in MACHINE_ANSWERS else "completed",
            answeredBy=answered_by,
            startedAt=started.isoformat(),
            endedAt=ended.isoformat(),
            duration=round(duration, 3),
            humanDuration=round(human, 3) if human is not None else None,
            transcript=final["entries"],
            fullText=final["fullText"],
            summary=summary,
            summaryError=summary_error,
            toolCalls=session.transcript.tool_calls,
            metrics=session.metrics.as_dict(),
            provider=session.provider,
            providerSwitches=session.provider_switches,
            error=session.error,
            metadata=session.agent.metadata,
            transfer=handoff.transfer if handoff is not None else None,
            optedOut=session.opted_out,
        )

    async def close(self) -> None:
        await self.prewarmer.close_all()
        await self.handoffs.close()
        if self._post_call:
            await asyncio.wait(set(self._post_call), timeout=POST_CALL_TIMEOUT)


def transfer_line(handoff: Handoff) -> str:
    """The transfer, for the summary model."""
    transfer = handoff.transfer
    line = f"transfer to a person ({transfer.target}): {transfer.status}"
    if (seconds := handoff.human_seconds) is not None:
        line += f", they talked for {seconds:.0f} s"
    return line


class MetricsSink:
    """Counts finished calls by final status."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def publish(self, result: CallResult) -> None:
        self.metrics.calls_finished.labels(result.status).inc()


class LogResultSink:
    """The default result sink: one structured log line per finished call."""

    async def publish(self, result: CallResult) -> None:
        log = call_logger(result.callbackId, result.callSid)
        log.info(
            "call result: {} ({} transcript entries, {} tool calls, summary {}{}{})",
            result.status,
            len(result.transcript),
            len(result.toolCalls),
            "ok" if result.summary else "missing",
            f", error {result.error.get('code')}" if result.error else "",
            ", opted out" if result.optedOut else "",
        )
