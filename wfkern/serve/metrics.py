"""Prometheus metrics of one server (its own registry, so several servers can live in one process)."""

from __future__ import annotations

from collections import OrderedDict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["ServerMetrics", "CONTENT_TYPE_LATEST"]

disable_created_metrics()  # no *_created series: they double the page and say nothing here

_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    """Requests by endpoint and status, images and requests per forward, latency, queue depth."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("wfkern_requests", "HTTP requests answered, by endpoint and status",
                                ("endpoint", "status"), registry=self.registry)
        self.batch_images = Histogram("wfkern_batch_size", "images in one forward of the model", buckets=_SIZES,
                                      registry=self.registry)
        self.batch_requests = Histogram("wfkern_batch_requests", "requests answered by one forward of the model",
                                        buckets=_SIZES, registry=self.registry)
        self.latency = Histogram("wfkern_request_latency_seconds", "time from a predict request's arrival to its "
                                 "answer", ("endpoint",), registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.queue_depth = Gauge("wfkern_queue_depth", "predict requests handed to the model worker and not yet "
                                 "answered", registry=self.registry)
        self._seen: OrderedDict[str, None] = OrderedDict()

    def observe_batch(self, batch: dict) -> None:
        """Count a forward once, however many of its requests report it."""
        key = batch.get("id")
        if key is None or key in self._seen:
            return
        self._seen[key] = None
        if len(self._seen) > 4096:
            self._seen.popitem(last=False)
        self.batch_images.observe(batch.get("images", 0))
        self.batch_requests.observe(batch.get("requests", 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
