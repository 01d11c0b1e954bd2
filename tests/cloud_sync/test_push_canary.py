"""``edge push-model`` to 5 devices (real broker, real validation): a canary stops a bad model; a good one
reaches every device; ``edge fleet status`` shows the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloud_sync.update_protocol import offer_topic
from edge.activation import PipelineActivator
from edge.cli import main
from edge.store import ModelStore
from tests.cloud_sync.update_support import connect, make_keys, start_device, watching
from tests.edge.update_packages import make_package

DEVICES = [f"cam{i}" for i in range(1, 6)]


@pytest.fixture
def fleet(mosquitto, tmp_path):
    keys = make_keys(tmp_path / "keys")
    devices = []
    for device_id in DEVICES:
        state = tmp_path / device_id
        devices.append(
            start_device(
                mosquitto.url,
                state,
                device_id,
                [keys.pub],
                groups=("garage",),
                activator=PipelineActivator(None, ModelStore(state)),
            )
        )
    yield keys, devices
    for device in devices:
        device.close()


def retained_offers(url: str) -> dict[str, bytes]:
    import time

    seen: dict[str, bytes] = {}
    connection = connect(url, "offer-reader")
    connection.subscribe("edge/+/model/offer", lambda m: seen.__setitem__(m.topic, m.payload))
    time.sleep(1.0)
    connection.close()
    return seen


def test_bad_model_stops_at_the_canary(mosquitto, tmp_path, fleet, assets, capsys) -> None:
    keys, devices = fleet
    bad = tmp_path / "bad.edgepkg"
    bad.write_bytes(
        make_package(assets.model("digits_int8"), 2, extra={"model.tflite": b"TFL3" + b"\0" * 300})
    )
    with watching(mosquitto.url) as watcher:
        code = main(
            [
                "push-model",
                str(bad),
                "--key",
                str(keys.key),
                "--mqtt",
                mosquitto.url,
                "--device",
                *DEVICES,
                "--canary",
                "1",
                "--wait",
                "60",
                "--json",
            ]
        )
        out = json.loads(capsys.readouterr().out)
        assert code == 1
        assert (
            out["devices"]["cam1"]["result"] == "failed"
            and "does not load" in out["devices"]["cam1"]["detail"]
        )
        assert "canary failed" in out["aborted"]
        for device in devices[1:]:
            assert "downloading" not in watcher.states(device.device_id)
            assert device.store.active() is None
    offers = retained_offers(mosquitto.url)
    assert not any(offers.get(offer_topic("edge", d)) for d in DEVICES[1:])


def test_good_model_reaches_every_device_after_the_canary(mosquitto, tmp_path, fleet, assets, capsys) -> None:
    keys, devices = fleet
    good = tmp_path / "good.edgepkg"
    good.write_bytes(make_package(assets.model("digits_int8"), 2))
    code = main(
        [
            "push-model",
            str(good),
            "--key",
            str(keys.key),
            "--mqtt",
            mosquitto.url,
            "--device",
            *DEVICES,
            "--canary",
            "2",
            "--wait",
            "60",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert all(device.store.active().version == 2 for device in devices)
    assert main(["fleet", "status", "--mqtt", mosquitto.url, "--json"]) == 0
    listed = {d["device"]: d for d in json.loads(capsys.readouterr().out)["devices"]}
    assert set(listed) == set(DEVICES)
    for row in listed.values():
        assert row["online"] is True
        assert row["model"] == {"name": "digits", "version": 2}
        assert row["update"]["state"] == "active" and row["update"]["healthy"] is True
    assert main(["fleet", "status", "--mqtt", mosquitto.url]) == 0
    table = capsys.readouterr().out
    assert "cam3" in table and "digits v2" in table
    # Pushing the same package again is answered from the store; an older one is refused (anti-rollback).
    push = ["--key", str(keys.key), "--mqtt", mosquitto.url, "--device", "cam1", "--wait", "30", "--json"]
    assert main(["push-model", str(good), *push]) == 0
    assert json.loads(capsys.readouterr().out)["bytes_sent"] == 0
    old = tmp_path / "old.edgepkg"
    old.write_bytes(make_package(assets.model("digits_int8"), 1))
    assert main(["push-model", str(old), *push]) == 1
    detail = json.loads(capsys.readouterr().out)["devices"]["cam1"]["detail"]
    assert "rejected: version 1 of 'digits' is not higher than 2" in detail


def test_group_rollout_with_canary(mosquitto, tmp_path, fleet, assets, capsys) -> None:
    keys, devices = fleet
    good = tmp_path / "good.edgepkg"
    good.write_bytes(keys.sign(make_package(assets.model("digits_float32"), 3)))
    command = ["push-model", str(good), "--mqtt", mosquitto.url, "--group", "garage", "--canary", "1"]
    code = main([*command, "--wait", "60", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert all(device.store.active().version == 3 for device in devices)
    # The canary got its own copy; the 4 others shared the group's chunk topic.
    assert report["bytes_sent"] <= 3 * good.stat().st_size, report


def test_unsigned_package_without_key_is_a_clear_error(tmp_path: Path, assets, capsys) -> None:
    package = tmp_path / "p.edgepkg"
    package.write_bytes(make_package(assets.model("digits_int8"), 2))
    assert main(["push-model", str(package), "--mqtt", "mqtt://127.0.0.1:1", "--device", "x"]) == 2
    assert "unsigned; pass --key" in capsys.readouterr().err
