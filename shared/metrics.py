"""Prometheus metrics of one service process, on a registry of its own (no module-level state)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass
class Metrics:
    service: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.consumed = Counter(
            "lethe_events_consumed_total",
            "Events taken from Kafka, by topic and outcome (ok, dead_lettered).",
            ["topic", "outcome"],
            registry=self.registry,
        )
        self.published = Counter(
            "lethe_events_published_total", "Events published, by topic.", ["topic"], registry=self.registry
        )
        self.retries = Counter(
            "lethe_handler_retries_total",
            "Handler attempts that failed and were retried.",
            ["topic"],
            registry=self.registry,
        )
        self.handle_seconds = Histogram(
            "lethe_handle_seconds",
            "Time to handle one event, retries included.",
            ["topic"],
            registry=self.registry,
        )
