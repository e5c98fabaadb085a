"""Prometheus metrics of ``birnn serve`` (``GET /metrics``), in a registry of their own.

Requests and errors by endpoint and status, latency, images served, the digits predicted and
how many answers were unsure (top probability below a threshold: the first sign of inputs
drifting from MNIST), each model-dependent series labelled with the version that answered.
"""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# One-image requests take milliseconds; a 2,048-image batch about a second on 2 cores.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, low_confidence: float) -> None:
        self.low_confidence = low_confidence
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "birnn_requests", "HTTP requests answered", ["endpoint", "status"], registry=r
        )
        self.errors = Counter(
            "birnn_request_errors",
            "HTTP requests answered with 4xx or 5xx",
            ["endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "birnn_request_seconds",
            "Time to answer a request",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.images = Counter("birnn_images", "Images predicted", ["version"], registry=r)
        self.digits = Counter(
            "birnn_predicted_digits",
            "Images predicted as each digit",
            ["version", "digit"],
            registry=r,
        )
        self.unsure = Counter(
            "birnn_low_confidence_predictions",
            f"Images whose most likely digit had a probability below {low_confidence}",
            ["version"],
            registry=r,
        )
        self.model = Gauge(
            "birnn_model_info",
            "The model being served (value 1)",
            ["registered_model", "version", "alias", "run_id"],
            registry=r,
        )
        self.swaps = Counter(
            "birnn_model_swaps",
            "Times the followed alias moved and the new version took over",
            registry=r,
        )
        self.poll_errors = Counter(
            "birnn_registry_poll_errors", "Registry lookups that failed", registry=r
        )

    def serving(self, labels: dict[str, str], previous: dict[str, str] | None = None) -> None:
        if previous is not None:
            self.model.remove(*previous.values())
        self.model.labels(**labels).set(1)

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def predicted(self, version: str, probabilities: np.ndarray) -> None:
        p = np.asarray(probabilities)
        if p.ndim != 2 or len(p) == 0:
            return
        self.images.labels(version).inc(len(p))
        counts = np.bincount(p.argmax(axis=1), minlength=p.shape[1])
        for digit in np.flatnonzero(counts):
            self.digits.labels(version, str(digit)).inc(int(counts[digit]))
        unsure = int((p.max(axis=1) < self.low_confidence).sum())
        if unsure:
            self.unsure.labels(version).inc(unsure)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
