"""Prometheus metrics for a worker: ``embeddb worker --metrics-port 9464``.

Two kinds of numbers, on one endpoint (``/metrics``):

* what this worker process did, counted as it goes: rows stored, superseded and failed per
  column; batch, model and write seconds per column (histograms); how long each model took
  to load; when its last heartbeat was written;
* the state of each column's queue, read from the database at scrape time with one query over
  ``embeddb.pending`` (every worker reports the same values; aggregate them with ``max``):
  rows pending, in flight and parked, and the age of the oldest entry not parked (the lag).

Parked rows are a gauge from the database, not a counter: parking happens in SQL and a row
parked once stays parked until ``embeddb retry``, whoever parked it.

Needs ``prometheus-client`` (``pip install 'embeddb[metrics]'``).

Example::

    worker = Worker(url)
    port = embeddb.metrics.serve(worker, 9464)
    worker.run()
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import sqlalchemy as sa

from .database import create_engine, redacted
from .embedders import load_times
from .errors import EmbeddbError
from .sql import queries
from .worker import BatchResult, Worker

try:
    from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.process_collector import ProcessCollector
    from prometheus_client.registry import Collector
except ImportError as exc:  # an optional dependency: say how to get it
    raise EmbeddbError(
        "metrics need the prometheus-client package: pip install 'embeddb[metrics]'"
        " (or pip install prometheus-client)"
    ) from exc

log = logging.getLogger(__name__)

# A batch of 256 long texts on a CPU takes tens of seconds; the defaults stop at 10.
_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_SCRAPE_TIMEOUT_MS = 5000


class WorkerMetrics:
    """The metrics of one worker, in a registry of their own.

    Creating it subscribes to the worker's batches; :func:`serve` also serves it over HTTP.
    """

    def __init__(self, worker: Worker, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        column = ["column"]
        self.stored = Counter("embeddb_rows_stored", "Rows written: a vector, or NULL for a"
                              " row with no text", column, registry=self.registry)
        self.superseded = Counter("embeddb_rows_superseded", "Rows whose text changed while"
                                  " the model ran; handed back to embed again", column,
                                  registry=self.registry)
        self.failed = Counter("embeddb_rows_failed", "Failed attempts (the row is retried"
                              " with backoff, then parked)", column, registry=self.registry)
        self.batch_seconds = Histogram("embeddb_batch_seconds", "A batch from its claim to"
                                       " its write's commit", column, registry=self.registry,
                                       buckets=_SECONDS_BUCKETS)
        self.model_seconds = Histogram("embeddb_model_seconds", "The model's time on a batch",
                                       column, registry=self.registry, buckets=_SECONDS_BUCKETS)
        self.write_seconds = Histogram("embeddb_write_seconds", "Storing a batch's vectors (one"
                                       " transaction)", column, registry=self.registry,
                                       buckets=_SECONDS_BUCKETS)
        self.registry.register(_WorkerCollector(worker))
        self.registry.register(QueueCollector(worker.url))
        ProcessCollector(registry=self.registry)
        worker.batch_listeners.append(self.observe)

    def observe(self, result: BatchResult) -> None:
        """Count one batch (called by the worker after each write)."""
        column = result.column
        self.stored.labels(column).inc(result.stored)
        self.superseded.labels(column).inc(result.superseded)
        self.failed.labels(column).inc(result.failed)
        self.batch_seconds.labels(column).observe(result.batch_seconds)
        self.model_seconds.labels(column).observe(result.model_seconds)
        self.write_seconds.labels(column).observe(result.write_seconds)


def serve(worker: Worker, port: int, address: str = "0.0.0.0") -> int:
    """Serve ``worker``'s metrics at ``http://address:port/metrics`` from a daemon thread.

    Returns the port listened on (``port=0`` picks a free one).
    """
    metrics = WorkerMetrics(worker)
    try:
        server, _ = start_http_server(port, addr=address, registry=metrics.registry)
    except OSError as exc:
        raise EmbeddbError(f"cannot serve metrics on {address}:{port}: {exc.strerror}") from exc
    bound = int(server.server_port)
    log.info("metrics on http://%s:%d/metrics", address, bound)
    return bound


class QueueCollector(Collector):
    """Each column's queue, read from the database when scraped (one query, 5 s at most)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._engine = create_engine(
            url, pool_size=1, max_overflow=0, pool_pre_ping=True,
            connect_args={"application_name": "embeddb-metrics",
                          "options": f"-c statement_timeout={_SCRAPE_TIMEOUT_MS}"})

    def collect(self) -> Iterator[Metric]:
        gauges = {
            "pending": GaugeMetricFamily("embeddb_queue_depth", "Rows waiting to be embedded"
                                         " (not claimed, not parked)", labels=["column"]),
            "in_flight": GaugeMetricFamily("embeddb_in_flight_rows", "Rows claimed by a worker"
                                           " under a live lease", labels=["column"]),
            "parked": GaugeMetricFamily("embeddb_parked_rows", "Rows parked after failing too"
                                        " often (embeddb retry requeues them)",
                                        labels=["column"]),
            "lag_seconds": GaugeMetricFamily("embeddb_lag_seconds", "Age of the oldest queued"
                                             " row not parked (0 when none)", labels=["column"]),
        }
        up = GaugeMetricFamily("embeddb_queue_scrape_success", "1 if the queue could be read")
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(sa.text(queries["metrics_queue"])).all()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("metrics: cannot read the queue from %s: %s", redacted(self._url),
                        type(exc.__cause__ or exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        for row in rows:
            for field, gauge in gauges.items():
                gauge.add_metric([row.qualified_column], float(getattr(row, field)))
        up.add_metric([], 1)
        yield from gauges.values()
        yield up


class _WorkerCollector(Collector):
    """This process's worker: identity, last heartbeat and model load times."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("embeddb_worker_info", "The worker this process runs",
                                 labels=["worker_id"])
        info.add_metric([self._worker.worker_id], 1)
        yield info
        heartbeat = GaugeMetricFamily("embeddb_worker_last_heartbeat_timestamp_seconds",
                                      "Unix time of the worker's last heartbeat in the database")
        heartbeat.add_metric([], self._worker.heartbeat_at or 0.0)
        yield heartbeat
        loads = GaugeMetricFamily("embeddb_model_load_seconds", "How long loading a model took",
                                  labels=["model"])
        for model, seconds in load_times().items():
            loads.add_metric([model], seconds)
        yield loads


__all__ = ["QueueCollector", "WorkerMetrics", "serve"]
