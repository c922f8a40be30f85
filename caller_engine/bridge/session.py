"""One call: Twilio's media stream ⇄ the model session, as two asyncio tasks.

caller→model: Twilio frames are parsed once; media payloads go to the model as the same base64
strings. model→caller: audio deltas go to Twilio as `media` + `mark`; everything else drives
the pure state in `turns`, `playback` and the transcript. Tools run in their own tasks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import orjson
from aiohttp import WSMsgType, web

from caller_engine.bridge.capture import MediaCapture
from caller_engine.bridge.config import call_provider, greeting_instructions, session_config
from caller_engine.bridge.handoff import Handoff
from caller_engine.bridge.metrics import CallMetrics
from caller_engine.bridge.playback import BYTES_PER_MS, PlaybackTracker, b64_decoded_len
from caller_engine.bridge.prewarm import Warm
from caller_engine.bridge.turns import Interruption, TurnState
from caller_engine.calls import gate
from caller_engine.calls.availability import StoreUnavailable
from caller_engine.calls.models import MACHINE_ANSWERS, AgentOverrides, CallRecord, DncEntry
from caller_engine.calls.result import ToolCallRecord
from caller_engine.calls.transfer import TransferTarget
from caller_engine.logging import call_logger
from caller_engine.realtime.base import (
    AgentItem,
    AgentTranscript,
    AgentTranscriptCorrected,
    AudioDelta,
    Closed,
    ConnectError,
    FunctionCall,
    Interrupted,
    ProviderError,
    ProviderEvent,
    RealtimeConnector,
    RealtimeSession,
    ResponseDone,
    ResponseStarted,
    SessionConfig,
    SpeechStarted,
    SpeechStopped,
    ToolCallsCancelled,
    UserItem,
    UserTranscript,
)
from caller_engine.telephony.media_stream import (
    Dtmf,
    MalformedFrame,
    Mark,
    Media,
    Start,
    Stop,
    StreamWriter,
    parse_frame,
)
from caller_engine.telephony.rest import TelephonyError
from caller_engine.telephony.signature import stream_token_valid
from caller_engine.tools.registry import Tool, ToolContext, ToolOutput, ToolRegistry
from caller_engine.transcript.collector import TranscriptCollector

if TYPE_CHECKING:
    from caller_engine.bridge.bridge import Bridge

POLICY_VIOLATION = 1008
START_TIMEOUT = 10.0
MAX_MALFORMED = 200
RECONNECT_DELAYS = (0.0, 0.25, 0.75, 1.5)
CONNECT_TIMEOUT = 3.0
STOP_GRACE = 3.0
END_CALL_FALLBACK = 20.0
MAX_EARLY_FRAMES = 500  # 10 s of caller audio kept while the model session opens


class CallSession:
    def __init__(self, bridge: Bridge, ws: web.WebSocketResponse, hint: str | None = None) -> None:
        self.bridge = bridge
        self.settings = bridge.settings
        self.ws = ws
        self.callback_id = hint or ""
        self.call_sid: str | None = None
        self.stream_sid: str | None = None
        self.callee = ""
        self.agent = AgentOverrides()
        self.log = call_logger(hint)
        self.loop = asyncio.get_running_loop()
        self.model: RealtimeSession | None = None
        self.config: SessionConfig | None = None
        self.provider = ""
        self.provider_switches = 0
        self._chain: tuple[str, ...] = ()
        self._provider_index = 0
        self._offered: list[Tool] = []
        self.tools = ToolRegistry()
        self.playback = PlaybackTracker(bridge.settings.playback_mark_ms * BYTES_PER_MS)
        self.turns = TurnState(True)
        self.transcript = TranscriptCollector()
        self.metrics = CallMetrics()
        self.writer = StreamWriter("")
        self.started_at = 0.0
        self.started_wall = 0.0
        self.stopped_at: float | None = None
        self.answered_by: str | None = None
        self.end_reason = "completed"
        self.error: dict[str, str] | None = None
        self.ending = False
        self.opted_out = False
        self._end_after_reply: str | None = None
        self._hangup_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._tool_tasks: dict[str, asyncio.Task[None]] = {}
        self._tool_origin: dict[str, RealtimeSession | None] = {}
        self._tools_by_response: dict[str, set[str]] = {}
        self._responses_done: set[str] = set()
        self._ctx: ToolContext | None = None
        self.capture = MediaCapture()
        self._warm: Warm | None = None
        self._started_task: asyncio.Task[None] | None = None
        self._early: list[str] | None = []  # caller audio before the model session is open
        self._early_digits: list[str] = []
        # A transfer to a person; the agent time of this call's earlier streams (after a
        # transfer that did not connect, the call comes back on a new stream).
        self.handoff: Handoff | None = None
        self.stream_began = 0.0
        self.prior_ai = 0.0
        self._transfer_fallback: asyncio.TimerHandle | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def now(self) -> float:
        return self.loop.time() - self.started_at

    def ai_seconds(self) -> float:
        """Seconds the agent held this call, over all its streams."""
        stopped = self.stopped_at if self.stopped_at is not None else self.loop.time()
        return self.prior_ai + (stopped - self.stream_began)

    async def run(self) -> None:
        gate.priority.set(gate.URGENT)  # the store work a greeting waits on goes first
        start = await self._wait_start()
        if start is None:
            await self.ws.close()
            return
        if not await self._begin(start):
            return
        # The caller's frames are read from the start: while the model session is being
        # opened they wait in `_early` (and go out in order before any later frame), so
        # nothing the caller says is held in the socket and setup work never blocks them.
        caller = asyncio.create_task(self._caller_to_model(), name="caller->model")
        try:
            model = await self._open_model()
            if self._stopped.is_set():  # the caller hung up while the session opened
                self.model = model  # closed by _finish
                return
            if model is None:
                await self._hangup("model unavailable")
                await asyncio.wait({caller}, timeout=STOP_GRACE)
                return
            self._adopt(model)
            self._go_live(model)
            await self._greet()
            for digit in self._early_digits:
                await self._forward_dtmf(digit)
            self._started_task = asyncio.create_task(self._record_start())
            await self._pump(caller)
        finally:
            caller.cancel()
            await asyncio.gather(caller, return_exceptions=True)
            await self._finish()

    def _go_live(self, model: RealtimeSession) -> None:
        """The model session is open: send it the frames that waited, then go direct.
        No await in between, so no frame can overtake the early ones."""
        early, self._early = self._early, None
        metrics = self.metrics
        for payload in early or ():
            if model.send_audio(payload):
                metrics.frames_in += 1
            else:
                metrics.dropped_in += 1
        self.model = model

    async def _wait_start(self) -> Start | None:
        try:
            async with asyncio.timeout(START_TIMEOUT):
                async for msg in self.ws:
                    if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                        return None
                    try:
                        event = parse_frame(msg.data)
                    except MalformedFrame:
                        self.metrics.malformed += 1
                        continue
                    if isinstance(event, Start):
                        return event
                    if isinstance(event, Media):
                        self.metrics.media_before_start += 1
                    elif isinstance(event, Stop):
                        return None
        except TimeoutError:
            self.log.warning("no start event within {} s; closing", START_TIMEOUT)
        return None

    async def _begin(self, start: Start) -> bool:
        params = start.custom_parameters
        self.callback_id = params.get("callbackId", self.callback_id)
        self.call_sid = start.call_sid
        self.stream_sid = start.stream_sid
        self.log = call_logger(self.callback_id, self.call_sid, self.stream_sid)
        secret = self.settings.stream_secret
        if not stream_token_valid(secret, self.call_sid, self.callback_id, params.get("token", "")):
            self.log.warning("stream token does not match its call; closing (1008)")
            await self.ws.close(code=POLICY_VIOLATION, message=b"invalid stream token")
            return False
        self.started_at = self.stream_began = self.loop.time()
        self.started_wall = time.time()
        self.writer = StreamWriter(self.stream_sid)
        self.capture = MediaCapture.open(
            self.settings.media_capture_dir, self.callback_id, self.call_sid
        )
        # A pre-warmed call brings its record (or that it has none): the greeting waits on
        # no database read.
        self._warm = self.bridge.prewarmer.take(self.call_sid)
        if self._warm is not None and self._warm.read:
            record: CallRecord | None = self._warm.record
        else:
            try:
                record = await self.bridge.store.get(self.callback_id)
            except StoreUnavailable as exc:
                self.log.warning("database unavailable ({}): the default agent takes the call", exc)
                record = None
        if record is not None:
            self.agent = record.agent
            self.callee = record.to
            self.answered_by = record.answered_by
        tools = self.bridge.tools_for(self.agent)
        self._offered = tools
        self.tools = ToolRegistry(tools)
        self._chain = self.settings.provider_chain(call_provider(self.settings, self.agent))
        self.provider = self._chain[0]
        self.config = session_config(self.settings, self.agent, tools, self.provider)
        self._ctx = ToolContext(
            callback_id=self.callback_id,
            call_sid=self.call_sid,
            callee=self.callee,
            log=self.log,
            end_call=self._end_call_requested,
            transfer=self._transfer_requested,
            opt_out=self._opt_out_requested,
        )
        self.bridge.handoffs.adopt(self)
        self.bridge.active.add(self)
        self.log.info("stream started; {} tool(s) offered", len(tools))
        return True

    async def _record_start(self) -> None:
        """After the greeting is under way: write the stream start, and catch an answering-
        machine result that arrived between the TwiML fetch and this stream."""
        assert self.stream_sid is not None
        store, callback_id, stream_sid = self.bridge.store, self.callback_id, self.stream_sid
        record = await self.bridge.calls.pending.attempt_returning(
            "stream start", callback_id, lambda: store.stream_started(callback_id, stream_sid)
        )
        if self.answered_by is None:
            answered_by = record.answered_by if record is not None else None
            if answered_by in MACHINE_ANSWERS and self.answered_by is None:
                await self.on_machine(answered_by)
            elif answered_by is not None:
                self.answered_by = answered_by

    def _adopt(self, model: RealtimeSession) -> None:
        """Make `model` the call's session: response state starts afresh for it."""
        caps = model.capabilities
        self.turns = TurnState(caps.cancels_on_barge_in, truncates=caps.truncates)
        self.model = model

    async def _open_model(self) -> RealtimeSession | None:
        assert self.config is not None and self.call_sid is not None
        warm = self._warm
        if warm is not None and warm.provider == self.provider:
            try:
                session = await asyncio.wait_for(warm.session, CONNECT_TIMEOUT)
                self.log.debug("using the pre-warmed model session")
                return session
            except TimeoutError:
                self.log.warning("pre-warmed model session did not open in time")
            except ConnectError as exc:
                self.log.warning("pre-warmed model session failed: {}", exc)
                if exc.fatal:
                    self.error = {"code": exc.code or "model_refused", "message": str(exc)}
                    return await self._connect(skip_current=True)
        return await self._connect()

    async def _connect(self, *, skip_current: bool = False) -> RealtimeSession | None:
        """Open a session on the call's provider, else on each fallback in turn."""
        start = self._provider_index + (1 if skip_current else 0)
        for index in range(start, len(self._chain)):
            if index != self._provider_index:
                self._switch_provider(index)
            connector = self.bridge.connectors.get(self.provider)
            if connector is None:
                message = f"provider {self.provider} is not configured"
                self.error = {"code": "model_refused", "message": message}
                continue
            model = await self._connect_to(connector)
            if model is not None:
                self.error = None
                return model
            if self._stopped.is_set():
                return None
        return None

    async def _connect_to(self, connector: RealtimeConnector) -> RealtimeSession | None:
        assert self.config is not None
        for delay in RECONNECT_DELAYS:
            if delay:
                await asyncio.sleep(delay)
            if self._stopped.is_set():
                return None
            try:
                return await asyncio.wait_for(connector.connect(self.config), CONNECT_TIMEOUT)
            except TimeoutError:
                self.log.warning("{} connect timed out", self.provider)
            except ConnectError as exc:
                self.log.warning("{} connect failed: {}", self.provider, exc)
                if exc.fatal:
                    self.error = {"code": exc.code or "model_refused", "message": str(exc)}
                    return None
        self.error = {"code": "model_unavailable", "message": f"could not reach {self.provider}"}
        return None

    def _switch_provider(self, index: int) -> None:
        previous = self.provider
        self._provider_index = index
        self.provider = self._chain[index]
        self.provider_switches += 1
        self.config = session_config(self.settings, self.agent, self._offered, self.provider)
        self.bridge.metrics.provider_switches.labels(previous, self.provider).inc()
        self.log.warning("moving the call from {} to {}", previous, self.provider)

    async def _greet(self) -> None:
        assert self.config is not None
        if self.answered_by in MACHINE_ANSWERS:
            await self.on_machine(self.answered_by)
            return
        if (cue := self.bridge.handoffs.welcome_back(self)) is not None and self.model:
            await self.model.replay(self.transcript.history())
            await self._request_response(cue)
            return
        if self.model is not None and self.model.capabilities.speaks_first:
            return  # its first message was configured when the session opened
        await self._request_response(greeting_instructions(self.config, self.agent.greeting))

    async def _pump(self, caller: asyncio.Task[None]) -> None:
        model = asyncio.create_task(self._model_to_caller(), name="model->caller")
        limit = max(2.0, self.settings.call_time_limit + 2.0 - self.prior_ai)
        try:
            done, _ = await asyncio.wait(
                {caller, model}, timeout=limit, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                self.log.info("call time limit reached; hanging up")
                await self._hangup("time limit")
            for task in done:
                if not task.cancelled() and (exc := task.exception()) is not None:
                    # A bug, not a peer's fault: end this call cleanly, never the process.
                    self.log.opt(exception=exc).error("{} failed; ending the call", task.get_name())
                    self.error = {
                        "code": "internal_error",
                        "message": "the call's media bridge failed; see the server log",
                    }
                    await self._hangup("internal error")
            if caller not in done:
                await asyncio.wait({caller}, timeout=STOP_GRACE)
        finally:
            for task in (caller, model):
                task.cancel()
            await asyncio.gather(caller, model, return_exceptions=True)

    async def _finish(self) -> None:
        self._stopped.set()
        if self._early:  # the model session never opened
            self.metrics.dropped_in += len(self._early)
        self._early = None
        self.stopped_at = self.loop.time()
        self.capture.close()
        if self.model is not None:
            model, self.model = self.model, None
            try:
                await asyncio.wait_for(model.close(), 1.0)
            except (TimeoutError, OSError, RuntimeError) as exc:
                self.log.debug("model close: {!r}", exc)
        if self._hangup_task is not None and not self._hangup_task.done():
            await asyncio.wait({self._hangup_task}, timeout=STOP_GRACE)
        if not self.ws.closed:
            await self.ws.close()
        if self._started_task is not None:
            await asyncio.wait({self._started_task})
        self.bridge.active.discard(self)
        gate.priority.set(gate.BACKGROUND)  # the call is over: its writes can wait
        counters = self.bridge.metrics
        counters.malformed_frames.inc(self.metrics.malformed + self.metrics.media_before_start)
        counters.dropped_frames.inc(self.metrics.dropped_in)
        store, callback_id = self.bridge.store, self.callback_id
        await self.bridge.calls.pending.attempt(
            "stream stop", callback_id, lambda: store.stream_stopped(callback_id)
        )
        self.log.info(
            "stream ended ({}) after {:.1f} s", self.end_reason, self.stopped_at - self.started_at
        )
        self.bridge.after_call(self)

    async def close(self, reason: str) -> None:
        """Ended from outside (shutdown): hang up and let the tasks wind down."""
        self.end_reason = reason
        await self._hangup(reason)
        if not self.ws.closed:
            await self.ws.close()

    # -- caller → model (hot path) --------------------------------------------------

    async def _caller_to_model(self) -> None:
        metrics = self.metrics
        capture = self.capture if self.capture.enabled else None
        async for msg in self.ws:
            if msg.type is not WSMsgType.TEXT and msg.type is not WSMsgType.BINARY:
                break
            try:
                event = parse_frame(msg.data)
            except MalformedFrame as exc:
                metrics.malformed += 1
                if metrics.malformed == 1 or metrics.malformed % 50 == 0:
                    self.log.warning(
                        "malformed Twilio frame ({}); {} so far", exc, metrics.malformed
                    )
                if metrics.malformed >= MAX_MALFORMED:
                    self.error = {"code": "malformed_stream", "message": str(exc)}
                    await self._hangup("too many malformed frames")
                    break
                continue
            if type(event) is Media:
                if capture is not None:
                    capture.frame(event.payload, event.timestamp)
                model = self.model
                if model is not None and model.send_audio(event.payload):
                    metrics.frames_in += 1
                elif (early := self._early) is not None and len(early) < MAX_EARLY_FRAMES:
                    early.append(event.payload)
                else:
                    metrics.dropped_in += 1
            elif type(event) is Mark:
                if self.playback.echoed(event.name) and self.ending:
                    self._maybe_hang_up()
            elif type(event) is Stop:
                self.log.info("Twilio stop")
                break
            elif type(event) is Dtmf:
                await self._dtmf(event.digit)
        self._stopped.set()

    async def _dtmf(self, digit: str) -> None:
        self.transcript.dtmf(digit, self.now())
        self.log.info("caller pressed {}", digit)
        if self._early is not None:
            self._early_digits.append(digit)  # forwarded once the session is open
        else:
            await self._forward_dtmf(digit)

    async def _forward_dtmf(self, digit: str) -> None:
        if self.model is not None:
            try:
                await self.model.send_user_text(f"[The caller pressed the {digit} key]")
            except Exception as exc:
                self.log.warning("could not forward DTMF: {!r}", exc)

    # -- model → caller --------------------------------------------------------------

    async def _model_to_caller(self) -> None:
        while self.model is not None:
            model = self.model
            closed: Closed | None = None
            try:
                async for event in model.events():
                    if type(event) is AudioDelta:
                        await self._audio(event)
                    elif type(event) is Closed:
                        closed = event
                        break
                    else:
                        await self._on_event(event)
            except ConnectionResetError as exc:
                # Twilio's socket is gone; the caller task ends the call.
                self.log.info("Twilio socket closed while sending: {!r}", exc)
                return
            if self._stopped.is_set() or self._hangup_task is not None:
                return
            reason = closed.reason if closed else "model events ended"
            self.log.warning("model session lost: {}", reason)
            if closed is not None and closed.ended:
                self.log.info("{}; hanging up once it has played", reason)
                if closed.by_tool:
                    self.transcript.tool(
                        ToolCallRecord(
                            name=closed.by_tool,
                            callId="",
                            arguments={},
                            output={"status": "ended by the provider"},
                            ok=True,
                            durationMs=0.0,
                            at=round(self.now(), 3),
                        )
                    )
                await self._end_call_requested()
                self._maybe_hang_up()
                await self._stopped.wait()  # marks drive the hang-up; the caller task ends it
                return
            refused = closed.code if closed is not None and closed.fatal else None
            if refused is not None:
                # As when connecting is refused: not retried, on to a fallback if any.
                self.error = {"code": refused, "message": reason}
            elif closed is not None and closed.fatal:
                self.error = {"code": "model_fatal", "message": reason}
                await self._hangup("model error")
                return
            await self._reconnect(skip_current=refused is not None)
            if self.model is None:
                await self._hangup(
                    "model refused" if refused == "model_refused" else "model unavailable"
                )
                return

    async def _audio(self, event: AudioDelta) -> None:
        if not self.turns.accepts(event.response_id):
            return
        ws = self.ws
        playback = self.playback
        payload = event.payload
        if playback.current_item != event.item_id:
            closing = playback.switching(event.item_id)
            if closing is not None:
                await ws.send_str(self.writer.mark(closing))
        await ws.send_str(self.writer.media(payload))
        mark = playback.sent(event.item_id, b64_decoded_len(payload))
        if mark is not None:
            await ws.send_str(self.writer.mark(mark))
        metrics = self.metrics
        metrics.frames_out += 1
        if metrics.greeting_ms is None:
            seconds = metrics.first_audio(self.started_at, self.loop.time())
            self.bridge.metrics.greeting_latency.observe(seconds)
        if metrics.awaiting_answer:
            self.bridge.metrics.response_latency.observe(metrics.response_audio(self.loop.time()))

    async def _on_event(self, event: ProviderEvent) -> None:
        model = self.model
        assert model is not None
        if isinstance(event, SpeechStarted):
            received = self.loop.time()
            self.transcript.user_item(event.item_id, self.now())
            if not model.capabilities.signals_interruption:
                await self._interrupt(model, self.turns.speech_started(self.playback), received)
        elif isinstance(event, Interrupted):
            received = self.loop.time()
            plan = self.turns.interrupted(self.playback, event.response_id)
            await self._interrupt(model, plan, received)
        elif isinstance(event, ToolCallsCancelled):
            for call_id in event.call_ids:
                task = self._tool_tasks.get(call_id)
                if task is not None and not task.done():
                    task.cancel()
        elif isinstance(event, SpeechStopped):
            self.metrics.speech_stopped(self.loop.time())
        elif isinstance(event, ResponseStarted):
            self.turns.started(event.response_id, event.requested)
        elif isinstance(event, AgentItem):
            self.transcript.agent_item(event.item_id, self.now())
        elif isinstance(event, AgentTranscript):
            self.transcript.agent_text(event.item_id, event.text, self.now())
        elif isinstance(event, AgentTranscriptCorrected):
            self.transcript.corrected(event.item_id, event.text)
        elif isinstance(event, UserItem):
            self.transcript.user_item(event.item_id, self.now())
        elif isinstance(event, UserTranscript):
            self.transcript.user_text(event.item_id, event.text, self.now())
        elif isinstance(event, FunctionCall):
            self._start_tool(event)
        elif isinstance(event, ResponseDone):
            await self._response_done(event)
        elif isinstance(event, ProviderError):
            if event.refused_request:
                await self._request_refused(event)
            else:
                self.metrics.model_errors += 1
                self.log.warning("model error {}: {}", event.code, event.message)

    async def _interrupt(
        self, model: RealtimeSession, plan: Interruption | None, received: float
    ) -> None:
        """Barge-in: stop the caller hearing the agent, and record what they heard."""
        if plan is None:
            return
        if plan.clear:
            await self.ws.send_str(self.writer.clear())
            self.playback.clear()
            seconds = self.loop.time() - received
            self.metrics.barge_in(seconds)
            self.bridge.metrics.barge_in_latency.observe(seconds)
        if plan.heard is not None:
            item_id, heard_ms = plan.heard
            if plan.truncate:
                await model.truncate(item_id, heard_ms)
            self.transcript.interrupted(item_id, heard_ms, self.playback.sent_ms(item_id))
        if plan.cancel:
            await model.cancel_response()
        self.log.info("caller interrupted{}", f" at {plan.heard[1]} ms" if plan.heard else "")

    async def _response_done(self, event: ResponseDone) -> None:
        if self.turns.accepts(event.response_id) and (mark := self.playback.flush()) is not None:
            await self.ws.send_str(self.writer.mark(mark))  # the end of this response's audio
        for call in event.function_calls:
            self._start_tool(call)
        send, instructions = self.turns.done(event.response_id)
        if send and self.model is not None:
            await self.model.create_response(instructions)
        self._responses_done.add(event.response_id)
        await self._follow_up(event.response_id)
        if self.ending:
            self._maybe_hang_up()

    async def _request_refused(self, event: ProviderError) -> None:
        busy = event.code == "conversation_already_has_active_response"
        if busy:
            self.log.info("response request crossed one the model started; asking again after it")
        else:
            self.metrics.model_errors += 1
            self.log.warning("model refused a response request ({}): {}", event.code, event.message)
        send, instructions = self.turns.refused(busy)
        if send and self.model is not None:
            await self.model.create_response(instructions)

    async def _request_response(self, instructions: str | None = None) -> None:
        if self.turns.request(instructions) and self.model is not None:
            await self.model.create_response(instructions)

    # -- tools -----------------------------------------------------------------------

    def _start_tool(self, call: FunctionCall) -> None:
        if call.call_id in self._tool_tasks:
            return
        self._tools_by_response.setdefault(call.response_id, set()).add(call.call_id)
        self._tool_origin[call.call_id] = self.model
        self._tool_tasks[call.call_id] = asyncio.create_task(self._run_tool(call))

    async def _run_tool(self, call: FunctionCall) -> None:
        assert self._ctx is not None
        at = self.now()
        try:
            outcome = await self.tools.dispatch(call.name, call.arguments, self._ctx)
        except asyncio.CancelledError:
            # The model withdrew the call (e.g. the caller barged in): no output is sent.
            self.log.info("model cancelled {} ({})", call.name, call.call_id)
            self.transcript.tool(
                ToolCallRecord(
                    name=call.name,
                    callId=call.call_id,
                    arguments=call.arguments,
                    output={"error": "cancelled by the model"},
                    ok=False,
                    durationMs=round((self.now() - at) * 1000, 3),
                    at=round(at, 3),
                )
            )
            self._tool_origin.pop(call.call_id, None)
            self._tools_by_response.get(call.response_id, set()).discard(call.call_id)
            await self._follow_up(call.response_id)
            raise
        self.transcript.tool(
            ToolCallRecord(
                name=call.name,
                callId=call.call_id,
                arguments=outcome.arguments,
                output=outcome.output,
                ok=outcome.ok,
                durationMs=round(outcome.duration_ms, 3),
                at=round(at, 3),
            )
        )
        self.bridge.observe_tool(call.name, outcome.ok, outcome.duration_ms)
        origin = self._tool_origin.pop(call.call_id, None)
        model = self.model
        output = orjson.dumps(outcome.output).decode()
        late = model is not None and model is not origin
        # Once the call is ending nothing goes back: a server-driven model would answer it.
        if model is not None and not self.ending:
            try:
                if late:
                    # The session that made the call is gone (reconnect or another provider):
                    # the result reaches the new one as text.
                    await model.send_user_text(f"[Result of the earlier {call.name}: {output}]")
                else:
                    await model.send_tool_result(call.call_id, output)
            except Exception as exc:
                self.log.warning("could not return {} output to the model: {!r}", call.name, exc)
        self._tools_by_response.get(call.response_id, set()).discard(call.call_id)
        await self._follow_up(call.response_id)
        caps = model.capabilities if model is not None else None
        if late and caps is not None and caps.respond_after_tools and not self.ending:
            await self._request_response()

    async def _follow_up(self, response_id: str) -> None:
        """Once a response is done and all its tools answered, the model speaks again."""
        pending = self._tools_by_response.get(response_id)
        if pending is None or pending or response_id not in self._responses_done:
            return
        del self._tools_by_response[response_id]
        if self.ending:
            self._maybe_hang_up()
            return
        if self.model is not None and self.model.capabilities.respond_after_tools:
            await self._request_response()
        if self._end_after_reply is not None:
            reason, self._end_after_reply = self._end_after_reply, None
            await self._end_call_requested(reason)

    async def pending_tools(self) -> None:
        tasks = [t for t in self._tool_tasks.values() if not t.done()]
        if tasks:
            await asyncio.wait(tasks)

    # -- ending ----------------------------------------------------------------------

    async def _end_call_requested(self, reason: str = "agent ended the call") -> None:
        self.ending = True
        self.end_reason = reason
        self.loop.call_later(END_CALL_FALLBACK, self._force_end)

    async def _transfer_requested(
        self, target: TransferTarget, reason: str, summary: str
    ) -> ToolOutput:
        if self.ending:
            return {"error": "The call is already ending; it cannot be transferred now."}
        self.handoff = self.bridge.handoffs.begin(self, target, reason, summary)
        self.ending = True
        self.end_reason = "transferred"
        self._transfer_fallback = self.loop.call_later(END_CALL_FALLBACK, self._force_end)
        return {
            "status": "transferring",
            "message": "The caller will be put through once your sentence has played.",
        }

    async def _opt_out_requested(self, reason: str) -> None:
        """The callee asked not to be called again: list the number now; the call ends once
        the agent's reply to the tool result has played."""
        entry = DncEntry(
            number=self.callee,
            source="opt_out",
            reason=reason or "asked during the call not to be called again",
            callback_id=self.callback_id,
        )
        _, created = await self.bridge.store.dnc_add(entry)
        self.opted_out = True
        self.log.info(
            "callee opted out: number {} the do-not-call list",
            "added to" if created else "already on",
        )
        if not self.ending:
            self._end_after_reply = "callee opted out"

    def _force_end(self) -> None:
        if self._hangup_task is None and not self._stopped.is_set() and self.ending:
            self.log.warning("last sentence did not finish playing in time; ending the turn")
            self._hangup_task = asyncio.create_task(self._do_end())

    def _maybe_hang_up(self) -> None:
        busy = self.turns.responding or self.playback.audible or self._tools_by_response
        if self.ending and not busy and self._hangup_task is None:
            self._hangup_task = asyncio.create_task(self._do_end())

    async def _do_end(self) -> None:
        """The agent's last sentence has played: hand the call over, or hang up."""
        handoff = self.handoff
        if handoff is None or not handoff.due:
            await self._do_hangup()
            return
        if self._transfer_fallback is not None:
            self._transfer_fallback.cancel()
        if await self.bridge.handoffs.redirect(self):
            return
        # Twilio refused the transfer: the agent keeps the call.
        self.ending = False
        self.end_reason = "completed"
        self._hangup_task = None
        await self._request_response(self.bridge.handoffs.failed_cue(handoff))

    async def _hangup(self, reason: str) -> None:
        if self._hangup_task is None:
            self.end_reason = reason
            self._hangup_task = asyncio.create_task(self._do_hangup())
        await asyncio.wait({self._hangup_task})

    async def _do_hangup(self) -> None:
        if self.call_sid is None:
            return
        try:
            live = await self.bridge.gateway.hangup(self.call_sid)
            self.log.info("hung up via Twilio ({})", "ok" if live else "already ended")
        except TelephonyError as exc:
            self.log.warning("Twilio hang-up failed ({}); closing the stream", exc)
            if not self.ws.closed:
                await self.ws.close()

    async def on_machine(self, answered_by: str) -> None:
        """Answering machine: hang up, or leave the configured message and then hang up."""
        self.answered_by = answered_by
        if self.settings.voicemail_action == "hangup" or not self.settings.voicemail_message:
            self.log.info("answered by {}; hanging up", answered_by)
            await self._hangup("voicemail")
            return
        self.log.info("answered by {}; leaving the voicemail message", answered_by)
        self.ending = True
        self.end_reason = "voicemail"
        if self.playback.audible:
            await self.ws.send_str(self.writer.clear())
            self.playback.clear()
        if self.turns.can_cancel() and self.model is not None:
            await self.model.cancel_response()
        message = self.settings.voicemail_message
        instructions = (
            "You reached an answering machine. Leave exactly this message, then stop talking: "
            f'"{message}"'
        )
        await self._request_response(instructions)
        self.loop.call_later(END_CALL_FALLBACK, self._force_end)

    # -- reconnect -------------------------------------------------------------------

    async def _reconnect(self, *, skip_current: bool = False) -> None:
        lost, self.model = self.model, None
        if self.config is not None and self.config.greeting and self.transcript.entries():
            # A provider that speaks first must not greet again in the new session.
            self.config = replace(self.config, greeting="")
        was_responding = self.turns.responding
        if lost is not None:
            try:
                await asyncio.wait_for(lost.close(), 1.0)
            except Exception as exc:
                self.log.debug("closing the lost model session: {!r}", exc)
        # On to the next provider when this one is exhausted (or refused the session).
        model = await self._connect(skip_current=skip_current)
        if model is None:
            return
        await model.replay(self.transcript.history())
        self.metrics.reconnects += 1
        self.bridge.metrics.model_reconnects.inc()
        if (mark := self.playback.flush()) is not None:
            await self.ws.send_str(self.writer.mark(mark))  # audio of the lost session
        self.playback.current_item = None
        self._tools_by_response.clear()
        self._adopt(model)
        self.log.info("model session restored (reconnect {})", self.metrics.reconnects)
        entries = self.transcript.entries()
        if not entries and was_responding and self.config is not None:
            # Lost before a word of the greeting: the new session greets as asked (one that
            # speaks first does so with the first message it was opened with).
            if not model.capabilities.speaks_first:
                greeting = greeting_instructions(self.config, self.agent.greeting)
                await self._request_response(greeting)
        elif was_responding or (entries and entries[-1].role in ("user", "tool")):
            await self._request_response()
