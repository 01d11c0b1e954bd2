"""The collector's ``/metrics``: per-device gauges and counters over the live state, the store's counts and
the collector's own counters, read at scrape time (names follow edge/metrics.py: ``edge_collector_`` prefix,
base units, ``_total`` on counters; see docs/metrics.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cloud_sync.dashboard.data import FleetData
from cloud_sync.update_protocol import STATES


class FleetCollector:
    """A ``prometheus_client`` collector over one ``FleetData``."""

    def __init__(self, data: FleetData) -> None:
        self.data = data

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        doc = self.data.fleet()
        rows = doc["devices"]

        def gauge(name: str, text: str, labels: tuple[str, ...] = ()) -> Any:
            return GaugeMetricFamily(name, text, labels=["device", *labels])

        online = gauge("edge_collector_device_online", "1 when the device's retained status is online")
        seen = gauge("edge_collector_device_last_seen_seconds", "Unix time of the device's last message")
        info = InfoMetricFamily("edge_collector_device_model", "the model the device serves",
                                labels=["device"])
        version = gauge("edge_collector_device_model_version", "version of the model the device serves")
        fps = gauge("edge_collector_device_inferences_per_second", "the device's inference rate (telemetry)")
        latency = gauge("edge_collector_device_inference_latency_seconds",
                        "the device's recent total latency quantiles (telemetry)", ("quantile",))
        pending = gauge("edge_collector_device_outbox_pending_messages",
                        "messages waiting in the device's outbox (telemetry)")
        oldest = gauge("edge_collector_device_outbox_oldest_age_seconds",
                       "age of the oldest message waiting in the device's outbox (telemetry)")
        update = gauge("edge_collector_device_update_state", "1 for the device's update state",
                       ("state",))
        progress = gauge("edge_collector_device_update_progress_ratio", "an update's download progress, 0..1")
        stored = CounterMetricFamily("edge_collector_results_stored", "results stored for the device",
                                     labels=["device"])
        events = CounterMetricFamily("edge_collector_events_stored", "events stored for the device",
                                     labels=["device"])
        lost = CounterMetricFamily("edge_collector_results_lost",
                                   "seq values the device said it no longer holds", labels=["device"])
        repaired = CounterMetricFamily("edge_collector_results_repaired",
                                       "seq values found missing, stored later (replays)",
                                       labels=["device"])
        invalid = CounterMetricFamily("edge_collector_invalid_payloads",
                                      "malformed messages dropped, per device ('' when the topic names none)",
                                      labels=["device"])
        for row in rows:
            device = [row["device"]]
            if row.get("online") is not None:
                online.add_metric(device, 1.0 if row["online"] else 0.0)
            if row.get("last_seen"):
                seen.add_metric(device, row["last_seen"])
            model = row.get("model")
            if model:
                info.add_metric(device, {"name": str(model.get("name")),
                                         "version": str(model.get("version"))})
                if isinstance(model.get("version"), int):
                    version.add_metric(device, model["version"])
            if row.get("fps") is not None:
                fps.add_metric(device, row["fps"])
            for key, quantile in (("p50", "0.5"), ("p95", "0.95")):
                value = (row.get("latency_ms") or {}).get(key)
                if value is not None:
                    latency.add_metric([*device, quantile], value / 1000.0)
            box = row.get("outbox") or {}
            if box.get("pending") is not None:
                pending.add_metric(device, box["pending"])
            if box.get("oldest_age_s") is not None or box.get("pending") is not None:
                oldest.add_metric(device, box.get("oldest_age_s") or 0.0)
            state = (row.get("update") or {}).get("state")
            if state:
                for each in STATES:
                    update.add_metric([*device, each], 1.0 if each == state else 0.0)
                progress.add_metric(device, row["update"].get("progress") or 0.0)
            stored.add_metric(device, row["results"])
            events.add_metric(device, row["events"])
            lost.add_metric(device, row["lost"])
            if row.get("repaired") is not None:
                repaired.add_metric(device, row["repaired"])
            if row.get("invalid") is not None:
                invalid.add_metric(device, row["invalid"])
        yield from (online, seen, info, version, fps, latency, pending, oldest, update, progress,
                    stored, events, lost, repaired, invalid)
        stats = doc.get("collector")
        if stats:
            for key, name, text in (
                ("received", "edge_collector_messages_received", "results and events received"),
                ("duplicates", "edge_collector_duplicates", "results and events received again (dropped)"),
                ("replays_requested", "edge_collector_replays_requested", "replay requests sent to devices"),
            ):
                family = CounterMetricFamily(name, text)
                family.add_metric([], stats[key])
                yield family
        devices = GaugeMetricFamily("edge_collector_devices", "devices known to the collector")
        devices.add_metric([], len(rows))
        yield devices
