"""Where replay takes its measurements: hooks on the model emulator and the Twilio media
clients, all in the replay process and on the same clock (the event loop's monotonic time).

caller→model: the driver notes when it sends each marked frame; the emulator's
`on_input_audio` sees the marker arrive. model→caller: the emulator's `on_server_event` sees
each audio delta (with its frame markers) go out; the media client's `on_media` sees the
frames arrive. speech_started → clear, tool round trips and greetings are matched the same
way. `Recorder.finish` turns what was seen into per-direction figures.
"""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass, field
from typing import Any

from caller_engine.replay import markers
from caller_engine.replay.scenario import MarkedScript, PlannedResponse
from caller_engine.replay.stats import SequenceCheck, histogram, jitter, summarize
from caller_engine.sim.realtime.session import EmulatedRealtimeSession

AUDIO_DELTA = "response.output_audio.delta"
SPEECH_STARTED = "input_audio_buffer.speech_started"
CALL_DONE = "response.function_call_arguments.done"
# Frames sent (or emitted) this close to the end of a call may still be in flight at
# hang-up: not counted as lost when they never arrive.
END_GRACE_S = 0.3
# A turn counts only when no agent audio arrived in this window before the caller stopped.
TURN_QUIET_S = 0.2


@dataclass
class CallProbe:
    index: int
    stream: int  # marker stream id of this call's caller audio
    callback_id: str
    call_sid: str | None = None
    started_at: float | None = None  # stream started (the client sent `start`)
    first_audio_at: float | None = None
    stopped_at: float | None = None
    error: str | None = None
    sent_at: list[float] = field(default_factory=list)  # by caller frame sequence number
    inbound: SequenceCheck = field(default_factory=SequenceCheck)
    in_latency_ms: list[float] = field(default_factory=list)
    out_transit_ms: list[float] = field(default_factory=list)
    media_messages: int = 0
    clears: list[float] = field(default_factory=list)
    last_media_at: float | None = None
    pending_turn: float | None = None
    turn_ms: list[float] = field(default_factory=list)


@dataclass
class SessionProbe:
    """One model emulator session (one call's model connection)."""

    stream: int | None = None
    call: int | None = None
    speech_started: list[float] = field(default_factory=list)
    emitted: dict[int, tuple[float, str]] = field(default_factory=dict)  # seq → (at, response)
    arrived: SequenceCheck = field(default_factory=SequenceCheck)
    cancelled: dict[str, float] = field(default_factory=dict)  # response id → done at
    tool_ms: list[float] = field(default_factory=list)


def _ms(seconds: float) -> float:
    return seconds * 1000.0


class Recorder:
    def __init__(self, plan: list[PlannedResponse] | None = None) -> None:
        self.plan = list(plan or [])
        self.calls: list[CallProbe] = []
        self._by_stream: dict[int, CallProbe] = {}
        self.sessions: dict[EmulatedRealtimeSession, SessionProbe] = {}
        self._session_streams: dict[int, SessionProbe] = {}
        self._pending_tools: dict[str, tuple[float, SessionProbe]] = {}
        self._stream_ids = itertools.count()
        self.frames_in = 0
        self.frames_out = 0

    # -- set-up ----------------------------------------------------------------------------

    def new_call(self, index: int, callback_id: str) -> CallProbe:
        stream = index % (markers.MAX_STREAM + 1)
        probe = CallProbe(index, stream, callback_id)
        self.calls.append(probe)
        self._by_stream[stream] = probe
        return probe

    def new_script(self) -> MarkedScript:
        """The model emulator's script factory: each session gets its own marker stream."""
        stream = next(self._stream_ids) % (markers.MAX_STREAM + 1)
        return MarkedScript(stream=stream, plan=self.plan)

    def _session(self, session: EmulatedRealtimeSession) -> SessionProbe:
        probe = self.sessions.get(session)
        if probe is None:
            probe = SessionProbe()
            script = session.script
            if isinstance(script, MarkedScript):
                probe.stream = script.stream
                self._session_streams[script.stream] = probe
            self.sessions[session] = probe
        return probe

    # -- driver ----------------------------------------------------------------------------

    def speech_end(self, call: CallProbe, at: float) -> None:
        """The caller's last speech frame of an utterance went out at `at`."""
        if call.last_media_at is None or call.last_media_at < at - TURN_QUIET_S:
            call.pending_turn = at

    # -- model emulator hooks ----------------------------------------------------------------

    def on_input_audio(self, session: EmulatedRealtimeSession, data: bytes, at: float) -> None:
        for marker in markers.find(data):
            call = self._by_stream.get(marker.stream)
            if call is None:
                continue
            probe = self._session(session)
            if probe.call is None:
                probe.call = call.index
            if not call.inbound.arrive(marker.seq):
                continue
            self.frames_in += 1
            if marker.seq < len(call.sent_at):
                call.in_latency_ms.append(_ms(at - call.sent_at[marker.seq]))

    def on_server_event(
        self, session: EmulatedRealtimeSession, event: dict[str, Any], at: float
    ) -> None:
        kind = event.get("type")
        if kind == AUDIO_DELTA:
            probe = self._session(session)
            response_id = str(event.get("response_id", ""))
            for marker in markers.find(base64.b64decode(event["delta"])):
                probe.emitted[marker.seq] = (at, response_id)
        elif kind == SPEECH_STARTED:
            self._session(session).speech_started.append(at)
        elif kind == CALL_DONE:
            self._pending_tools[str(event.get("call_id"))] = (at, self._session(session))
        elif kind == "response.done":
            response = event.get("response") or {}
            if response.get("status") == "cancelled":
                self._session(session).cancelled[str(response.get("id"))] = at

    def on_client_event(
        self, session: EmulatedRealtimeSession, event: dict[str, Any], at: float
    ) -> None:
        if event.get("type") != "conversation.item.create":
            return
        item = event.get("item") or {}
        if item.get("type") != "function_call_output":
            return
        pending = self._pending_tools.pop(str(item.get("call_id")), None)
        if pending is not None:
            started, probe = pending
            probe.tool_ms.append(_ms(at - started))

    # -- media client hooks ----------------------------------------------------------------

    def on_media(self, call: CallProbe, at: float, ulaw: bytes) -> None:
        call.media_messages += 1
        call.last_media_at = at
        if call.first_audio_at is None:
            call.first_audio_at = at
        if call.pending_turn is not None:
            call.turn_ms.append(_ms(at - call.pending_turn))
            call.pending_turn = None
        timed = False
        for marker in markers.find(ulaw):
            probe = self._session_streams.get(marker.stream)
            if probe is None:
                continue
            if probe.call is None:
                probe.call = call.index
            if not probe.arrived.arrive(marker.seq):
                continue
            self.frames_out += 1
            if not timed:
                emitted = probe.emitted.get(marker.seq)
                if emitted is not None:
                    call.out_transit_ms.append(_ms(at - emitted[0]))
                    timed = True

    def on_clear(self, call: CallProbe, at: float) -> None:
        call.clears.append(at)

    # -- results ---------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        """Per-direction figures over every call of the run."""
        sessions_by_call: dict[int, list[SessionProbe]] = {}
        for probe in self.sessions.values():
            if probe.call is not None:
                sessions_by_call.setdefault(probe.call, []).append(probe)
        in_lat: list[float] = []
        out_lat: list[float] = []
        out_jitter: list[float] = []
        greeting: list[float] = []
        clear_ms: list[float] = []
        tool_ms: list[float] = []
        turn_ms: list[float] = []
        inbound = {"sent": 0, "received": 0, "lost": 0, "reordered": 0, "duplicated": 0}
        outbound = {
            "sent": 0,
            "received": 0,
            "lost": 0,
            "reordered": 0,
            "duplicated": 0,
            "staleForwarded": 0,
        }
        errors: list[str] = []
        for call in self.calls:
            if call.error:
                errors.append(f"{call.callback_id}: {call.error}")
            in_lat += call.in_latency_ms
            out_lat += call.out_transit_ms
            out_jitter += jitter(call.out_transit_ms)
            turn_ms += call.turn_ms
            if call.started_at is not None and call.first_audio_at is not None:
                greeting.append(_ms(call.first_audio_at - call.started_at))
            _count_inbound(call, inbound)
            probes = sessions_by_call.get(call.index, [])
            starts = sorted(at for probe in probes for at in probe.speech_started)
            clear_ms += clear_latencies(starts, call.clears)
            for probe in probes:
                tool_ms += probe.tool_ms
                _count_outbound(probe, call.stopped_at, outbound)
        return {
            "calls": len(self.calls),
            "failedCalls": sum(1 for call in self.calls if call.error),
            "callerToModel": {**summarize(in_lat), **inbound},
            "modelToCaller": {**summarize(out_lat), **outbound, "jitter": summarize(out_jitter)},
            "greeting": summarize(greeting),
            "speechStartedToClear": summarize(clear_ms),
            "toolRoundTrip": summarize(tool_ms),
            "turnLatency": summarize(turn_ms),
            "histograms": {
                "callerToModel": histogram(in_lat),
                "modelToCaller": histogram(out_lat),
            },
            "errors": errors[:20],
            "_samples": {
                "callerToModel": in_lat,
                "modelToCaller": out_lat,
                "greeting": greeting,
                "speechStartedToClear": clear_ms,
                "toolRoundTrip": tool_ms,
                "turnLatency": turn_ms,
            },
        }


def clear_latencies(speech_started: list[float], clears: list[float]) -> list[float]:
    """For each clear, ms since the latest speech_started before it (sorted inputs)."""
    out: list[float] = []
    index = 0
    latest: float | None = None
    for clear in sorted(clears):
        while index < len(speech_started) and speech_started[index] <= clear:
            latest = speech_started[index]
            index += 1
        if latest is not None:
            out.append(_ms(clear - latest))
            latest = None  # one clear per speech_started
    return out


def _count_inbound(call: CallProbe, totals: dict[str, int]) -> None:
    horizon = (call.stopped_at or float("inf")) - END_GRACE_S
    sent = sum(1 for at in call.sent_at if at <= horizon)
    lost = sum(
        1 for seq, at in enumerate(call.sent_at) if at <= horizon and not call.inbound.has(seq)
    )
    totals["sent"] += sent
    totals["received"] += call.inbound.received
    totals["lost"] += lost
    totals["reordered"] += call.inbound.reordered
    totals["duplicated"] += call.inbound.duplicates


def _count_outbound(probe: SessionProbe, stopped_at: float | None, totals: dict[str, int]) -> None:
    horizon = (stopped_at or float("inf")) - END_GRACE_S
    starts = sorted(probe.speech_started)
    for seq, (at, response_id) in probe.emitted.items():
        if at > horizon:
            continue
        done = probe.cancelled.get(response_id)
        if done is not None and any(start <= at <= done for start in starts):
            # A late delta of an interrupted response: the bridge must drop it.
            if probe.arrived.has(seq):
                totals["staleForwarded"] += 1
            continue
        totals["sent"] += 1
        if not probe.arrived.has(seq):
            totals["lost"] += 1
    totals["received"] += probe.arrived.received
    totals["reordered"] += probe.arrived.reordered
    totals["duplicated"] += probe.arrived.duplicates
