"""Device profiles: every shipped profile loads and is consistent; explain_profile reads the machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge.errors import ConfigError
from edge.profiles import (
    CONVERT_MODES,
    IO_TYPES,
    Profile,
    explain_profile,
    list_profiles,
    load_profile,
    profiles_dir,
)

SHIPPED = [
    "coral-dev-board",
    "coral-usb",
    "generic-aarch64",
    "generic-x86_64",
    "raspberry-pi-4",
    "raspberry-pi-5",
    "raspberry-pi-zero-2w",
]
REPO_DEVICES = Path(__file__).resolve().parents[2] / "devices"


def test_the_shipped_profiles_are_listed_and_the_example_config_is_not() -> None:
    assert list_profiles() == SHIPPED
    assert (profiles_dir() / "example-device.toml").is_file()


def test_the_package_finds_the_documented_devices_folder() -> None:
    assert profiles_dir().resolve() == REPO_DEVICES


@pytest.mark.parametrize("name", SHIPPED)
def test_every_profile_loads_with_consistent_settings(name: str) -> None:
    profile = load_profile(name)
    assert isinstance(profile, Profile) and profile.name == name and profile.description
    assert profile.convert_mode in CONVERT_MODES and profile.io_type in IO_TYPES
    assert profile.resize_mode == ""  # no longer shipped: the model decides how images fit it
    assert profile.resolved_threads() >= 1 and profile.memory_budget_mb > 0
    if profile.delegate == "edgetpu":
        assert profile.convert_mode == "edgetpu" and profile.io_type == "uint8" and profile.device
    else:
        assert profile.convert_mode != "edgetpu" and profile.device == ""


def test_coral_profiles_select_the_edge_tpu_on_their_bus() -> None:
    assert (load_profile("coral-usb").delegate, load_profile("coral-usb").device) == ("edgetpu", "usb")
    assert load_profile("coral-dev-board").device == "pci:0"
    assert load_profile("raspberry-pi-4").threads == 4
    assert (
        load_profile("raspberry-pi-zero-2w").memory_budget_mb
        < load_profile("raspberry-pi-4").memory_budget_mb
    )


def test_zero_threads_means_every_core() -> None:
    assert load_profile("generic-x86_64").threads == 0
    assert load_profile("generic-x86_64").resolved_threads() == (os.cpu_count() or 1)


def test_an_unknown_profile_names_the_allowed_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"profile 'raspberry-pi-3' does not exist; allowed: coral-dev-board"
    ):
        load_profile("raspberry-pi-3")


GOOD = dict(
    description='"x"',
    backend='"auto"',
    delegate='"none"',
    device='""',
    threads="4",
    convert_mode='"int8"',
    io_type='"uint8"',
    memory_budget_mb="256",
)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"threads": "-1"}, "threads is -1; allowed: an integer >= 0"),
        ({"threads": '"4"'}, "threads is '4'; allowed: an integer >= 0"),
        ({"backend": '"onnx"'}, "backend is 'onnx'; allowed: auto, litert"),
        (
            {"convert_mode": '"int4"'},
            "convert_mode is 'int4'; allowed: float32, float16, dynamic, int8, edgetpu",
        ),
        ({"convert_mode": '"dynamic"'}, "io_type is 'uint8'; allowed: float for convert_mode 'dynamic'"),
        (
            {"delegate": '"edgetpu"', "convert_mode": '"edgetpu"', "device": '"usb0"'},
            "device is 'usb0'; allowed: usb, usb:N, pci or pci:N",
        ),
        ({"device": '"usb"'}, 'device is \'usb\'; allowed: "" when delegate is "none"'),
        ({"colour": '"red"'}, "unknown key 'colour'"),
        ({"memory_budget_mb": None}, "key 'memory_budget_mb' is missing"),
    ],
)
def test_a_broken_profile_names_the_key_and_what_is_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict[str, str | None], message: str
) -> None:
    fields = {**GOOD, **change}
    text = "".join(f"{k} = {v}\n" for k, v in fields.items() if v is not None)
    (tmp_path / "my-board.toml").write_text(text)
    monkeypatch.setenv("EDGE_PROFILES_DIR", str(tmp_path))
    with pytest.raises(ConfigError) as info:
        load_profile("my-board")
    assert message in str(info.value) and "my-board.toml" in str(info.value)


def test_a_missing_profiles_folder_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_PROFILES_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="set EDGE_PROFILES_DIR"):
        list_profiles()


def _machine(
    root: Path,
    model: str | None = None,
    cpuinfo: str | None = None,
    usb: tuple[str, str] | None = None,
    apex: bool = False,
) -> Path:
    if model is not None:
        (root / "proc/device-tree").mkdir(parents=True)
        (root / "proc/device-tree/model").write_bytes(model.encode() + b"\0")
    if cpuinfo is not None:
        (root / "proc").mkdir(exist_ok=True)
        (root / "proc/cpuinfo").write_text(cpuinfo)
    hub = root / "sys/bus/usb/devices/usb1"
    hub.mkdir(parents=True)
    (hub / "idVendor").write_text("1d6b\n")
    (hub / "idProduct").write_text("0002\n")
    if usb:
        stick = root / "sys/bus/usb/devices/1-1.2"
        stick.mkdir()
        (stick / "idVendor").write_text(usb[0] + "\n")
        (stick / "idProduct").write_text(usb[1] + "\n")
    if apex:
        (root / "dev").mkdir()
        (root / "dev/apex_0").write_text("")
    return root


@pytest.mark.parametrize(
    ("machine", "setup", "expected"),
    [
        ("aarch64", {"model": "Raspberry Pi 4 Model B Rev 1.4"}, "raspberry-pi-4"),
        ("aarch64", {"model": "Raspberry Pi Compute Module 4 Rev 1.0"}, "raspberry-pi-4"),
        ("aarch64", {"model": "Raspberry Pi 5 Model B Rev 1.0"}, "raspberry-pi-5"),
        ("aarch64", {"model": "Raspberry Pi Zero 2 W Rev 1.0"}, "raspberry-pi-zero-2w"),
        (
            "aarch64",
            {"cpuinfo": "processor\t: 0\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.5\n"},
            "raspberry-pi-4",
        ),
        ("aarch64", {"model": "Raspberry Pi 4 Model B Rev 1.4", "usb": ("1a6e", "089a")}, "coral-usb"),
        ("aarch64", {"model": "Raspberry Pi 5 Model B Rev 1.0", "usb": ("18d1", "9302")}, "coral-usb"),
        ("aarch64", {"model": "Freescale i.MX8MQ Phanbell", "apex": True}, "coral-dev-board"),
        ("aarch64", {"model": "Raspberry Pi 3 Model B Plus Rev 1.3"}, "generic-aarch64"),
        ("aarch64", {"model": "Radxa ROCK 5B"}, "generic-aarch64"),
        ("x86_64", {}, "generic-x86_64"),
        ("x86_64", {"usb": ("18d1", "9302")}, "coral-usb"),
    ],
)
def test_explain_profile_reads_the_board_the_cpu_and_edge_tpus(
    tmp_path: Path, machine: str, setup: dict, expected: str
) -> None:
    root = _machine(tmp_path, **setup)
    assert explain_profile(root, machine)[0] == expected
    name, why = explain_profile(root, machine)
    assert name == expected and why


def test_explain_profile_on_this_machine_names_a_shipped_profile() -> None:
    assert explain_profile()[0] in SHIPPED


def test_edge_config_profiles_lists_each_profile_with_its_conversion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from edge.cli import main

    assert main(["config", "profiles"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line[2:].split()[0] for line in lines[:-1]] == SHIPPED
    assert any("coral-usb" in line and "--mode edgetpu --io uint8" in line for line in lines)
    assert lines[-1].startswith("* suggested for this machine")
    assert sum(x.startswith("* ") for x in lines) == 2
    assert main(["config", "profiles", "raspberry-pi-zero-2w"]) == 0
    assert "threads              3" in capsys.readouterr().out
    assert main(["config", "profiles", "pi-3"]) == 2
    assert "profile 'pi-3' does not exist" in capsys.readouterr().err
