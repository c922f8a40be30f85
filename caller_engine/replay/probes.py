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
import bisect
import itertools
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from caller_engine.replay import markers
from caller_engine.replay.scenario import MarkedScript, PlannedResponse
from caller_engine.replay.stats import SequenceCheck, histogram, jitter, summarize

AUDIO_DELTA = "response.output_audio.delta"
SPEECH_STARTED = "input_audio_buffer.speech_started"
CALL_DONE = "response.function_call_arguments.done"
# The same moments on the ElevenLabs Agents emulator.
EL_AUDIO, EL_INTERRUPTION, EL_TOOL_CALL = "audio", "interruption", "client_tool_call"
# Frames sent (or emitted) this close to the end of a call may still be in flight at
# hang-up: not counted as lost when they never arrive.
END_GRACE_S = 0.3
Timed = tuple[float, float]  # (loop time of the event, milliseconds)


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
    audio_t0: float | None = None  # when the caller audio's first frame is due
    sent_at: list[float] = field(default_factory=list)  # by caller frame sequence number
    inbound: SequenceCheck = field(default_factory=SequenceCheck)
    in_latency: list[Timed] = field(default_factory=list)  # (sent at, ms)
    out_transit: list[Timed] = field(default_factory=list)  # (received at, ms)
    media_messages: int = 0
    clears: list[float] = field(default_factory=list)
    last_media_at: float | None = None
    pending_turn: float | None = None
    turns: list[Timed] = field(default_factory=list)  # (caller stopped at, ms)


@dataclass
class SessionProbe:
    """One model emulator session (one call's model connection)."""

    stream: int | None = None
    call: int | None = None
    speech_started: list[float] = field(default_factory=list)
    emitted: dict[int, tuple[float, str]] = field(default_factory=dict)  # seq → (at, response)
    arrived: SequenceCheck = field(default_factory=SequenceCheck)
    cancelled: dict[str, float] = field(default_factory=dict)  # response id → done at
    tools: list[Timed] = field(default_factory=list)  # (call emitted at, ms)


def _ms(seconds: float) -> float:
    return seconds * 1000.0


class Recorder:
    def __init__(self, plan: list[PlannedResponse] | None = None, repeat_from: int = 0) -> None:
        self.plan = list(plan or [])
        self.repeat_from = repeat_from
        self.calls: list[CallProbe] = []
        self._by_stream: dict[int, CallProbe] = {}
        self.sessions: dict[Hashable, SessionProbe] = {}
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
        return MarkedScript(stream=stream, plan=self.plan, repeat_from=self.repeat_from)

    def _session(self, session: Any) -> SessionProbe:
        """`session`: one emulated model connection (any provider's), with its `script`."""
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

    def speech_end(self, call: CallProbe, started: float, ended: float) -> None:
        """The caller said something from `started` to `ended` (send times of its first and
        last frames). It counts as a turn when no agent audio arrived in its second half:
        the agent was silent, or stopped when interrupted, rather than talking over it."""
        quiet_from = started + (ended - started) / 2
        if call.last_media_at is None or call.last_media_at < quiet_from:
            call.pending_turn = ended

    # -- model emulator hooks ----------------------------------------------------------------

    def on_input_audio(self, session: Any, data: bytes, at: float) -> None:
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
                sent = call.sent_at[marker.seq]
                call.in_latency.append((sent, _ms(at - sent)))

    def on_server_event(self, session: Any, event: dict[str, Any], at: float) -> None:
        kind = event.get("type")
        if kind in (EL_AUDIO, EL_INTERRUPTION, EL_TOOL_CALL):
            self._elevenlabs_event(session, kind, event, at)
            return
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

    def _elevenlabs_event(self, session: Any, kind: str, event: dict[str, Any], at: float) -> None:
        probe = self._session(session)
        if kind == EL_AUDIO:
            audio = event["audio_event"]
            response_id = str(audio["event_id"])
            for marker in markers.find(base64.b64decode(audio["audio_base_64"])):
                probe.emitted[marker.seq] = (at, response_id)
        elif kind == EL_INTERRUPTION:
            # Barge-in: the service cut every older response; their later chunks are stale.
            floor = int(event["interruption_event"]["event_id"])
            probe.speech_started.append(at)
            for _, response_id in probe.emitted.values():
                if int(response_id) < floor:
                    probe.cancelled.setdefault(response_id, at)
        else:
            self._pending_tools[str(event["client_tool_call"]["tool_call_id"])] = (at, probe)

    def on_client_event(self, session: Any, event: dict[str, Any], at: float) -> None:
        if event.get("type") == "client_tool_result":
            self._tool_answered(str(event.get("tool_call_id")), at)
            return
        if event.get("type") != "conversation.item.create":
            return
        item = event.get("item") or {}
        if item.get("type") != "function_call_output":
            return
        self._tool_answered(str(item.get("call_id")), at)

    def _tool_answered(self, call_id: str, at: float) -> None:
        pending = self._pending_tools.pop(call_id, None)
        if pending is not None:
            started, probe = pending
            probe.tools.append((started, _ms(at - started)))

    # -- media client hooks ----------------------------------------------------------------

    def on_media(self, call: CallProbe, at: float, ulaw: bytes) -> None:
        call.media_messages += 1
        call.last_media_at = at
        if call.first_audio_at is None:
            call.first_audio_at = at
        if call.pending_turn is not None:
            call.turns.append((call.pending_turn, _ms(at - call.pending_turn)))
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
                    call.out_transit.append((at, _ms(at - emitted[0])))
                    timed = True

    def on_clear(self, call: CallProbe, at: float) -> None:
        call.clears.append(at)

    # -- results ---------------------------------------------------------------------------

    def finish(self, window: tuple[float, float] | None = None) -> dict[str, Any]:
        """Per-direction figures. With `window` (loop times), latency figures count only
        events inside it (the span when every call was up), and `wholeRun` keeps the
        figures of every sample, ramp-up and hang-ups included; loss and the greeting
        always cover every call."""
        start, end = window or (float("-inf"), float("inf"))

        def inside(samples: list[Timed]) -> list[float]:
            return [ms for at, ms in samples if start <= at <= end]

        sessions_by_call: dict[int, list[SessionProbe]] = {}
        for probe in self.sessions.values():
            if probe.call is not None:
                sessions_by_call.setdefault(probe.call, []).append(probe)
        series: dict[str, list[float]] = {
            key: []
            for key in (
                "callerToModel",
                "modelToCaller",
                "jitter",
                "greeting",
                "speechStartedToClear",
                "toolRoundTrip",
                "turnLatency",
            )
        }
        whole: dict[str, list[float]] = {"callerToModel": [], "modelToCaller": []}
        inbound = dict.fromkeys(("sent", "received", "lost", "reordered", "duplicated"), 0)
        outbound = dict.fromkeys(
            ("sent", "received", "lost", "reordered", "duplicated", "staleForwarded"), 0
        )
        errors: list[str] = []
        lossy: list[int] = []  # frames lost (both directions) by each call that lost any
        for call in self.calls:
            if call.error:
                errors.append(f"{call.callback_id}: {call.error}")
            series["callerToModel"] += inside(call.in_latency)
            series["modelToCaller"] += inside(call.out_transit)
            whole["callerToModel"] += [ms for _, ms in call.in_latency]
            whole["modelToCaller"] += [ms for _, ms in call.out_transit]
            series["jitter"] += inside(jitter(call.out_transit))
            series["turnLatency"] += inside(call.turns)
            if call.started_at is not None and call.first_audio_at is not None:
                series["greeting"].append(_ms(call.first_audio_at - call.started_at))
            lost_before = inbound["lost"] + outbound["lost"]
            if self.plan:  # frames are counted at the model by their markers
                _count_inbound(call, inbound)
            probes = sessions_by_call.get(call.index, [])
            starts = sorted(at for probe in probes for at in probe.speech_started)
            series["speechStartedToClear"] += inside(clear_latencies(starts, call.clears))
            for probe in probes:
                series["toolRoundTrip"] += inside(probe.tools)
                _count_outbound(probe, call.stopped_at, outbound)
            if (lost := inbound["lost"] + outbound["lost"] - lost_before) > 0:
                lossy.append(lost)
        return {
            "calls": len(self.calls),
            "failedCalls": sum(1 for call in self.calls if call.error),
            "callsWithLoss": len(lossy),
            "maxLostInOneCall": max(lossy, default=0),
            "callerToModel": {**summarize(series["callerToModel"]), **inbound},
            "modelToCaller": {
                **summarize(series["modelToCaller"]),
                **outbound,
                "jitter": summarize(series["jitter"]),
            },
            "greeting": summarize(series["greeting"]),
            "speechStartedToClear": summarize(series["speechStartedToClear"]),
            "toolRoundTrip": summarize(series["toolRoundTrip"]),
            "turnLatency": summarize(series["turnLatency"]),
            "wholeRun": {key: summarize(values) for key, values in whole.items()},
            "histograms": {
                "callerToModel": histogram(series["callerToModel"]),
                "modelToCaller": histogram(series["modelToCaller"]),
            },
            "errors": errors[:20],
            "_samples": series,
        }


def clear_latencies(speech_started: list[float], clears: list[float]) -> list[Timed]:
    """For each clear, (its time, ms since the latest speech_started before it); inputs
    sorted. A clear with no speech_started since the previous clear is not counted."""
    out: list[Timed] = []
    index = 0
    latest: float | None = None
    for clear in sorted(clears):
        while index < len(speech_started) and speech_started[index] <= clear:
            latest = speech_started[index]
            index += 1
        if latest is not None:
            out.append((clear, _ms(clear - latest)))
            latest = None
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
    # A response cancelled by a barge-in: frames emitted from that speech_started on are late
    # deltas, which the bridge must drop.
    cut_at = {
        response_id: bisect.bisect_right(starts, done)
        for response_id, done in probe.cancelled.items()
    }
    for seq, (at, response_id) in probe.emitted.items():
        if at > horizon:
            continue
        cut = cut_at.get(response_id)
        if cut and at >= starts[cut - 1]:
            if probe.arrived.has(seq):
                totals["staleForwarded"] += 1
            continue
        totals["sent"] += 1
        if not probe.arrived.has(seq):
            totals["lost"] += 1
    totals["received"] += probe.arrived.received
    totals["reordered"] += probe.arrived.reordered
    totals["duplicated"] += probe.arrived.duplicates
