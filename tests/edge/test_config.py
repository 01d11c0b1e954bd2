"""The device config file: the example passes, broken files name the key, flags override the file."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pytest

from edge.cli import main
from edge.config import KEYS, apply_config, apply_profile, check_config, load_config
from edge.errors import ConfigError
from edge.profiles import BACKENDS, load_profile

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "devices" / "example-device.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "device.toml"
    path.write_text(text)
    return path


def test_the_annotated_example_passes(capsys: pytest.CaptureFixture[str]) -> None:
    config, errors = check_config(EXAMPLE)
    assert errors == [] and config is not None
    assert config.values["mqtt.url"].startswith("mqtts://kitchen_cam:")
    assert config.values["homeassistant.labels"] == ["person", "cat"]
    assert config.options()["ha_label"] == ["person", "cat"] and config.options()["mqtt_version"] == "5"
    assert main(["config", "check", str(EXAMPLE)]) == 0
    assert "ok" in capsys.readouterr().out


def test_the_annotated_example_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    for key in KEYS:
        section, _, leaf = key.name.rpartition(".")
        if key.name in ("source", "zone"):
            assert f"[[{key.name}]]" in text
            continue
        if section:
            assert f"[{section}]" in text, section
        assert re.search(rf"^#? ?{re.escape(leaf)} = ", text, re.MULTILINE), key.name


def test_docs_list_every_key() -> None:
    text = (ROOT / "docs" / "config.md").read_text()
    for key in KEYS:
        assert f"`{key.name}`" in text, key.name


BROKEN = [
    ('state_dir = "/s"\nmodle = "m.tflite"\n', ["unknown key 'modle'", "allowed at the top level"]),
    (
        'state_dir = "/s"\n[mqtt]\nurl = "mqtt://b"\nhots = "x"\n',
        ["unknown key 'mqtt.hots'", "allowed in [mqtt]: mqtt.url, mqtt.version"],
    ),
    ('state_dir = "/s"\n[mqtt]\nurl = "mqtt://b"\ndevice-id = "x"\n', ["did you mean 'mqtt.device_id'"]),
    (
        'state_dir = "/s"\n[camera]\nurl = "x"\n',
        ["unknown key 'camera'",
         "allowed at the top level: profile, state_dir, source, zone, [events], [homeassistant]"],
    ),
    ('state_dir = "/s"\n[task]\ntop_k = "3"\n', ["task.top_k is '3' (a string); allowed: an integer >= 1"]),
    ('state_dir = "/s"\n[task]\ntop_k = 0\n', ["task.top_k is 0", "an integer >= 1"]),
    ('state_dir = "/s"\n[task]\nthreshold = 1.5\n', ["task.threshold is 1.5", "a number >= 0.0 and <= 1.0"]),
    (
        'state_dir = "/s"\n[task]\nresize = "squash"\n',
        ["task.resize is 'squash'", "'stretch', 'letterbox', 'crop'"],
    ),
    (
        'state_dir = "/s"\n[task]\ntask = "poetry"\n',
        ["task.task is 'poetry'", "'classification'"],
    ),
    (
        'state_dir = "/s"\n[task]\nmean = [1.0, 2.0]\n',
        ["task.mean is [1.0, 2.0]", "a list of 1 or 3 numbers"],
    ),
    ('state_dir = "/s"\n[task]\nstd = [0]\n', ["task.std is [0]", "a number > 0"]),
    ('profile = "raspberry-pi-3"\nstate_dir = "/s"\n', ["profile is 'raspberry-pi-3'", "raspberry-pi-4"]),
    (
        'state_dir = "/s"\n[runtime]\nthreads = 2.5\n',
        ["runtime.threads is 2.5 (a number)", "an integer >= 1"],
    ),
    ('state_dir = "/s"\n[runtime]\nbackend = "onnx"\n', ["runtime.backend is 'onnx'", "'litert'"]),
    ('state_dir = "/s"\n[mqtt]\nurl = "http://broker"\n', ["mqtt.url is 'http://broker'", "mqtt://host"]),
    (
        'state_dir = "/s"\n[mqtt]\nurl = "mqtt://broker:99999"\n',
        ["mqtt.url is 'mqtt://broker:99999'", "port"],
    ),
    ('state_dir = "/s"\n[mqtt]\nurl = "mqtt://b"\nversion = "4"\n', ["mqtt.version is '4'", "'5', '3.1.1'"]),
    (
        'state_dir = "/s"\n[mqtt]\nurl = "mqtt://b"\ndevice_id = "kitchen/cam"\n',
        ["mqtt.device_id is 'kitchen/cam'", "letters, digits, _, - or ."],
    ),
    (
        'state_dir = "/s"\n[mqtt]\nurl = "mqtt://b"\nprefix = "edge/#"\n',
        ["mqtt.prefix is 'edge/#'", "without +, #, spaces"],
    ),
    (
        'state_dir = "/s"\n[mqtt]\nurl = "mqtt://b"\ntelemetry_interval = -1\n',
        ["mqtt.telemetry_interval is -1", "a number >= 0.0"],
    ),
    ('state_dir = "/s"\n[mqtt]\nurl = "mqtts://b"\ncert = "c.pem"\n', ["mqtt.cert is", "without mqtt.key"]),
    ('state_dir = "/s"\n[mqtt]\nurl = "mqtt://b"\nca = "ca.pem"\n', ["mqtt.ca is set", "mqtts://"]),
    (
        'state_dir = "/s"\n[homeassistant]\ndiscovery = true\n',
        ["homeassistant.discovery is True", "mqtt.url"],
    ),
    (
        'state_dir = "/s"\n[homeassistant]\ndiscovery = "yes"\n',
        ["homeassistant.discovery is 'yes'", "true or false"],
    ),
    ('state_dir = "/s"\n[homeassistant]\noff_delay = -1\n', ["homeassistant.off_delay is -1", ">= 0.0"]),
    (
        '[model]\npath = "m.tflite"\n[mqtt]\nurl = "mqtt://b"\n[updates]\ntrust = ["k.pub"]\n',
        ["updates.trust is set but state_dir is not"],
    ),
    ('state_dir = "/s"\n[updates]\ntrust = "k.pub"\n', ["updates.trust is 'k.pub' (a string)", "a list of"]),
    ('[input]\nwatch = "/in"\n', ["model.path is not set", "state_dir"]),
    ('state_dir = "/s"\n[input]\ninterval = 5\n', ["input.interval is 5.0 without input.url"]),
    ('state_dir = "/s"\nmqtt = "mqtt://b"\n', ["mqtt is 'mqtt://b' (a string); allowed: a table [mqtt]"]),
    ('state_dir = "/s"\n[mqtt\n', ["not valid TOML"]),
]


@pytest.mark.parametrize(("text", "expected"), BROKEN)
def test_a_broken_file_fails_with_the_key_the_value_and_what_is_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: list[str]
) -> None:
    path = write(tmp_path, text)
    assert main(["config", "check", str(path)]) == 1
    err = capsys.readouterr().err
    for part in expected:
        assert part in err
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and expected[0] in str(info.value)


def test_load_config_reports_the_first_problem_and_counts_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, 'state_dir = "/s"\n[task]\ntop_k = 0\nthreshold = 2\n')
    assert len(check_config(path)[1]) == 2
    with pytest.raises(ConfigError, match=r"task.top_k is 0 .*\(and 1 more; run 'edge config check"):
        load_config(path)


def test_a_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(tmp_path / "none.toml")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "a.pub").write_text("k")
    path = write(
        tmp_path, 'state_dir = "state"\n[mqtt]\nurl = "mqtt://b"\n[updates]\ntrust = ["keys/a.pub"]\n'
    )
    config = load_config(path)
    assert config.values["state_dir"] == str(tmp_path / "state")
    assert config.values["updates.trust"] == [str(tmp_path / "keys" / "a.pub")]
    assert config.warnings == ()


def test_missing_referenced_files_warn_and_fail_only_with_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, 'state_dir = "s"\n[mqtt]\nurl = "mqtts://b"\nca = "ca.crt"\n')
    assert main(["config", "check", str(path)]) == 0
    assert "warning: mqtt.ca" in capsys.readouterr().err
    assert main(["config", "check", "--strict", str(path)]) == 1
    assert "error: mqtt.ca" in capsys.readouterr().err


def test_a_device_id_discovery_would_rename_is_a_warning(tmp_path: Path) -> None:
    text = 'state_dir = "s"\n[mqtt]\nurl = "mqtt://b"\ndevice_id = "kitchen.cam"\n'
    text += "[homeassistant]\ndiscovery = true\n"
    config, errors = check_config(write(tmp_path, text))
    assert errors == [] and config is not None
    assert any("'edge_kitchen_cam'" in w and "mqtt.device_id 'kitchen.cam'" in w for w in config.warnings)
    config, _ = check_config(write(tmp_path, text.replace("kitchen.cam", "Kitchen-Cam")))
    assert config is not None and config.warnings == ()


def run_parser() -> argparse.ArgumentParser:
    """A stand-in for edge run's parser (same dests and types), so these tests check edge.config alone."""
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?")
    parser.add_argument("inputs", nargs="*", default=[])
    parser.add_argument("--config")
    parser.add_argument("--profile")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--resize")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--mqtt")
    parser.add_argument("--device-id")
    parser.add_argument("--ha-label", action="append")
    parser.add_argument("--trust", action="append", type=Path)
    return parser


def test_flags_override_the_file_and_the_file_overrides_the_profile(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'profile = "raspberry-pi-zero-2w"\nstate_dir = "state"\n[task]\ntop_k = 2\n'
        '[mqtt]\nurl = "mqtt://broker"\ndevice_id = "cam-1"\n[homeassistant]\ndiscovery = true\n'
        'labels = ["person"]\n[updates]\ntrust = ["a.pub", "b.pub"]\n',
    )
    parser = run_parser()
    parser.add_argument("--ha-discovery", action="store_true")
    args = parser.parse_args(["--config", str(path), "--device-id", "cam-cli", "--backend", "tflite-runtime"])
    apply_config(args, parser, args.config)
    assert args.device_id == "cam-cli" and args.backend == "tflite-runtime"  # flags win
    assert args.top_k == 2 and args.mqtt == "mqtt://broker" and args.ha_discovery is True  # from the file
    assert args.state_dir == tmp_path / "state" and isinstance(args.state_dir, Path)  # argparse type applied
    assert args.trust == [tmp_path / "a.pub", tmp_path / "b.pub"] and args.ha_label == ["person"]
    assert args.threads == load_profile("raspberry-pi-zero-2w").threads == 3  # from the profile
    assert args.resize is None and args.model is None  # the model decides how its images are fitted


def test_a_profile_flag_wins_over_the_file_profile_and_threads_flag_over_both(tmp_path: Path) -> None:
    path = write(tmp_path, 'profile = "raspberry-pi-zero-2w"\nstate_dir = "s"\n')
    parser = run_parser()
    args = parser.parse_args(["--config", str(path), "--profile", "raspberry-pi-4"])
    apply_config(args, parser, path)
    assert (args.profile, args.threads) == ("raspberry-pi-4", 4)
    args = parser.parse_args(["--config", str(path), "--threads", "1"])
    apply_config(args, parser, path)
    assert (args.profile, args.threads) == ("raspberry-pi-zero-2w", 1)


def test_profile_none_on_the_command_line_or_in_the_file_applies_no_profile(tmp_path: Path) -> None:
    path = write(tmp_path, 'profile = "raspberry-pi-zero-2w"\nstate_dir = "s"\n')
    parser = run_parser()
    args = parser.parse_args(["--config", str(path), "--profile", "none"])
    apply_config(args, parser, path)
    assert (args.profile, args.threads, args.resize) == ("none", None, None)
    path = write(tmp_path, 'profile = "none"\nstate_dir = "s"\n')
    args = parser.parse_args(["--config", str(path)])
    apply_config(args, parser, path)
    assert (args.profile, args.threads) == ("none", None)


def test_apply_profile_gives_edge_convert_the_recommended_mode_and_io_unless_given() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="float32")
    parser.add_argument("--io", dest="io_type", default="uint8")
    args = apply_profile(parser.parse_args([]), parser, "coral-usb")
    assert (args.mode, args.io_type) == ("edgetpu", "uint8") and not hasattr(args, "threads")
    args = apply_profile(parser.parse_args(["--mode", "int8"]), parser, "generic-x86_64")
    assert (args.mode, args.io_type) == ("int8", "float")


def test_apply_profile_alone_fills_only_unset_options() -> None:
    parser = run_parser()
    args = parser.parse_args(["--profile", "generic-x86_64", "--resize", "crop"])
    apply_profile(args, parser, args.profile)
    assert args.threads == load_profile("generic-x86_64").resolved_threads() and args.resize == "crop"


def test_a_key_edge_run_cannot_take_is_an_error_not_silently_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, 'state_dir = "s"\n[input]\nurl = "http://cam/snap.jpg"\ninterval = 2\n')
    parser = run_parser()
    with pytest.raises(
        ConfigError, match="input.url is 'http://cam/snap.jpg' but this 'edge run' has no option"
    ):
        apply_config(parser.parse_args([]), parser, path)


def real_run_parser() -> argparse.ArgumentParser:
    from edge.cli.commands import run

    parser = argparse.ArgumentParser(prog="edge run")
    run.add_arguments(parser)
    return parser


def test_the_runtime_profile_and_backend_names_agree_with_edge_run() -> None:
    from edge.backends import backend_names

    assert list(BACKENDS) == ["auto", *backend_names()]
    dests = {action.dest for action in real_run_parser()._actions}
    for dest in (
        "model",
        "inputs",
        "profile",
        "config",
        "watch",
        "url",
        "interval",
        "task",
        "labels",
        "top_k",
        "threshold",
        "resize",
        "mean",
        "std",
        "backend",
        "threads",
        "delegate",
        "device",
        "require_accelerator",
        "json",
        "output",
    ):
        assert dest in dests, dest


def test_every_config_key_is_an_option_of_the_real_edge_run(tmp_path: Path) -> None:
    parser = real_run_parser()
    dests = {action.dest for action in parser._actions} | set(parser._defaults)
    assert [key.name for key in KEYS if key.dest not in dests] == []
    args = parser.parse_args(["--config", str(EXAMPLE), "--device-id", "cli_cam"])
    apply_config(args, parser, args.config)
    assert args.device_id == "cli_cam" and args.mqtt.startswith("mqtts://kitchen_cam:")
    assert args.ha_label == ["person", "cat"] and args.trust == ["/etc/edge/signing.pub"]
    assert (args.threads, args.delegate, args.resize) == (4, "none", None)  # from raspberry-pi-4


def test_edge_run_takes_its_settings_from_the_config_file_and_flags_win(
    tmp_path: Path, assets: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        f'profile = "raspberry-pi-4"\n[model]\npath = "{assets.digits_package}"\n'
        f'[input]\npaths = ["{assets.digit_images}"]\n[task]\ntop_k = 1\n[output]\njson = true\n',
    )
    assert main(["config", "check", "--strict", str(path)]) == 0
    assert main(["run", "--config", str(path)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(records) == len(list(assets.digit_images.glob("*.png"))) > 0
    assert all(len(r["classes"]) == 1 for r in records)
    right = sum(r["classes"][0]["label"] == Path(r["input"]).stem.split("_")[1] for r in records)
    assert right / len(records) >= 0.9
    assert main(["run", "--config", str(path), "--top-k", "3"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert records and all(len(r["classes"]) == 3 for r in records)
