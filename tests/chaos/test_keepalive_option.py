"""``edge run --keepalive`` and ``mqtt.keepalive`` (issue 14): the flag and the key reach the device's MQTT
connection, the file's value yields to the flag, and a bad value is one line naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli.commands import run
from edge.cli.sync_hooks import device_options
from edge.config import check_config
from edge.settings import HomeAssistantSettings

ROOT = Path(__file__).resolve().parents[2]


def _settings(argv: list[str]) -> run.RunSettings:  # type: ignore[name-defined]
    args = run._parser().parse_args(argv)
    run._apply_settings(args)
    return run.settings_from(args)


@pytest.mark.parametrize(("text", "error"), [("0", "1 to 65535"), ("70000", "1 to 65535"), ("2.5", "whole")])
def test_bad_keepalive_in_the_file_names_the_key(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "device.toml"
    path.write_text(f'[mqtt]\nurl = "mqtt://127.0.0.1:1883"\nkeepalive = {text}\n')
    _, errors = check_config(path)
    assert len(errors) == 1 and errors[0].startswith(f"mqtt.keepalive is {text}") and error in errors[0]


def test_flag_and_key_reach_the_device_connection(tmp_path: Path) -> None:
    model = tmp_path / "m.tflite"
    model.write_bytes(b"")
    config = tmp_path / "device.toml"
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config.write_text(f'[model]\npath = "{model}"\n[input]\nwatch = "{inbox}"\n'
                      '[mqtt]\nurl = "mqtt://127.0.0.1:1883"\nkeepalive = 7\ndevice_id = "cam1"\n')
    common = [str(model), "--watch", str(inbox), "--state-dir", str(tmp_path / "state"), "--profile", "none"]
    for argv, expected in (([*common, "--mqtt", "mqtt://127.0.0.1:1883"], 30),
                           ([*common, "--mqtt", "mqtt://127.0.0.1:1883", "--keepalive", "5"], 5),
                           (["--config", str(config)], 7),
                           (["--config", str(config), "--keepalive", "3"], 3)):
        mqtt = _settings(argv).mqtt
        assert mqtt is not None and mqtt.keepalive == expected, argv
        assert device_options(mqtt, HomeAssistantSettings()).keepalive == expected


@pytest.mark.parametrize("value", ["0", "x", "65536"])
def test_bad_keepalive_flag_is_one_usage_error(tmp_path: Path, value: str) -> None:
    done = subprocess.run([sys.executable, "-m", "edge", "run", "m.tflite", "--mqtt", "mqtt://127.0.0.1:1",
                           "--keepalive", value], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"argument --keepalive: {value!r}" in done.stderr and "Traceback" not in done.stderr
