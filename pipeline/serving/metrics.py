"""What the server has done, for GET /metrics in Prometheus' text format (prometheus-client).

Names follow Triton's metrics where they mean the same thing (nv_inference_request_success,
nv_inference_request_failure, nv_inference_count, nv_inference_exec_count, and the request, queue and
compute durations); prometheus-client adds `_total` to counters. Triton's durations are cumulative
counters; here they are histograms (their `_sum` is Triton's counter, in seconds rather than
microseconds). Each Service has its own registry, so two apps in one process never share counts.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: from a seed model's tens of microseconds to a slow client's body or a first load.
DURATION_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.5, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LABELS = ("model", "format")


class Metrics:
    """The server's counters and histograms, in their own registry."""

    def __init__(self, loaded: Callable[[], int] = lambda: 0) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.success = Counter("nv_inference_request_success", "Requests answered", LABELS, registry=r)
        self.failure = Counter(
            "nv_inference_request_failure",
            "Requests refused or failed, by HTTP status",
            (*LABELS, "reason"),
            registry=r,
        )
        self.inferences = Counter("nv_inference_count", "Examples (batch rows) inferred", LABELS, registry=r)
        self.executions = Counter("nv_inference_exec_count", "Runtime calls (merged batches)", LABELS, registry=r)
        self.request = Histogram(
            "nv_inference_request_duration_seconds",
            "A request from its body read to its answer",
            LABELS,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "nv_inference_queue_duration_seconds",
            "Time the oldest request of a call waited in the batch queue",
            LABELS,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.compute = Histogram(
            "nv_inference_compute_infer_duration_seconds",
            "One runtime call, merged batch",
            LABELS,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.batch = Histogram(
            "nv_inference_batch_size", "Rows per runtime call", LABELS, buckets=BATCH_BUCKETS, registry=r
        )
        self.loaded = Gauge("nv_inference_loaded_predictors", "Predictors loaded (model, format, device)", registry=r)
        self.loaded.set_function(loaded)

    def answered(self, model: str, fmt: str, status: int, seconds: float) -> None:
        """One request for `model`'s `fmt` answered with HTTP `status`, `seconds` after it was read."""
        if status < 400:
            self.success.labels(model, fmt).inc()
        else:
            self.failure.labels(model, fmt, str(status)).inc()
        self.request.labels(model, fmt).observe(seconds)

    def observer(self, model: str, fmt: str) -> Callable[[int, float, float], None]:
        """What a Batcher reports after each call: rows, queue and compute seconds."""
        children = (
            self.inferences.labels(model, fmt),
            self.executions.labels(model, fmt),
            self.queue.labels(model, fmt),
            self.compute.labels(model, fmt),
            self.batch.labels(model, fmt),
        )

        def observe(rows: int, queue_s: float, compute_s: float) -> None:
            inferences, executions, queue, compute, batch = children
            inferences.inc(rows)
            executions.inc()
            queue.observe(queue_s)
            compute.observe(compute_s)
            batch.observe(rows)

        return observe

    def text(self) -> bytes:
        """Every metric in Prometheus' text exposition format."""
        return generate_latest(self.registry)
