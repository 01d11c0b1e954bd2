"""What the dashboard's JSON endpoints return: the live state joined with what the store holds.

The per-device counts need a ``GROUP BY`` over every stored result (a second or so at millions of rows), so
``StoreCounts`` recomputes them in a background thread every ``refresh_s`` and the fleet endpoint reads the
last answer; the device page's reads are indexed (``device_id, ts``) and run per request.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from cloud_sync.dashboard.live import DeviceLive, LiveFleet
from cloud_sync.store import DeviceCounts, _SqlStore

log = logging.getLogger(__name__)
SERIES_WINDOW_S = 6 * 3600.0


class StoreCounts:
    """``store.device_counts()``, refreshed in a daemon thread; ``counts`` never waits for the store.

    Counting waits at least ``refresh_s`` and five times its last duration between two runs, so a store that
    counts slowly (PostgreSQL counts everything each time) costs at most a fifth of a core."""

    def __init__(self, store: _SqlStore, refresh_s: float = 2.0) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.counts: dict[str, dict[str, Any]] = {}
        self.refreshed = 0.0
        self.took_s = 0.0
        self.error = ""
        self._last: DeviceCounts | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dashboard-counts", daemon=True)

    def start(self) -> StoreCounts:
        self._thread.start()
        return self

    def refresh(self) -> None:
        start = time.perf_counter()
        try:
            self._last = self.store.device_counts(self._last)
            self.counts = self._last.devices
            self.refreshed, self.error = time.time(), ""
        except Exception as exc:  # the store may be briefly unreachable: keep the last counts, say so
            self.error = str(exc)
            log.warning("dashboard: cannot count the stored results: %s", exc)
        self.took_s = time.perf_counter() - start

    def _loop(self) -> None:
        self.refresh()
        while not self._stop.wait(max(self.refresh_s, 5 * self.took_s)):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=30)


class FleetData:
    """The documents behind ``/api/...``: fleet, one device, the rollout."""

    def __init__(self, live: LiveFleet, store: _SqlStore, counts: StoreCounts, collector: Any = None) -> None:
        self.live = live
        self.store = store
        self.counts = counts
        self.collector = collector  # the Collector when the dashboard runs inside `edge collect`

    def _collector_stats(self) -> dict[str, Any]:
        if self.collector is None:
            return {}
        with self.collector._lock:
            stats = self.collector.stats
            return {
                "received": stats.received, "stored": stats.stored, "duplicates": stats.duplicates,
                "invalid": stats.invalid, "replays_requested": stats.replays_requested,
                "repaired": stats.repaired, "repaired_by_device": dict(stats.repaired_by_device),
                "invalid_by_device": dict(stats.invalid_by_device),
            }

    def fleet(self) -> dict[str, Any]:
        rows = {row["device"]: row for row in self.live.rows()}
        counts = self.counts.counts
        stats = self._collector_stats()
        repaired = stats.pop("repaired_by_device", {})
        invalid = stats.pop("invalid_by_device", {})
        out = []
        for device in sorted(set(rows) | set(counts)):
            row = rows.get(device) or DeviceLive(device).to_json()
            stored = counts.get(device, {})
            row["results"] = stored.get("results", 0)
            row["events"] = stored.get("events", 0)
            row["lost"] = stored.get("lost", 0)
            row["last_result_ts"] = stored.get("last_ts") or None
            row["repaired"] = repaired.get(device, 0) if self.collector is not None else None
            row["invalid"] = invalid.get(device, 0) if self.collector is not None else None
            out.append(row)
        return {
            "ts": time.time(), "devices": out, "collector": stats or None, "version": self.live.version,
            "counts_refreshed": self.counts.refreshed, "store_error": self.counts.error or None,
        }

    def device(self, device: str) -> dict[str, Any] | None:
        row = self.live.device(device)
        counts = self.counts.counts.get(device)
        if row is None and counts is None:
            return None
        row = row or DeviceLive(device).to_json()
        row["stored"] = self.store.counts_of(device)  # one device's rows: cheap, and exact now
        row["results"] = self.store.recent(device, "result", 20)
        row["events"] = self.store.recent(device, "event", 20)
        since = time.time() - SERIES_WINDOW_S
        row["series"] = [
            {"ts": ts, "fps": fps, "p50": p50, "p95": p95, "pending": pending}
            for ts, fps, p50, p95, pending in self.store.telemetry_series(device, since)
        ]
        row["models"] = [
            {"ts": ts, "state": state, "name": name, "version": version, "reason": reason}
            for ts, state, name, version, reason in self.store.model_history(device)
        ]
        row["snapshots"] = [
            {"source": source, "label": label, "ts": ts}
            for source, label, ts in self.store.snapshot_index(device)
        ]
        return row

    def rollout(self) -> dict[str, Any]:
        """Per offered package (name, version): each device's offer and update state.

        The stage is ``canary`` while some devices that report an update state have no offer of the package
        yet (a canary wave waits for its first devices), ``shadow`` while a device runs the candidate beside
        its model on live inputs, ``rollout`` once every one has it."""
        rows = self.live.rows()
        targets: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for row in rows:
            offer, update = row.get("offer"), row.get("update")
            key = None
            if offer:
                key = (offer["name"], offer["version"])
            elif update and update.get("state") not in (None, "idle") and update.get("version"):
                key = (update.get("name") or "", update["version"])
            if key is not None:
                targets.setdefault(key, [])
        out = []
        for (name, version), devices in sorted(targets.items(), key=lambda kv: -kv[0][1]):
            for row in rows:
                offer, update = row.get("offer"), row.get("update") or {}
                offered = bool(offer and offer["name"] == name and offer["version"] == version)
                mine = update.get("version") == version and (not update.get("name") or update["name"] == name)
                active = (row.get("model") or {}).get("version") == version and (
                    (row.get("model") or {}).get("name") == name
                )
                if not (offered or mine or active or update or row.get("offer")):
                    continue
                state = update.get("state", "") if mine else ("active" if active else "")
                devices.append({
                    "device": row["device"], "online": row.get("online"), "offered": offered,
                    "state": state or ("offered" if offered else "waiting"),
                    "progress": update.get("progress", 0.0) if mine else (1.0 if active else 0.0),
                    "reason": update.get("reason", "") if mine else "",
                    "healthy": update.get("healthy") if mine else None,
                    "shadow": update.get("shadow") if mine else None,
                })
            n_offered = sum(d["offered"] for d in devices)
            out.append({
                "name": name, "version": version, "devices": devices,
                "stage": "canary" if 0 < n_offered < len(devices) else (
                    "shadow" if any(d["state"] == "shadowing" for d in devices) else "rollout"),
                "offered": n_offered, "active": sum(d["state"] == "active" for d in devices),
                "failed": sum(d["state"] in ("rejected", "rolled_back") for d in devices),
            })
        return {"ts": time.time(), "rollouts": out}
