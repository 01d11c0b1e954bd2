"""Prometheus metrics of ``edge run --metrics [HOST:]PORT``: ``/metrics`` over HTTP (see docs/metrics.md).

Everything but the latency histogram is read at scrape time from what the run keeps anyway: the pipeline's
``RollingStats`` (count, errors, fps, recent p50/p95), the ``SourceBoard`` (states and counters), the model
serving now and, with ``--mqtt``, the outbox's own stats. The histogram needs cumulative buckets, which a
rolling window cannot give: ``LatencySink`` (one more result sink) adds each result's stage timings to a few
integer buckets, a bisect per stage.

``prometheus_client`` is imported only by ``MetricsServer.start`` (``import edge`` and a run without
``--metrics`` never load it); it is the ``metrics`` extra: ``pip install 'edge-runtime[metrics]'``.
"""

from __future__ import annotations

import bisect
import errno
import logging
import threading
from collections.abc import Iterator
from typing import Any

from edge.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
STAGES = ("decode", "preprocess", "invoke", "postprocess", "total")
# seconds; a Pi's invoke spans ~1 ms (a small int8 model on a Coral) to ~1 s (a large float model on a Pi 3)
BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)
INSTALL_HINT = "pip install 'edge-runtime[metrics]'"


def parse_address(value: str | int, flag: str = "--metrics") -> tuple[str, int]:
    """``(host, port)`` of ``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT``; the host is 127.0.0.1 when left out."""
    text = str(value).strip()
    host, port_text = DEFAULT_HOST, text
    if text.startswith("["):
        inside, _, rest = text[1:].partition("]")
        if not inside or not rest.startswith(":"):
            raise ConfigError(f"{flag} {value!r}: write an IPv6 address as [ADDRESS]:PORT, e.g. [::1]:9100")
        host, port_text = inside, rest[1:]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if not host or ":" in host:
            raise ConfigError(f"{flag} {value!r}: give PORT or HOST:PORT, e.g. 127.0.0.1:9100")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"{flag} {value!r}: the port must be a number from 1 to 65535, e.g. 127.0.0.1:9100")
    return host, int(port_text)


class LatencySink:
    """A result sink that counts each successful result's stage timings into cumulative histogram buckets."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self._lock = threading.Lock()
        # per stage: a count per bucket (the last one +Inf, not cumulative yet), and the sum in seconds
        self._counts = {stage: [0] * (len(buckets) + 1) for stage in STAGES}
        self._sums = dict.fromkeys(STAGES, 0.0)

    def emit(self, record: dict[str, Any]) -> None:
        timing = record.get("timing_ms")
        if record.get("error") or not timing:
            return  # as RollingStats: a failed input's timings are not latencies
        with self._lock:
            for stage in STAGES:
                seconds = timing.get(stage, 0.0) / 1000.0
                self._counts[stage][bisect.bisect_left(self.buckets, seconds)] += 1
                self._sums[stage] += seconds

    def close(self) -> None:
        pass

    def snapshot(self) -> dict[str, tuple[list[tuple[str, int]], float]]:
        """``{stage: ([(le, cumulative count)...], sum_seconds)}``, ``+Inf`` last."""
        with self._lock:
            counts = {stage: list(values) for stage, values in self._counts.items()}
            sums = dict(self._sums)
        out = {}
        for stage, values in counts.items():
            running, rows = 0, []
            for bound, n in zip([*(_le(b) for b in self.buckets), "+Inf"], values, strict=True):
                running += n
                rows.append((bound, running))
            out[stage] = (rows, sums[stage])
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


class RunCollector:
    """A ``prometheus_client`` collector over one run's pipeline, source board, latency sink and outbox.

    ``attach`` gives it the parts once built (the server starts first, so that a busy port fails before the
    model loads); until then a scrape returns only the metrics that need none.
    """

    def __init__(self) -> None:
        self.pipeline: Any = None
        self.board: Any = None
        self.latency: LatencySink | None = None
        self.outbox: Any = None
        self.updates: Any = None

    def attach(
        self, pipeline: Any, board: Any, latency: LatencySink | None = None, outbox: Any = None,
        updates: Any = None,
    ) -> None:
        """``updates``: the update agent (its ``status``: the state of the latest model update)."""
        self.pipeline, self.board, self.latency, self.outbox = pipeline, board, latency, outbox
        self.updates = updates

    def describe(self) -> list[Any]:
        return []  # the families depend on the run: collect() is not called at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            InfoMetricFamily,
        )

        pipeline, board, latency, outbox = self.pipeline, self.board, self.latency, self.outbox
        serving = GaugeMetricFamily("edge_serving", "1 once the model is loaded and the run infers, else 0")
        serving.add_metric([], 1.0 if pipeline is not None else 0.0)
        yield serving
        if pipeline is None:
            return
        model = pipeline.model
        info = InfoMetricFamily("edge_model", "the model serving now", labels=())
        info.add_metric([], {
            "name": str(model.name), "version": str(model.version),
            "backend": str(getattr(model, "backend_name", "")), "task": str(getattr(model, "task", "")),
        })
        yield info
        stats = pipeline.stats()
        inferences = CounterMetricFamily("edge_inferences", "inputs inferred (failed ones included)")
        inferences.add_metric([], stats["count"])
        yield inferences
        errors = CounterMetricFamily("edge_inference_errors", "inputs that failed (unreadable, bad image...)")
        errors.add_metric([], stats["errors"])
        yield errors
        fps = GaugeMetricFamily("edge_inferences_per_second", "inference rate over the recent window")
        fps.add_metric([], stats["fps"])
        yield fps
        recent = GaugeMetricFamily(
            "edge_inference_latency_recent_seconds",
            "latency quantiles over the last 1000 inferences, per stage", labels=["stage", "quantile"],
        )
        for stage in STAGES:
            for key, quantile in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")):
                recent.add_metric([stage, quantile], stats[stage][key] / 1000.0)
        yield recent
        if latency is not None:
            histogram = HistogramMetricFamily(
                "edge_inference_latency_seconds", "latency of each successful inference, per stage",
                labels=["stage"],
            )
            for stage, (rows, total) in latency.snapshot().items():
                histogram.add_metric([stage], rows, total)
            yield histogram
        if board is not None:
            yield from _source_families(board.snapshot())
        if outbox is not None:
            yield from _outbox_families(outbox)
        status = getattr(self.updates, "status", None)
        if status is not None:
            yield from _update_families(status)


_SOURCE_COUNTERS = (
    ("captured", "edge_source_frames_captured", "frames captured"),
    ("skipped", "edge_source_frames_skipped", "frames dropped for a newer one (the --fps cap too)"),
    ("motion_skipped", "edge_source_frames_motion_skipped", "frames the motion gate skipped"),
    ("inferred", "edge_source_inferred", "inputs handed to inference"),
    ("reconnects", "edge_source_reconnects", "reconnects"),
    ("errors", "edge_source_errors", "read or decode errors"),
)


UPDATE_STATES = ("idle", "downloading", "verifying", "validating", "shadowing", "active", "rejected",
                 "rolled_back")


def _update_families(status: Any) -> Iterator[Any]:
    """The latest model update: its state (one gauge per state, 1 for the current one), progress, version,
    and the shadow stage's running agreement."""
    from prometheus_client.core import GaugeMetricFamily

    state = GaugeMetricFamily("edge_update_state", "1 for the state of the latest model update",
                              labels=["state"])
    for name in UPDATE_STATES:
        state.add_metric([name], 1.0 if status.state == name else 0.0)
    yield state
    progress = GaugeMetricFamily("edge_update_progress_ratio", "progress of that state, 0 to 1")
    progress.add_metric([], float(status.progress))
    yield progress
    version = GaugeMetricFamily("edge_update_version", "the model version the latest update is about")
    version.add_metric([], float(status.version))
    yield version
    shadow = status.shadow or {}
    if shadow.get("agreement") is not None:
        agreement = GaugeMetricFamily("edge_update_shadow_agreement_ratio",
                                      "the shadowed candidate's agreement with the serving model")
        agreement.add_metric([], float(shadow["agreement"]))
        yield agreement
        samples = GaugeMetricFamily("edge_update_shadow_samples", "live inputs the candidate was compared on")
        samples.add_metric([], float(shadow.get("samples") or 0))
        yield samples


def _source_families(snapshot: dict[str, dict[str, Any]]) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    from edge.sources.base import STATES

    state = GaugeMetricFamily(
        "edge_source_state", "1 for the state each source is in, 0 for the others",
        labels=["source", "kind", "state"],
    )
    since = GaugeMetricFamily(
        "edge_source_state_since_seconds", "Unix time the source entered its state", labels=["source"]
    )
    counters = {
        field: CounterMetricFamily(name, f"per source: {text}", labels=["source"])
        for field, name, text in _SOURCE_COUNTERS
    }
    for name, values in snapshot.items():
        for each in STATES:
            state.add_metric([name, values["kind"], each], 1.0 if values["state"] == each else 0.0)
        since.add_metric([name], values["since"])
        for field, family in counters.items():
            family.add_metric([name], values[field])
    yield state
    yield since
    yield from counters.values()


def _outbox_families(outbox: Any) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    try:
        stats = outbox.stats()  # counters kept in memory; one indexed SELECT for the oldest message
    except Exception:  # a scrape must not fail for the outbox: the others still count
        log.debug("cannot read the outbox stats for /metrics", exc_info=True)
        return
    pending = GaugeMetricFamily("edge_outbox_pending_messages", "messages waiting to be acknowledged")
    pending.add_metric([], stats.pending)
    yield pending
    size = GaugeMetricFamily("edge_outbox_pending_bytes", "payload bytes waiting to be acknowledged")
    size.add_metric([], stats.pending_bytes)
    yield size
    oldest = GaugeMetricFamily(
        "edge_outbox_oldest_age_seconds", "age of the oldest waiting message; 0 when none waits"
    )
    oldest.add_metric([], stats.oldest_age_s or 0.0)
    yield oldest


class MetricsServer:
    """``/metrics`` on ``host:port`` in a daemon thread, over one ``RunCollector``."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.collector = RunCollector()
        self._server: Any = None

    def start(self) -> MetricsServer:
        """Bind and serve; a missing ``prometheus_client`` or a busy port is a one-line ``ConfigError``."""
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError:
            raise ConfigError(f"--metrics needs prometheus_client; install it: {INSTALL_HINT}") from None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.collector)
        where = f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"
        try:
            self._server, _ = start_http_server(self.port, addr=self.host, registry=registry)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"--metrics {where}: port {self.port} is in use; stop what uses it or pick another port"
                ) from exc
            raise ConfigError(f"--metrics {where}: cannot listen there ({exc.strerror or exc})") from exc
        log.info("Prometheus metrics on http://%s/metrics", where)
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
