"""edge simulate: real device agents (outbox, MQTT, interpreter, update agent) against a real broker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cloud_sync.connection import parse_broker_url
from cloud_sync.simulate import Simulation, SimulationOptions, next_version_package
from edge.cli import main
from edge.package import read_package_bytes
from edge.signing import TrustStore, generate_keys


def test_a_fleet_with_a_rollout_loses_nothing_and_every_device_gets_the_new_version(
    mosquitto: Any, assets: Any, tmp_path: Path
) -> None:
    options = SimulationOptions(
        broker=parse_broker_url(mosquitto.url),
        package=assets.digits_package,
        workdir=tmp_path,
        devices=4,
        duration_s=4.0,
        rate=5.0,
    )
    report = Simulation(options).run()
    assert report.emitted > 0 and report.failed_inferences == 0
    assert report.stored == report.emitted and report.lost == 0 and report.gaps == 0
    assert report.duplicates == 0
    assert report.rollout_failed == {} and report.rollout_ok == 4 and report.rollout_s is not None
    assert set(report.versions) <= {1, 2} and sum(report.versions.values()) == report.emitted
    for device in (tmp_path / "devices").iterdir():  # each device has its own state: outbox and model store
        assert (device / "outbox.sqlite").is_file() and (device / "models").is_dir()


def test_the_rolled_out_package_is_the_next_version_signed_by_the_simulation_key(
    assets: Any, tmp_path: Path
) -> None:
    private, public = generate_keys(tmp_path / "keys")
    data, version = next_version_package(assets.digits_package, private)
    package = read_package_bytes(data)
    assert version == package.manifest.version == 2
    TrustStore.from_files([public]).verify(package.manifest_bytes, package.signature)


def test_edge_simulate_starts_its_own_broker_and_reports(
    assets: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "simulate",
        "--devices",
        "2",
        "--duration",
        "3",
        "--model",
        str(assets.digits_package),
        "--workdir",
        str(tmp_path),
        "--json",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["lost"] == 0 and report["stored"] == report["emitted"] > 0 and report["rollout_ok"] == 2


def test_edge_simulate_without_a_model_file_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--model", str(tmp_path / "none.edgepkg")]) == 2
    assert "--model" in capsys.readouterr().err
