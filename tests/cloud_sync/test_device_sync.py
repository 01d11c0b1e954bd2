"""The device session against a real broker: results, status, telemetry, commands, bad command payloads."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cloud_sync.messages import RESULT_SCHEMA, TELEMETRY_SCHEMA
from tests.broker import Broker
from tests.cloud_sync.fakes import FakePipeline, record
from tests.cloud_sync.helpers import Watcher, device, wait_for


def test_results_status_and_telemetry(mosquitto: Broker, tmp_path: Path) -> None:
    watch = Watcher(mosquitto.url, "edge/#")
    sync = device(mosquitto.url, tmp_path)
    status = watch.next_json("/status")
    assert status["state"] == "online" and status["seq"] == 0 and status["stream"] == sync.outbox.stream

    for i in range(5):
        sync.sinks[0].emit(record(f"img{i}.png"))
    results = [watch.next_json("dev1/results") for _ in range(5)]
    assert [r["seq"] for r in results] == [1, 2, 3, 4, 5]
    first = results[0]
    assert first["schema"] == RESULT_SCHEMA and first["device"] == "dev1" and len(first["id"]) == 32
    assert first["model"] == {"name": "digits", "version": 3} and first["classes"][0]["label"] == "cat"
    assert first["timing_ms"]["total"] == 3.6 and first["input"] == "img0.png"
    assert first["result_schema"] == 1 and isinstance(first["ts"], float) and first["error"] is None
    assert len({r["id"] for r in results}) == 5

    telemetry = watch.next_json("/telemetry")
    assert telemetry["schema"] == TELEMETRY_SCHEMA and telemetry["seq"] == 5
    assert telemetry["fps"] == 12.5 and telemetry["latency_ms"] == {"p50": 4.0, "p95": 6.0, "p99": 9.0}
    assert telemetry["backend"] == "fake" and telemetry["model"] == {"name": "digits", "version": 3}
    assert telemetry["rss_mb"] > 0 and telemetry["uptime_s"] >= 0 and "cpu_temp_c" in telemetry
    assert telemetry["outbox"]["dropped"] == 0 and telemetry["drops"] == 0
    wait_for(lambda: sync.outbox.stats().pending == 0, what="outbox drained")

    sync.close()
    assert watch.next_json("/status")["state"] == "offline"
    watch.close()


def test_commands_and_bad_command_payloads(mosquitto: Broker, tmp_path: Path) -> None:
    pipeline = FakePipeline()
    camera = tmp_path / "camera"
    camera.mkdir()
    (camera / "cam.jpg").write_bytes(b"jpeg")
    sync = device(mosquitto.url, tmp_path, pipeline=pipeline, telemetry_interval_s=0, inputs=(camera,))
    watch = Watcher(mosquitto.url, "edge/dev1/cmd/+/reply", "edge/dev1/results")
    wait_for(lambda: sync.connection.connected)

    def ask(name: str, payload: bytes | str) -> dict:  # type: ignore[type-arg]
        watch.conn.publish(f"edge/dev1/cmd/{name}", payload).wait(5)
        return watch.next_json(f"cmd/{name}/reply")

    pong = ask("ping", '{"request_id": "r1"}')
    assert pong == {**pong, "ok": True, "pong": True, "request_id": "r1", "device": "dev1", "seq": 0}
    assert ask("set", '{"top_k": 3, "threshold": 0.25}')["applied"] == {"top_k": 3, "threshold": 0.25}
    assert (pipeline.top_k, pipeline.threshold) == (3, 0.25)
    reloaded = ask("reload", "")
    assert reloaded["ok"] and reloaded["model"]["version"] == 4 and pipeline.reloads == 1

    cam = str(camera / "cam.jpg")
    snap = ask("snapshot", json.dumps({"input": cam}))
    assert snap["ok"] and snap["result"]["input"] == cam
    assert watch.next_json("dev1/results")["input"] == cam  # and it went out as a result

    bad = [
        ("set", b"not json{"),
        ("set", b"[1, 2]"),
        ("set", b'{"top_k": "three"}'),
        ("set", b'{"threshold": 7}'),
        ("set", b'{"colour": "red"}'),
        ("set", json.dumps({"top_k": 1, "pad": "x" * 300_000}).encode()),
        ("snapshot", b'{"input": 5}'),
        ("snapshot", b'{"input": "/etc/passwd"}'),
        ("replay", b'{"from": "a"}'),
        ("selfdestruct", b"{}"),
    ]
    for name, payload in bad:
        answer = ask(name, payload)
        assert answer["ok"] is False and answer["error"], (name, payload[:40])
    assert sync.bad_payloads == len(bad)
    assert pipeline.top_k == 3  # none of the bad ones changed anything
    assert ask("ping", "{}")["ok"]  # and the device still answers
    watch.close()
    sync.close()


def test_replay_command_republishes_retained_results(mosquitto: Broker, tmp_path: Path) -> None:
    sync = device(mosquitto.url, tmp_path, telemetry_interval_s=0)
    for i in range(6):
        sync.sinks[0].emit(record(i))
    wait_for(lambda: sync.outbox.stats().retained == 6, what="results acknowledged")
    watch = Watcher(mosquitto.url, "edge/dev1/results", "edge/dev1/cmd/replay/reply")
    watch.conn.publish("edge/dev1/cmd/replay", '{"from": 2, "to": 4, "request_id": 9}').wait(5)
    assert [watch.next_json("dev1/results")["seq"] for _ in range(3)] == [2, 3, 4]
    reply = watch.next_json("replay/reply")
    assert reply == {**reply, "ok": True, "sent": 3, "missing": [], "last_seq": 6, "request_id": 9}
    assert reply["stream"] == sync.outbox.stream

    # a gap in an earlier stream (the state folder was wiped since): all of it is gone, nothing re-sent
    watch.conn.publish("edge/dev1/cmd/replay", '{"from": 2, "to": 4, "stream": "0ld5trm"}').wait(5)
    reply = watch.next_json("replay/reply")
    assert reply == {**reply, "ok": True, "sent": 0, "missing": [[2, 4]], "stream": "0ld5trm"}
    assert [m for m in watch.drain() if m.topic.endswith("/results")] == []
    watch.close()
    sync.close()


def test_snapshot_reads_only_inside_the_watch_folder_and_the_inputs(mosquitto: Broker, tmp_path: Path):
    """Whoever can publish to the cmd topic must not make the device read any file: a path outside the watch
    folder and the inputs is refused with the rule; no input runs on the newest file of the watch folder."""
    watched, given, outside = tmp_path / "watched", tmp_path / "given", tmp_path / "private"
    for folder in (watched, given, outside):
        folder.mkdir()
    (outside / "secret.txt").write_text("key")
    (given / "one.png").write_bytes(b"png")
    older, newer = watched / "a.jpg", watched / "b.jpg"
    older.write_bytes(b"a")
    newer.write_bytes(b"b")
    os.utime(older, (1_000_000, 1_000_000))
    pipeline = FakePipeline()
    sync = device(
        mosquitto.url, tmp_path / "state", pipeline=pipeline, telemetry_interval_s=0,
        watch=watched, inputs=(given,),
    )
    watch = Watcher(mosquitto.url, "edge/dev1/cmd/snapshot/reply")
    wait_for(lambda: sync.connection.connected)

    def snapshot(body: dict) -> dict:  # type: ignore[type-arg]
        watch.conn.publish("edge/dev1/cmd/snapshot", json.dumps(body)).wait(5)
        return watch.next_json("snapshot/reply")

    assert snapshot({})["result"]["input"] == str(newer)  # nothing seen yet: the newest watched file
    assert snapshot({"input": str(given / "one.png")})["result"]["input"] == str(given / "one.png")
    assert snapshot({"input": str(older)})["result"]["input"] == str(older)
    for path in (outside / "secret.txt", given / ".." / "private" / "secret.txt", "/etc/passwd"):
        answer = snapshot({"input": str(path)})
        assert answer["ok"] is False, path
        error = answer["error"]
        assert "outside the watch folder and the inputs" in error and str(watched) in error
    (given / "link.png").symlink_to(outside / "secret.txt")  # a link inside that points out is refused too
    assert snapshot({"input": str(given / "link.png")})["ok"] is False
    watch.close()
    sync.close()
