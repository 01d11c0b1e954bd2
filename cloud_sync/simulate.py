"""A fleet on one machine: N device agents against one broker, with a model rollout in the middle.

Each simulated device is the real device stack: its own state folder, durable outbox and MQTT connection
(``DeviceSync``), the real interpreter running the model on generated inputs (``Pipeline``), and the real
update agent (``UpdateAgent`` + ``PipelineActivator``). Devices run as threads in worker processes (at most
``DEVICES_PER_PROCESS`` each: paho's ``select()`` loop cannot use file descriptors past 1024, and more
processes use more cores). This process runs the collector, which stores every result once, and halfway
through a publisher that rolls a new version out to the group of all devices.
The report says what a fleet operator wants to know: results per second end to end, lost (must be 0),
duplicates, and how long the rollout took to reach every device.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from cloud_sync.collector import Collector
from cloud_sync.connection import BrokerSettings, MqttConnection, unique_client_id
from cloud_sync.device import DeviceOptions, DeviceSync
from cloud_sync.errors import SyncError
from cloud_sync.publisher import SUCCESS, Publisher
from cloud_sync.store import open_store
from cloud_sync.update_agent import UpdateAgent

log = logging.getLogger(__name__)
GROUP = "simulation"
DEVICES_PER_PROCESS = 100


@dataclass(frozen=True)
class SimulationOptions:
    """What to simulate. ``rate`` is inferences per second per device; the rollout starts at ``rollout_at``
    (a fraction of ``duration_s``)."""

    broker: BrokerSettings
    package: Path
    workdir: Path
    devices: int = 10
    duration_s: float = 20.0
    rate: float = 2.0
    rollout_at: float = 0.5
    prefix: str = "sim"
    telemetry_interval_s: float = 5.0
    settle_timeout_s: float = 120.0
    rollout_timeout_s: float = 300.0


@dataclass
class SimulationReport:
    devices: int
    duration_s: float
    emitted: int = 0
    stored: int = 0
    lost: int = 0
    duplicates: int = 0
    failed_inferences: int = 0
    results_per_s: float = 0.0
    offered_per_s: float = 0.0
    delivery_s: float = 0.0
    rollout_s: float | None = None
    rollout_ok: int = 0
    rollout_failed: dict[str, str] = field(default_factory=dict)
    versions: dict[int, int] = field(default_factory=dict)
    gaps: int = 0
    rolled_back: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = dict(vars(self))
        data["versions"] = {str(k): v for k, v in sorted(self.versions.items())}
        return data

    def render(self) -> str:
        rollout = (
            f"{self.rollout_s:.1f} s to all {self.rollout_ok} device(s)"
            if self.rollout_s is not None and not self.rollout_failed
            else f"incomplete: {self.rollout_ok} ok, {len(self.rollout_failed)} failed "
            + "; ".join(f"{d}: {why}" for d, why in sorted(self.rollout_failed.items())[:5])
        )
        versions = ", ".join(f"v{v}: {n}" for v, n in sorted(self.versions.items()))
        return "\n".join(
            [
                f"devices      {self.devices}, {self.duration_s:.0f} s of inputs",
                f"results      {self.emitted} produced, {self.stored} stored once, "
                f"{self.failed_inferences} failed inference(s); by model version: {versions}",
                f"end to end   {self.results_per_s:.1f} results/s (offered {self.offered_per_s:.1f}/s; "
                f"all stored {self.delivery_s:.1f} s after the first input)",
                f"lost         {self.lost}",
                f"duplicates   {self.duplicates} (received again, stored once)",
                f"seq gaps     {self.gaps}",
                f"rollout      {rollout} (offer to active; the health window runs on)",
                f"rolled back  {len(self.rolled_back)} by their health check"
                + "".join(f"; {d}: {why}" for d, why in sorted(self.rolled_back.items())[:3]),
            ]
        )


class _Counter:
    """A sink counting what a device produced, by model version."""

    def __init__(self) -> None:
        self.results = 0
        self.failed = 0
        self.versions: Counter[int] = Counter()
        self._lock = threading.Lock()

    def emit(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.results += 1
            self.failed += record.get("error") is not None
            model = record.get("model") or {}
            self.versions[int(model.get("version") or 0)] += 1

    def close(self) -> None:
        pass


@dataclass
class _Device:
    device_id: str
    pipeline: Any
    sync: DeviceSync
    counter: _Counter
    thread: threading.Thread | None = None


def next_version_package(package: Path, key: Path) -> tuple[bytes, int]:
    """The same model as ``package`` with the version after it, signed with ``key``: what gets rolled out."""
    from edge.package import build_package_bytes, read_package
    from edge.signing import load_private_key, sign_package

    source = read_package(package)
    manifest = replace(source.manifest, version=source.manifest.version + 1)
    files = {n: d for n, d in source.files.items() if n not in ("manifest.json", "signature.json")}
    data = build_package_bytes(manifest, files)
    return sign_package(data, load_private_key(key)), manifest.version


class _DeviceGroup:
    """Devices of one worker process: started, fed with inputs, counted, closed."""

    def __init__(self, options: SimulationOptions, device_ids: list[str], public: Path) -> None:
        self.options = options
        self.stop = threading.Event()
        self.devices = [self._start_device(device_id, public) for device_id in device_ids]

    def _start_device(self, device_id: str, public: Path) -> _Device:
        from edge.activation import PipelineActivator
        from edge.health import HealthPolicy
        from edge.model import load_model
        from edge.pipeline import Pipeline
        from edge.signing import TrustStore
        from edge.store import ModelStore

        o = self.options
        state = o.workdir / "devices" / device_id
        counter = _Counter()
        pipeline = Pipeline(load_model(o.package, threads=1), top_k=1, sinks=[counter])
        options = DeviceOptions(
            broker=o.broker,
            device_id=device_id,
            state_dir=state,
            prefix=o.prefix,
            telemetry_interval_s=o.telemetry_interval_s,
        )
        sync = DeviceSync(options, pipeline).start()
        for sink in sync.sinks:
            pipeline.add_sink(sink)
        store = ModelStore(state)
        sync.updates = UpdateAgent(
            sync.connection,
            store,
            TrustStore.from_files([public]),
            # N simulated devices share this machine's cores, so invoke latency swings far more than on a
            # real device: only a large slowdown counts against the new model here.
            PipelineActivator(pipeline, store, threads=1, policy=HealthPolicy(latency_factor=10.0)),
            device_id,
            prefix=o.prefix,
            groups=(GROUP,),
        ).start()
        return _Device(device_id, pipeline, sync, counter)

    def start_feeding(self) -> None:
        for device in self.devices:
            device.thread = threading.Thread(target=self._feed, args=(device,), daemon=True)
            device.thread.start()

    def _feed(self, device: _Device) -> None:
        """Generated inputs at ``rate`` per second until stopped: random pixels of the model's input size."""
        spec = device.pipeline.model.input
        shape = (spec.height, spec.width, max(spec.channels, 1))
        rng = np.random.default_rng(int(device.device_id.removeprefix("dev")))
        period = 1.0 / self.options.rate
        next_at = time.monotonic() + rng.uniform(0, period)  # spread the devices over one period
        while not self.stop.wait(max(0.0, next_at - time.monotonic())):
            device.pipeline.infer(rng.integers(0, 256, size=shape, dtype=np.uint8))
            next_at += period

    def stop_feeding(self) -> dict[str, Any]:
        """Stop the inputs; what the devices produced."""
        self.stop.set()
        for device in self.devices:
            if device.thread is not None:
                device.thread.join()
        versions: Counter[int] = Counter()
        for device in self.devices:
            versions.update(device.counter.versions)
        return {
            "emitted": sum(d.counter.results for d in self.devices),
            "failed": sum(d.counter.failed for d in self.devices),
            "versions": dict(versions),
        }

    def close(self) -> None:
        self.stop.set()
        closers = [
            threading.Thread(target=d.sync.close, kwargs={"drain_timeout": 10.0}) for d in self.devices
        ]
        for thread in closers:
            thread.start()
        for thread in closers:
            thread.join(timeout=60)
        for device in self.devices:
            device.pipeline.close()


def _worker(options: SimulationOptions, device_ids: list[str], public: Path, pipe: Connection) -> None:
    """One worker process: answers the parent's ``go``, ``stop`` and ``close`` in turn."""
    group: _DeviceGroup | None = None
    try:
        group = running = _DeviceGroup(options, device_ids, public)
        pipe.send(("ready", len(running.devices)))
        for command in ("go", "stop", "close"):
            if pipe.recv() != command:
                break
            if command == "go":
                running.start_feeding()
                pipe.send(("going", None))
            elif command == "stop":
                pipe.send(("counts", running.stop_feeding()))
            else:
                group = None
                running.close()
                pipe.send(("closed", None))
    except Exception as exc:  # reported to the parent, which stops the run with this message
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        if group is not None:
            group.close()
        pipe.close()


class Simulation:
    """``Simulation(options).run()`` -> ``SimulationReport``; everything it starts is stopped at the end."""

    def __init__(self, options: SimulationOptions) -> None:
        if options.devices < 1:
            raise SyncError(f"--devices must be at least 1, got {options.devices}")
        if options.rate <= 0 or options.duration_s <= 0:
            raise SyncError("--rate and --duration must be more than 0")
        self.options = options
        processes = max(
            math.ceil(options.devices / DEVICES_PER_PROCESS), min(os.cpu_count() or 1, options.devices)
        )
        ids = [f"dev{index:04d}" for index in range(options.devices)]
        self.batches = [ids[i::processes] for i in range(processes)]
        self.workers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []

    def run(self) -> SimulationReport:
        from edge.signing import generate_keys

        o = self.options
        o.workdir.mkdir(parents=True, exist_ok=True)
        private, public = generate_keys(o.workdir / "keys", overwrite=True)
        update, new_version = next_version_package(o.package, private)
        report = SimulationReport(
            devices=o.devices, duration_s=o.duration_s, offered_per_s=o.devices * o.rate
        )
        cloud = MqttConnection(o.broker, unique_client_id("sim-cloud")).start()
        collector = Collector(
            MqttConnection(o.broker, unique_client_id("sim-collector")),
            open_store(str(o.workdir / "collected.db")),
            prefix=o.prefix,
        ).start()
        # a device counts as updated once the new version is active (its health window runs on after)
        publisher = Publisher(cloud, update, prefix=o.prefix, require_healthy=False).start()
        try:
            self._start_workers(public)
            self._all("go", "going")
            log.info(
                "%d device(s) running; rollout of v%d at %.0f s",
                o.devices,
                new_version,
                o.duration_s * o.rollout_at,
            )
            started = time.monotonic()
            rollout = threading.Thread(target=self._rollout, args=(publisher, report), daemon=True)
            time.sleep(o.duration_s * o.rollout_at)
            rollout.start()
            time.sleep(max(0.0, started + o.duration_s - time.monotonic()))
            counts = self._all("stop", "counts")
            report.emitted = sum(c["emitted"] for c in counts)
            report.failed_inferences = sum(c["failed"] for c in counts)
            report.versions = dict(sum((Counter(c["versions"]) for c in counts), Counter()))
            self._settle(collector, report.emitted)
            report.delivery_s = time.monotonic() - started
            rollout.join(timeout=o.rollout_timeout_s)
            report.stored = collector.stats.stored
            report.duplicates = collector.stats.duplicates
            report.lost = max(0, report.emitted - report.stored)
            report.results_per_s = report.stored / report.delivery_s if report.delivery_s else 0.0
            report.rolled_back = {
                device: progress.status.reason
                for device, progress in publisher.rollout.devices.items()
                if progress.status is not None and progress.status.state == "rolled_back"
            }
            streams = collector.report()["devices"]
            report.gaps = sum(len(s.get("missing") or []) for d in streams.values() for s in d.values())
            self._all("close", "closed")
        finally:
            self._end_workers()
            publisher.close(withdraw=True)
            collector.close()
            cloud.close()
        return report

    def _start_workers(self, public: Path) -> None:
        context = multiprocessing.get_context("spawn")  # this process already runs MQTT threads: no fork
        for batch in self.batches:
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(self.options, batch, public, child), daemon=True)
            process.start()
            child.close()
            self.workers.append((process, parent))
        self._all(None, "ready")

    def _all(self, command: str | None, answer: str, timeout: float = 300.0) -> list[Any]:
        """Send ``command`` to every worker, collect their ``answer``; a worker's error stops the run."""
        if command is not None:
            for _, pipe in self.workers:
                pipe.send(command)
        replies = []
        for process, pipe in self.workers:
            if not pipe.poll(timeout):
                raise SyncError(f"simulation worker {process.pid} did not answer {command or 'start'!r}")
            kind, value = pipe.recv()
            if kind == "error":
                raise SyncError(f"simulation worker failed: {value}")
            if kind != answer:
                raise SyncError(f"simulation worker answered {kind!r} instead of {answer!r}")
            replies.append(value)
        return replies

    def _end_workers(self) -> None:
        for process, pipe in self.workers:
            process.join(timeout=90)
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)
            pipe.close()

    def _rollout(self, publisher: Publisher, report: SimulationReport) -> None:
        settle = 1.0
        started = time.monotonic()
        rollout = publisher.run_group_rollout(GROUP, timeout=self.options.rollout_timeout_s, settle=settle)
        report.rollout_s = time.monotonic() - started - settle
        report.rollout_ok = sum(p.result == SUCCESS for p in rollout.devices.values())
        report.rollout_failed = {d: p.detail for d, p in rollout.devices.items() if p.result != SUCCESS}
        members = {d for batch in self.batches for d in batch}
        report.rollout_failed.update(
            {d: "not seen as a group member" for d in members - set(rollout.devices)}
        )

    def _settle(self, collector: Collector, expected: int) -> None:
        """Wait until the collector stored every result produced (gap repair included), or time out."""
        deadline = time.monotonic() + self.options.settle_timeout_s
        while collector.stats.stored < expected and time.monotonic() < deadline:
            time.sleep(0.1)
