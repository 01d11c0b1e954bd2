"""``edge collect --http``: /metrics (parsed with prometheus_client's parser) carries the run's values; the
JSON endpoints on SQLite and PostgreSQL; the token; bad --http values are one-line errors before anything
starts."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.broker import Broker
from tests.cloud_sync.fakes import record
from tests.cloud_sync.helpers import Watcher, device, wait_for
from tests.cloud_sync.http_support import EDGE, ROOT, HttpProcess
from tests.cloud_sync.test_collector import envelope
from tests.cloud_sync.test_store import pg_url  # noqa: F401 (a fixture)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics: dict[Any, float], metric: str, /, **labels: str) -> float | None:
    return metrics.get((metric, tuple(sorted(labels.items()))))


def test_metrics_carry_the_values_of_the_run(mosquitto: Broker, tmp_path: Path) -> None:
    http = HttpProcess("collect", mosquitto.url, tmp_path / "fleet.sqlite", log=tmp_path / "collect.log")
    sync = device(mosquitto.url, tmp_path / "state", "dev1")  # a real DeviceSync over a fake pipeline
    for i in range(25):
        sync.sinks[0].emit(record(f"frame{i}.jpg"))
    raw = Watcher(mosquitto.url, "edge/cam9/cmd/replay", client_id="cam9")  # a device speaking by hand
    for seq in (1, 3, 5):
        raw.conn.publish("edge/cam9/results", json.dumps(envelope("result", seq, "cam9")).encode()).wait(5)
    assert raw.next_json("cmd/replay")["from"] in (2, 4)
    raw.conn.publish("edge/cam9/results", json.dumps(envelope("result", 2, "cam9")).encode()).wait(5)
    raw.conn.publish("edge/cam9/cmd/replay/reply", json.dumps({"ok": True, "stream": "s1",
                                                                "missing": [[4, 4]]}).encode()).wait(5)
    raw.conn.publish("edge/cam9/results", b"{not json").wait(5)
    raw.conn.publish("edge/cam9/events", json.dumps(envelope("event", 6, "cam9")).encode()).wait(5)

    def scrape() -> dict[Any, float]:
        return samples(http.get("/metrics", raw=True).decode())

    def settled() -> dict[Any, float] | None:
        m = scrape()
        done = (value(m, "edge_collector_results_stored_total", device="dev1") == 25
                and value(m, "edge_collector_results_repaired_total", device="cam9") == 1
                and value(m, "edge_collector_results_lost_total", device="cam9") == 1
                and value(m, "edge_collector_events_stored_total", device="cam9") == 1)
        return m if done else None

    m = wait_for(settled, timeout=30, what="the run's values on /metrics")
    assert value(m, "edge_collector_device_online", device="dev1") == 1.0
    assert value(m, "edge_collector_device_model_version", device="dev1") == 3  # FakePipeline's model
    assert value(m, "edge_collector_device_model_info", device="dev1", name="digits", version="3") == 1.0
    assert value(m, "edge_collector_device_inferences_per_second", device="dev1") == 12.5  # its telemetry
    p95 = value(m, "edge_collector_device_inference_latency_seconds", device="dev1", quantile="0.95")
    assert p95 == 0.006
    assert value(m, "edge_collector_device_outbox_pending_messages", device="dev1") is not None
    assert value(m, "edge_collector_results_stored_total", device="cam9") == 4  # 1, 2, 3, 5; 6 is an event
    assert value(m, "edge_collector_invalid_payloads_total", device="cam9") == 1
    assert value(m, "edge_collector_devices") == 2
    fleet = {row["device"]: row for row in http.get("/api/fleet")["devices"]}
    assert fleet["dev1"]["results"] == 25 and fleet["cam9"]["lost"] == 1 and fleet["cam9"]["repaired"] == 1

    sync.close()  # a clean goodbye: the retained status says offline
    wait_for(lambda: value(scrape(), "edge_collector_device_online", device="dev1") == 0.0,
             what="dev1 offline on /metrics")
    raw.close()
    assert http.stop() == 0  # no gaps in the final report: cam9's 4 is lost (reported), not missing


def test_the_token_guards_every_route_but_static(mosquitto: Broker, tmp_path: Path) -> None:
    http = HttpProcess("collect", mosquitto.url, tmp_path / "fleet.sqlite", token="s3cret")
    for path in ("/", "/api/fleet", "/api/rollout", "/metrics", "/api/events"):
        assert http.status(path) == 401, path
        assert http.status(path, {"Authorization": "Bearer wrong"}) == 401, path
    assert http.status("/api/fleet?token=s3cret") == 200
    assert http.status("/metrics", {"Authorization": "Bearer s3cret"}) == 200
    assert http.status("/static/app.js") == 200 and http.status("/healthz") == 200  # code, no data
    assert http.get("/api/fleet")["devices"] == []
    http.stop()


def edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGE, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_bad_http_values_are_one_line_errors_before_anything_starts(mosquitto: Broker, tmp_path: Path) -> None:  # noqa: E501
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    db = tmp_path / "never.sqlite"
    cases = {
        f"127.0.0.1:{port}": f"port {port} is in use",
        "abc": "the port must be a number from 1 to 65535",
        "no-such-host.invalid:8080": "unknown host 'no-such-host.invalid'",
        "192.0.2.1:8080": "cannot listen there",
    }
    for value, message in cases.items():
        done = edge("collect", "--mqtt", mosquitto.url, "--db", str(db), "--http", value)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not db.exists()  # nothing started, nothing created
    done = edge("collect", "--mqtt", mosquitto.url, "--db", str(db), "--http-token", "x")
    assert done.returncode == 2 and "give --http [HOST:]PORT with it" in done.stderr
    done = edge("dashboard", "--mqtt", mosquitto.url, "--db", str(db), "--http", "0")
    assert done.returncode == 2 and "no such file" in done.stderr
    busy.close()


def test_edge_dashboard_beside_a_collector_on_postgres(
    mosquitto: Broker, tmp_path: Path, pg_url: str  # noqa: F811 (the fixture imported above)
) -> None:
    """The read-only view reads the PostgreSQL store the collector fills and the live state from MQTT."""
    collect = HttpProcess("collect", mosquitto.url, pg_url)
    sync = device(mosquitto.url, tmp_path / "state", "dev1")
    for i in range(10):
        sync.sinks[0].emit(record(f"frame{i}.jpg"))
    wait_for(lambda: [d["results"] for d in collect.get("/api/fleet")["devices"]] == [10], what="10 stored")
    view = HttpProcess("dashboard", mosquitto.url, pg_url, token="t0ken")
    row = wait_for(lambda: next((d for d in view.get("/api/fleet")["devices"]
                                 if d["results"] == 10 and d["fps"] is not None), None), what="the view")
    assert row["device"] == "dev1" and row["online"] is True
    assert row["model"] == {"name": "digits", "version": 3}
    assert row["repaired"] is None  # only the collector itself knows what it repaired
    page = view.get("/api/devices/dev1")
    assert [r["seq"] for r in page["results"]][:3] == [10, 9, 8]
    assert page["results"][0]["input"] == "frame9.jpg"
    assert page["series"] and page["series"][-1]["fps"] == 12.5  # stored telemetry
    assert view.status("/api/devices/nobody?token=t0ken") == 404
    sync.close()
    wait_for(lambda: view.get("/api/fleet")["devices"][0]["online"] is False, what="offline in the view")
    assert view.stop() == 0
    collect.stop()
