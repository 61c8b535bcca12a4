"""Prometheus metrics of the ingest webhook."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "incident_alarms_received_total",
            "Alarms received, by source and outcome "
            "(created, counted, redelivery, recovered, no_open_incident).",
            ["source", "outcome"],
            registry=registry,
        )
        self.dedup_hits = Counter(
            "incident_alarm_dedup_hits_total",
            "Alarms folded into an existing Incident: a repeat (occurrence) "
            "or the same delivery again (redelivery).",
            ["source", "kind"],
            registry=registry,
        )
        self.rejected = Counter(
            "incident_ingest_rejected_total",
            "Requests refused, by reason.",
            ["reason"],
            registry=registry,
        )
        self.shed = Counter(
            "incident_ingest_shed_total",
            "Alarm requests refused with 503 because INGEST_MAX_IN_FLIGHT were in flight "
            "(load shedding), by source; nothing of them was recorded.",
            ["source"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "incident_ingest_in_flight",
            "Alarm requests being worked on now (at most INGEST_MAX_IN_FLIGHT).",
            registry=registry,
        )
        self.truncated = Counter(
            "incident_alertmanager_alerts_truncated_total",
            "Alerts a notification said it left out (Alertmanager's truncatedAlerts, "
            "from max_alerts): they never reached the webhook.",
            registry=registry,
        )
        self.latency = Histogram(
            "incident_ingest_seconds",
            "Time from a parsed alarm to its durable record, by source.",
            ["source"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
