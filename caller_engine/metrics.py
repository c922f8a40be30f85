"""Production metrics in Prometheus form. One registry per application, so several apps in
one process (tests, the simulator) never share counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    5.0,
)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.active_calls = Gauge(
            "caller_engine_active_calls", "Media streams being bridged now", registry=r
        )
        self.calls_finished = Counter(
            "caller_engine_calls_finished", "Calls by final status", ["status"], registry=r
        )
        self.greeting_latency = Histogram(
            "caller_engine_greeting_latency_seconds",
            "Stream start to the first agent audio sent to Twilio",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.response_latency = Histogram(
            "caller_engine_response_latency_seconds",
            "End of caller speech (speech_stopped) to the first agent audio of the answer",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.barge_in_latency = Histogram(
            "caller_engine_barge_in_latency_seconds",
            "speech_started received from the model to `clear` sent to Twilio",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.tool_duration = Histogram(
            "caller_engine_tool_duration_seconds",
            "Tool calls by tool and outcome",
            ["tool", "outcome"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.model_reconnects = Counter(
            "caller_engine_model_reconnects", "Model sessions restored after a drop", registry=r
        )
        self.malformed_frames = Counter(
            "caller_engine_malformed_frames",
            "Twilio media-stream frames skipped as malformed",
            registry=r,
        )
        self.dropped_frames = Counter(
            "caller_engine_dropped_inbound_frames",
            "Caller audio frames dropped because the model socket was backed up or reconnecting",
            registry=r,
        )
        self.transfers = Counter(
            "caller_engine_transfers",
            "Hand-offs to a person by outcome (connected, no-answer, busy, declined, ...)",
            ["outcome"],
            registry=r,
        )
        self.transfer_human_seconds = Histogram(
            "caller_engine_transfer_human_seconds",
            "Length of the person-to-person part of connected transfers",
            buckets=(10, 30, 60, 120, 300, 600, 1800, 3600, 14_400),
            registry=r,
        )
        self.signature_failures = Counter(
            "caller_engine_webhook_signature_failures",
            "Twilio requests refused for a missing or invalid signature",
            ["endpoint"],
            registry=r,
        )

        self.initiate_refused = Counter(
            "caller_engine_initiate_refused",
            "Calls refused before dialing: outside_calling_hours, do_not_call, frequency_cap",
            ["reason"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
