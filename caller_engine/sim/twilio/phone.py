"""The emulated phone network: what Twilio does with a call after `Calls.json` created it.

Hooked into `TwilioRestEmulator`, it dials every created call to a `Callee` and plays
Twilio's part towards the application: signed status callbacks for the requested events
(initiated, ringing, answered → in-progress, completed/busy/no-answer/failed/canceled with
CallDuration and SipResponseCode), asynchronous (or synchronous) answering-machine
detection, the TwiML fetch and its execution (`<Connect><Stream>` opens a
`TwilioMediaClient`, `<Dial>` rings a `ScriptedPerson` (see `dial`), `<Hangup/>` ends the
call), hang-up through the REST API, a REST update with new TwiML (the running verb stops,
a media stream with `stop`, and the new TwiML runs) or a new TimeLimit, the callee hanging
up, and the call's TimeLimit (counted from the answer).

A call can carry several media streams one after the other (a `<Dial>` whose action
connects the stream again); the callee's script then carries on where it was (see
`ScriptedCallee`).

Clocks: `answer_delay`, `ring_delay` and `amd_delay` are real seconds. Twilio's own clocks
(TimeLimit, Timeout, CallDuration, MachineDetectionDuration) run at `playback_speed`, like
the media: at speed 4 a TimeLimit of 60 ends the call after 15 real seconds and reports 60.
`time_limit` and `no_answer_after` override them in real seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from loguru import logger

from caller_engine.sim.callee import Callee, Outcome
from caller_engine.sim.emulated_call import ActiveEmulatedCall
from caller_engine.sim.twilio import webhooks as hooks
from caller_engine.sim.twilio.dial import DialRunner, ScriptedPerson
from caller_engine.sim.twilio.media import TwilioMediaClient
from caller_engine.sim.twilio.rest import EmulatedCall, TwilioRestEmulator
from caller_engine.sim.twilio.twiml_reader import (
    ConnectStream,
    Dial,
    Hangup,
    Pause,
    Play,
    Say,
    TwimlError,
    Unsupported,
    Verb,
    parse_twiml,
)
from caller_engine.sim.twilio.webhooks import Route, WebhookRecord

__all__ = [
    "ActiveEmulatedCall",
    "Callee",
    "Outcome",
    "PhoneNetwork",
    "ScriptedPerson",
    "WebhookRecord",
]

CalleeFactory = Callable[[EmulatedCall], Callee]
BeforeDial = Callable[[EmulatedCall], Awaitable[None]]

# SIP answers Twilio reports for the ways a call ends.
SIP_CODES = {"completed": 200, "canceled": 487, "busy": 486, "no-answer": 487, "failed": 404}
DEFAULT_TIME_LIMIT = 14_400
DEFAULT_RING_TIMEOUT = 60


@dataclass(frozen=True, slots=True)
class _Outbound:
    kind: str
    method: str
    url: str
    params: dict[str, str]


class PhoneNetwork:
    def __init__(
        self,
        rest: TwilioRestEmulator,
        *,
        auth_token: str,
        callee_factory: CalleeFactory,
        answer_delay: float = 0.05,
        playback_speed: float = 1.0,
        ring_delay: float = 0.01,
        amd_delay: float = 0.1,
        time_limit: float | None = None,
        no_answer_after: float | None = None,
        route: Route | None = None,
        before_dial: BeforeDial | None = None,
        continuous_audio: bool = True,
        session: aiohttp.ClientSession | None = None,
        people: Mapping[str, ScriptedPerson] | None = None,
    ) -> None:
        """`route` maps the public URLs the application hands out (TwiML, callbacks, stream)
        to where to connect, like a reverse proxy; signatures always cover the public URL.
        `before_dial` is awaited before the first callback of each call (e.g. until the
        application has stored the call SID)."""
        if playback_speed <= 0:
            raise ValueError("playback_speed must be positive")
        self.rest = rest
        self.account_sid = rest.account_sid
        self.auth_token = auth_token
        self.callee_factory = callee_factory
        self.answer_delay = answer_delay
        self.playback_speed = playback_speed
        self.ring_delay = ring_delay
        self.amd_delay = amd_delay
        self.time_limit = time_limit
        self.no_answer_after = no_answer_after
        self.route: Route = route or hooks.identity
        self.before_dial = before_dial
        self.continuous_audio = continuous_audio
        # Who answers a <Dial> to each number (anyone else: a person who accepts).
        self.people: dict[str, ScriptedPerson] = dict(people or {})
        self.calls: dict[str, ActiveEmulatedCall] = {}
        self._session = session
        self._own_session = session is None
        self._tasks: set[asyncio.Task[None]] = set()
        self._new_calls: asyncio.Queue[ActiveEmulatedCall] = asyncio.Queue()
        rest.on_call_created.append(self._on_created)
        rest.on_call_updated.append(self._on_updated)

    # -- public ------------------------------------------------------------------------

    async def wait_finished(self, call_sid: str, timeout: float) -> ActiveEmulatedCall:  # noqa: ASYNC109
        """The call once it ended and its last callback was answered."""
        active = self.calls[call_sid]
        await asyncio.wait_for(active.finished.wait(), timeout)
        return active

    async def next_call(self, timeout: float) -> ActiveEmulatedCall:  # noqa: ASYNC109
        """The next call placed (in creation order)."""
        return await asyncio.wait_for(self._new_calls.get(), timeout)

    async def close(self) -> None:
        """Hang up whatever is still going on and release the HTTP session."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for active in self.calls.values():
            if active.media is not None:
                await active.media.close()
        rest_hooks = (self.rest.on_call_created, self.rest.on_call_updated)
        for hook_list, hook in zip(rest_hooks, (self._on_created, self._on_updated), strict=True):
            with contextlib.suppress(ValueError):
                hook_list.remove(hook)
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- REST hooks --------------------------------------------------------------------

    def _on_created(self, call: EmulatedCall) -> None:
        active = ActiveEmulatedCall(call, self.callee_factory(call))
        self.calls[call.sid] = active
        self._new_calls.put_nowait(active)
        task = asyncio.create_task(self._run(active), name=f"emulated-call-{call.sid}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_updated(self, call: EmulatedCall) -> None:
        active = self.calls.get(call.sid)
        if active is None:
            return
        update = call.last_update
        if update.get("Status") is None:
            if update.get("TimeLimit"):
                active.limit_changed.set()
            if update.get("Twiml") or update.get("Url"):
                active.redirected.set()
            return
        if call.status == "canceled" and active.answered_at is not None:
            call.status = active.status  # Twilio: canceling leaves a call in progress alone
            return
        active.request_hangup("server")

    # -- the call ----------------------------------------------------------------------

    def _session_(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    def _twilio_seconds(self, seconds: float) -> float:
        """Real seconds of a duration on Twilio's clock."""
        return seconds / self.playback_speed

    async def _run(self, active: ActiveEmulatedCall) -> None:
        log = logger.bind(callSid=active.sid)
        outbox: asyncio.Queue[_Outbound | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send_callbacks(active, outbox))
        try:
            if self.before_dial is not None:
                await self.before_dial(active.call)
            final = await self._dial(active, outbox)
            log.debug("emulated call ended: {} ({})", final, active.ended_by)
        except asyncio.CancelledError:
            active.errors.append("network closed during the call")
            raise
        except Exception as exc:
            log.exception("emulated call failed")
            active.errors.append(f"network error: {exc!r}")
            status = "completed" if active.answered_at is not None else "failed"
            self._end(active, outbox, status, by="network-error")
        finally:
            outbox.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            active.finished.set()

    async def _dial(
        self, active: ActiveEmulatedCall, outbox: asyncio.Queue[_Outbound | None]
    ) -> str:
        self._status(active, outbox, "initiated", "initiated")
        outcome = active.outcome
        if not await self._wait(active, self.ring_delay):
            return self._end(active, outbox, "canceled", by="server")
        if outcome == "failed":
            return self._end(active, outbox, "failed", by="network")
        if outcome == "busy":
            return self._end(active, outbox, "busy", by="callee")
        active.call.status = active.status = "ringing"
        self._status(active, outbox, "ringing", "ringing")
        if outcome == "no-answer":
            timeout = self.no_answer_after
            if timeout is None:
                ring = active.call.get("Timeout") or str(DEFAULT_RING_TIMEOUT)
                timeout = self._twilio_seconds(float(ring))
            if not await self._wait(active, timeout):
                return self._end(active, outbox, "canceled", by="server")
            return self._end(active, outbox, "no-answer", by="callee")
        if not await self._wait(active, self.answer_delay):
            return self._end(active, outbox, "canceled", by="server")
        active.answered_at = self._loop_time()
        active.call.status = active.status = "in-progress"
        self._status(active, outbox, "answered", "in-progress")
        active.ended_by = await self._answered(active)
        return self._end(active, outbox, "completed")

    async def _wait(self, active: ActiveEmulatedCall, seconds: float) -> bool:
        """Sleep `seconds`; False when a hang-up was requested meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(active.hangup_requested.wait(), max(0.0, seconds))
        return not active.hangup_requested.is_set()

    def _end(
        self,
        active: ActiveEmulatedCall,
        outbox: asyncio.Queue[_Outbound | None],
        status: str,
        *,
        by: str | None = None,
    ) -> str:
        active.ended_at = self._loop_time()
        if by is not None:
            active.ended_by = by
        talked = 0.0
        if active.answered_at is not None:
            talked = (active.ended_at - active.answered_at) * self.playback_speed
        active.duration = int(talked + 0.5)
        active.call.status = active.status = status
        self._status(
            active,
            outbox,
            "completed",
            status,
            duration=active.duration,
            sip_response_code=SIP_CODES.get(status, 200),
        )
        return status

    # -- callbacks ---------------------------------------------------------------------

    def _status(
        self,
        active: ActiveEmulatedCall,
        outbox: asyncio.Queue[_Outbound | None],
        event: str,
        call_status: str,
        *,
        duration: int | None = None,
        sip_response_code: int | None = None,
    ) -> None:
        url = active.call.get("StatusCallback")
        if not url or event not in hooks.requested_events(active.call):
            return
        params = hooks.status_params(
            active.call,
            self.account_sid,
            call_status,
            active.next_sequence(),
            duration=duration,
            sip_response_code=sip_response_code,
        )
        method = hooks.webhook_method(active.call.get("StatusCallbackMethod"))
        outbox.put_nowait(_Outbound("status", method, url, params))

    async def _send_callbacks(
        self, active: ActiveEmulatedCall, outbox: asyncio.Queue[_Outbound | None]
    ) -> None:
        """Status callbacks go out one at a time, in the order of their events."""
        while (item := await outbox.get()) is not None:
            await self._request(active, item.kind, item.method, item.url, item.params)

    async def _request(
        self, active: ActiveEmulatedCall, kind: str, method: str, url: str, params: dict[str, str]
    ) -> WebhookRecord:
        record = WebhookRecord(kind, method, url, params, sent_at=self._loop_time())
        active.webhooks.append(record)
        await hooks.deliver(self._session_(), record, auth_token=self.auth_token, route=self.route)
        if not record.ok:
            problem = record.error or f"HTTP {record.status}"
            active.errors.append(f"{kind} webhook {url} failed: {problem}")
        return record

    # -- answered: AMD, TwiML, the stream ----------------------------------------------

    def _answered_by(self, active: ActiveEmulatedCall) -> str:
        if active.callee.answered_by:
            return active.callee.answered_by
        if active.outcome == "machine":
            mode = active.call.get("MachineDetection")
            return "machine_end_beep" if mode == "DetectMessageEnd" else "machine_start"
        return "human"

    async def _answered(self, active: ActiveEmulatedCall) -> str:
        """Run the answered call until it ends; returns who or what ended it."""
        limit = self.time_limit
        if limit is None:
            seconds = active.call.get("TimeLimit") or str(DEFAULT_TIME_LIMIT)
            limit = self._twilio_seconds(float(seconds))
        body = asyncio.create_task(self._conversation(active))
        hangup = asyncio.create_task(active.hangup_requested.wait())
        changed = asyncio.create_task(active.limit_changed.wait())
        amd: asyncio.Task[None] | None = None
        detection = active.call.get("MachineDetection")
        if detection and active.call.get("AsyncAmd").lower() == "true":
            amd = asyncio.create_task(self._async_amd(active))
        assert active.answered_at is not None
        try:
            while True:
                remaining = active.answered_at + limit - self._loop_time()
                done, _ = await asyncio.wait(
                    {body, hangup, changed},
                    timeout=max(0.0, remaining),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if changed not in done:
                    break
                active.limit_changed.clear()
                limit = self._twilio_seconds(float(active.call.last_update["TimeLimit"]))
                changed = asyncio.create_task(active.limit_changed.wait())
            if body in done:
                ended_by = body.result()
            elif hangup in done:
                ended_by = active.hangup_by or "server"
            else:
                ended_by = "time-limit"
        finally:
            for task in (body, hangup, changed):
                task.cancel()
            await asyncio.gather(body, hangup, changed, return_exceptions=True)
            if active.media is not None and not active.media.closed.is_set():
                await active.media.stop()
            if amd is not None:
                await self._settle_amd(active, amd)
        return ended_by

    async def _settle_amd(self, active: ActiveEmulatedCall, amd: asyncio.Task[None]) -> None:
        """A detection still running is dropped with the call; one being sent completes."""
        if not active.amd_sending:
            amd.cancel()
        await asyncio.gather(amd, return_exceptions=True)

    async def _async_amd(self, active: ActiveEmulatedCall) -> None:
        await asyncio.sleep(self.amd_delay)
        active.answered_by = self._answered_by(active)
        url = active.call.get("AsyncAmdStatusCallback")
        if not url:
            return
        active.amd_sending = True
        duration_ms = round(self.amd_delay * 1000 * self.playback_speed)
        params = hooks.amd_params(active.call, self.account_sid, active.answered_by, duration_ms)
        method = hooks.webhook_method(active.call.get("AsyncAmdStatusCallbackMethod"))
        await self._request(active, "amd", method, url, params)

    async def _conversation(self, active: ActiveEmulatedCall) -> str:
        extra: dict[str, str] = {}
        detection = active.call.get("MachineDetection")
        if detection and active.call.get("AsyncAmd").lower() != "true":
            await asyncio.sleep(self.amd_delay)  # synchronous AMD holds the TwiML fetch
            active.answered_by = self._answered_by(active)
            extra = {
                "AnsweredBy": active.answered_by,
                "MachineDetectionDuration": str(round(self.amd_delay * 1000 * self.playback_speed)),
            }
        url = active.call.url
        if not url:
            active.errors.append("the call has no Url (inline Twiml is not executed)")
            return "application-error"
        method = hooks.webhook_method(active.call.get("Method"))
        verbs = await self._fetch_twiml(active, method, url, extra)
        while verbs is not None:
            run = asyncio.create_task(self._run_verbs(active, verbs))
            redirect = asyncio.create_task(active.redirected.wait())
            try:
                done, _ = await asyncio.wait({run, redirect}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (run, redirect):
                    if not task.done():
                        task.cancel()
                await asyncio.gather(run, redirect, return_exceptions=True)
            if run in done and not run.cancelled():
                return run.result()
            active.redirected.clear()
            verbs = await self._redirected_verbs(active)
        return "application-error"

    async def _redirected_verbs(self, active: ActiveEmulatedCall) -> list[Verb] | None:
        """The TwiML a REST update gave the call: inline `Twiml`, or fetched from `Url`."""
        update = active.call.last_update
        if update.get("Twiml"):
            try:
                verbs = parse_twiml(update["Twiml"])
            except TwimlError as exc:
                active.errors.append(f"invalid TwiML in a call update: {exc}")
                return None
            active.twiml = update["Twiml"]
            active.verbs.extend(verbs)
            return verbs
        method = hooks.webhook_method(update.get("Method"))
        return await self._fetch_twiml(active, method, update["Url"], {})

    async def _run_verbs(self, active: ActiveEmulatedCall, verbs: list[Verb]) -> str:
        verbs = list(verbs)
        while verbs:
            verb = verbs.pop(0)
            if isinstance(verb, Hangup):
                return "twiml-hangup"
            if isinstance(verb, ConnectStream):
                await self._stream(active, verb)
                if verb.action:
                    fetched = await self._fetch_twiml(active, verb.action_method, verb.action, {})
                    if fetched is None:
                        return "application-error"
                    verbs = fetched
            elif isinstance(verb, Dial):
                fetched = await self._dial_verb(active, verb)
                if fetched is None:
                    return "application-error"
                if verb.action:
                    verbs = fetched
            elif isinstance(verb, Pause):
                await asyncio.sleep(self._twilio_seconds(verb.seconds))
            elif isinstance(verb, Say | Play):
                await asyncio.sleep(self._twilio_seconds(0.5))
            elif isinstance(verb, Unsupported):
                active.warnings.append(f"<{verb.tag}> is not emulated; skipped")
        return "twiml-end"

    async def _dial_verb(self, active: ActiveEmulatedCall, verb: Dial) -> list[Verb] | None:
        """Run a `<Dial>`; the TwiML of its action (empty without one)."""

        async def request(kind: str, method: str, url: str, params: dict[str, str]) -> Any:
            return await self._request(active, kind, method, url, params)

        async def sleep(seconds: float) -> None:
            await asyncio.sleep(self._twilio_seconds(seconds))

        runner = DialRunner(
            active,
            lambda number: self.people.get(number, ScriptedPerson()),
            account_sid=self.account_sid,
            request=request,
            sleep=sleep,
            ring_seconds=self.ring_delay * self.playback_speed,
        )
        active.dialing.set()
        try:
            _, params = await runner.run(verb)
        finally:
            active.dialing.clear()
        if not verb.action:
            return []
        method = hooks.webhook_method(verb.method)
        return await self._fetch_twiml(active, method, verb.action, params, base=False)

    async def _fetch_twiml(
        self,
        active: ActiveEmulatedCall,
        method: str,
        url: str,
        extra: dict[str, str],
        *,
        base: bool = True,
    ) -> list[Verb] | None:
        params = dict(extra)
        if base:
            params = {**hooks.call_params(active.call, self.account_sid, "in-progress"), **extra}
        record = await self._request(active, "twiml", method, url, params)
        if not record.ok:
            return None  # Twilio plays "an application error has occurred" and hangs up
        active.twiml = record.body
        try:
            verbs = parse_twiml(record.body)
        except TwimlError as exc:
            active.errors.append(f"invalid TwiML: {exc}")
            return None
        active.verbs.extend(verbs)
        return verbs

    async def _stream(self, active: ActiveEmulatedCall, verb: ConnectStream) -> None:
        if not verb.url.startswith("wss://"):
            active.warnings.append(f"Stream url {verb.url} is not wss:// (Twilio requires it)")
        if "?" in verb.url:
            active.warnings.append(f"Stream url {verb.url} has a query string; use <Parameter>")
        client = TwilioMediaClient(
            self.route(verb.url),
            auth_token=self.auth_token,
            call_sid=active.sid,
            account_sid=self.account_sid,
            custom_parameters=verb.parameters,
            playback_speed=self.playback_speed,
            session=self._session_(),
            signature_url=verb.url,
            continuous=self.continuous_audio,
        )
        active.media = client
        active.streams.append(client)
        try:
            await client.connect()
        except (aiohttp.ClientError, OSError) as exc:
            active.errors.append(f"stream to {verb.url} failed: {exc!r}")
            return  # Twilio moves on to the next verb
        active.stream_started.set()
        callee = asyncio.create_task(self._run_callee(active))
        try:
            await client.closed.wait()
        finally:
            callee.cancel()
            await asyncio.gather(callee, return_exceptions=True)
            if not client.closed.is_set():
                # Redirected by a REST update: Twilio ends the stream with `stop`.
                await asyncio.shield(client.stop())

    async def _run_callee(self, active: ActiveEmulatedCall) -> None:
        try:
            await active.callee.run(active)
        except ConnectionResetError:
            return  # the stream closed under the callee
        except Exception as exc:
            logger.bind(callSid=active.sid).warning("callee failed: {!r}; hanging up", exc)
            active.callee_error = exc
            active.request_hangup("callee")
