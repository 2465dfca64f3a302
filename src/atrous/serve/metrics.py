"""The service's Prometheus metrics (``GET /metrics``), in a registry of its own so that two
apps in one process (tests) do not share counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ServiceMetrics"]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServiceMetrics:
    """Requests by endpoint and status, request latency, batch sizes, model time per batch,
    queue depth, in-flight requests, RSS and heap trims; the camera stream's connections and
    frames (received, answered, dropped, failed) and its frame latency."""

    def __init__(self, max_batch: int) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "atrous_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "atrous_request_latency_seconds",
            "POST /v1/segment latency, arrival to response",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "atrous_batch_size",
            "images per model batch",
            buckets=tuple(float(b) for b in range(1, max_batch + 1)),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "atrous_batch_seconds", "model time per batch", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("atrous_queue_depth", "requests waiting for the model", registry=r)
        self.in_flight = Gauge(
            "atrous_requests_in_flight", "segment requests being handled", registry=r
        )
        self.rejected = Counter(
            "atrous_rejected", "requests refused because the queue was full", registry=r
        )
        self.rss = Gauge("atrous_resident_memory_bytes", "RSS after the last batch", registry=r)
        self.trims = Counter(
            "atrous_memory_trims", "heap trims after a batch passed the memory limit", registry=r
        )
        self.stream_clients = Gauge(
            "atrous_stream_clients", "camera streams (/v1/stream) open now", registry=r
        )
        self.frames_received = Counter(
            "atrous_stream_frames_received", "camera-stream frames received", registry=r
        )
        self.frames_answered = Counter(
            "atrous_stream_frames_answered",
            "camera-stream frames answered with a result",
            registry=r,
        )
        self.frames_dropped = Counter(
            "atrous_stream_frames_dropped",
            "camera-stream frames dropped: replaced by a newer frame of the same client before "
            "the model saw them, or left when the client went away",
            registry=r,
        )
        self.frames_failed = Counter(
            "atrous_stream_frames_failed", "camera-stream frames answered with an error", registry=r
        )
        self.frame_latency = Histogram(
            "atrous_stream_frame_latency_seconds",
            "camera-stream frame latency, arrival to reply",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
