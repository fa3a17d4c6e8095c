"""Prometheus metrics (DESIGN §9). Label values are bounded: no customer ids or addresses."""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter(
    "gateway_messages_total", "Messages by final result", ["result"]
)  # accepted | rejected | tempfailed
POLICY_DECISIONS = Counter("gateway_policy_decisions_total", "Policy decisions", ["policy", "action", "mode"])
POLICY_DURATION = Histogram(
    "gateway_policy_duration_seconds",
    "Time per policy check",
    ["policy"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
POLICY_ERRORS = Counter("gateway_policy_errors_total", "Policy crashes and timeouts", ["policy"])
RELAY_DURATION = Histogram(
    "gateway_relay_duration_seconds",
    "Time to relay one message",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RELAY_REPLIES = Counter(
    "gateway_relay_replies_total", "Downstream replies by class", ["class"]
)  # 2xx | 4xx | 5xx | error
DKIM_SIGN = Histogram(
    "gateway_dkim_sign_seconds",
    "Time to DKIM-sign one message",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
)
DKIM_UNSIGNED = Counter(
    "gateway_dkim_unsigned_total", "Messages relayed unsigned because no key was configured"
)
SESSIONS_ACTIVE = Gauge("gateway_sessions_active", "Open SMTP sessions", multiprocess_mode="livesum")
SESSIONS = Counter("gateway_sessions_total", "SMTP sessions opened", ["listener"])
AUTH_FAILURES = Counter("gateway_auth_failures_total", "Failed AUTH attempts")
FEEDBACK_EVENTS = Counter(
    "gateway_feedback_events_total", "Bounces, complaints, other feedback", ["kind", "class"]
)
SUPPRESSIONS = Counter("gateway_suppressions_total", "Suppressions added", ["reason"])


@functools.lru_cache(maxsize=4096)
def child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, looked up once: the hot path asks for the same few dozen
    children for every message, and labels() validates and locks each time."""
    return metric.labels(*labels)
