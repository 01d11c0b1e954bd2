"""The broker options: one URL parser (edge.broker) that the config file, every command and cloud_sync
share, the same ``--mqtt``/``--mqtt-version``/TLS flags on every MQTT command, and the core never importing
the CLI."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from edge.broker import BrokerSettings, BrokerUrlError, parse_broker_url, tls_problems
from edge.cli import command_modules, main
from edge.config import load_config
from edge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "user", "password"),
    [
        ("mqtt://h", "h", 1883, False, None, None),
        ("mqtts://h", "h", 8883, True, None, None),
        ("mqtts://u:p@h:8883", "h", 8883, True, "u", "p"),
        ("mqtt://h:1884/", "h", 1884, False, None, None),  # a trailing slash is harmless
        ("MQTT://Broker.Local:1", "broker.local", 1, False, None, None),
        ("mqtt://[::1]:1883", "::1", 1883, False, None, None),
        ("mqtts://[fe80::1]", "fe80::1", 8883, True, None, None),
        ("mqtt://u:p@ss@h", "h", 1883, False, "u", "p@ss"),  # the password ends at the last @
        ("mqtt://u:p:a:ss@h:2", "h", 2, False, "u", "p:a:ss"),  # the user ends at the first :
        ("mqtt://u%3Ax:p%40ss%3A@h", "h", 1883, False, "u:x", "p@ss:"),  # percent-encoded
        ("mqtt://only-user@h", "h", 1883, False, "only-user", None),
    ],
)
def test_broker_urls_that_parse(
    url: str, host: str, port: int, tls: bool, user: str | None, password: str | None
) -> None:
    s = parse_broker_url(url)
    assert (s.host, s.port, s.tls, s.username, s.password) == (host, port, tls, user, password)
    assert s.version == "5" and (password is None or password not in s.url)  # safe to log
    assert parse_broker_url(s.url).host == host  # the printable URL parses back (IPv6 in brackets)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # No scheme: never guessed (the scheme decides plain TCP or TLS), the URL to write is named.
        ("kitchen:cam", "broker URL 'kitchen:cam' is not valid (no scheme, and 'cam' is not a port number); "
                        "write mqtt://kitchen (port 1883) or mqtt://kitchen:PORT"),
        ("h:1884", "broker URL 'h:1884' is not valid (no scheme); "
                   "write mqtt://h:1884 (or mqtts://h:1884 for TLS)"),
        ("kitchen", "(no scheme); write mqtt://kitchen (or mqtts://kitchen for TLS)"),
        ("[::1]:1883", "write mqtt://[::1]:1883"),
        ("", "broker URL '' is not valid (it is empty)"),
        ("http://broker", "broker URL 'http://broker' is not valid; use mqtt://[user:pass@]host[:port] or mqtts://"),
        ("mqtt://kitchen:cam", "(port 'cam' is not a number)"),
        ("mqtt://h:0", "(port 0 is not from 1 to 65535)"),
        ("mqtt://h:65536", "(port 65536 is not from 1 to 65535)"),
        ("mqtt://h:", "(the port after ':' is empty)"),
        ("mqtt://:1883", "(no host)"),
        ("mqtt://::1", "(an IPv6 host needs brackets); write e.g. mqtt://[::1]:1883"),
        ("mqtt://[::1", "(an IPv6 host needs both brackets)"),
        ("mqtt://h/edge", "(MQTT has no path or query, remove '/edge')"),
        ("mqtt://h?x=1", "remove '?x=1'"),
    ],
)
def test_broker_urls_that_do_not_parse_say_what_to_write(url: str, expected: str) -> None:
    with pytest.raises(BrokerUrlError) as caught:
        parse_broker_url(url)
    message = str(caught.value)
    assert expected in message and "\n" not in message
    assert isinstance(caught.value, ConfigError)  # the CLI prints it as one line, exit 2


def test_tls_files_rules_name_the_options_as_written() -> None:
    with pytest.raises(ConfigError, match=r"^--ca is set but --mqtt is 'mqtt://h'; TLS files need an mqtts://"):
        parse_broker_url("mqtt://h", ca="ca.pem")
    with pytest.raises(ConfigError, match=r"^--cert is 'c.pem' without --key; a client certificate needs bo"):
        parse_broker_url("mqtts://h", cert="c.pem")
    with pytest.raises(ConfigError, match=r"^--key is 'k.pem' without --cert"):
        parse_broker_url("mqtts://h", key="k.pem")
    s = parse_broker_url("mqtts://h", ca="ca.pem", cert="c.pem", key="k.pem", version="3.1.1")
    assert (s.ca, s.cert, s.key, s.version) == ("ca.pem", "c.pem", "k.pem", "3.1.1")
    assert tls_problems(True, "mqtts://h", ca="ca.pem") == []
    with pytest.raises(ConfigError, match=r"--mqtt-version is '4'; use 5 or 3.1.1"):
        parse_broker_url("mqtt://h", version="4")


def test_cloud_sync_uses_the_core_parser() -> None:
    from cloud_sync import connection

    assert connection.parse_broker_url is parse_broker_url and connection.BrokerSettings is BrokerSettings


@pytest.mark.parametrize(
    "url",
    ["mqtt://h", "mqtts://u:p@h:8883", "mqtt://[::1]:1883", "mqtt://u:p@ss@h", "h:1884", "kitchen:cam",
     "mqtt://kitchen:cam", "mqtt://h:0", "mqtt://h/x", "MQTTS://h", "mqtt://::1", "http://h"],
)
def test_the_config_file_and_the_command_line_agree(url: str, tmp_path: Path) -> None:
    path = tmp_path / "device.toml"
    path.write_text(f'state_dir = "s"\n[mqtt]\nurl = "{url}"\n')
    try:
        parse_broker_url(url)
        cli_error = None
    except BrokerUrlError as exc:
        cli_error = exc
    if cli_error is None:
        assert load_config(path).values["mqtt.url"] == url
    else:
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert f"mqtt.url is {url!r}" in str(caught.value)
        assert cli_error.problem in str(caught.value)


def test_config_tls_rules_are_the_core_rules(tmp_path: Path) -> None:
    path = tmp_path / "device.toml"
    path.write_text('state_dir = "s"\n[mqtt]\nurl = "MQTTS://b"\nca = "ca.pem"\n')
    assert load_config(path).values["mqtt.ca"].endswith("ca.pem")  # the scheme is case-insensitive here too
    path.write_text('state_dir = "s"\n[mqtt]\nurl = "mqtt://b"\nkey = "k.pem"\n')
    with pytest.raises(ConfigError, match="mqtt.key is set but mqtt.url is 'mqtt://b'; TLS files need an mq"):
        load_config(path)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


def test_every_command_that_talks_mqtt_takes_the_same_broker_options() -> None:
    mqtt_commands = []
    for module in command_modules():
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        options = _options(parser)
        if "--mqtt" not in options:
            continue
        mqtt_commands.append(module.NAME)
        key = "--cert-key" if module.NAME == "push-model" else "--key"
        for flag in ("--mqtt-version", "--ca", "--cert", key):
            assert flag in options, f"edge {module.NAME} has --mqtt but not {flag}"
        version = options["--mqtt-version"]
        assert tuple(version.choices or ()) == ("5", "3.1.1") and version.default == "5", module.NAME
    assert {"run", "collect", "outbox", "push-model", "fleet", "simulate"} <= set(mqtt_commands)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fleet", "status", "--mqtt", "kitchen:cam"], "broker URL 'kitchen:cam' is not valid (no scheme"),
        (["fleet", "status", "--mqtt", "mqtt://h", "--mqtt-version", "4"], "invalid choice: '4'"),
        (["collect", "--mqtt", "h:1884", "--db", "x.sqlite"], "write mqtt://h:1884"),
        (["outbox", "--flush", "--mqtt", "mqtt://h", "--ca", "ca.pem"], "--ca is set but --mqtt is 'mqtt://h'"),
        (["simulate", "--model", "{pkg}", "--mqtt", "mqtt://h:0"], "port 0 is not from 1 to 65535"),
        (["push-model", "{pkg}", "--device", "d", "--mqtt", "mqtts://h", "--cert", "c.pem"],
         "--cert is 'c.pem' without --cert-key"),
    ],
)
def test_commands_reject_bad_broker_options_in_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = tmp_path / "m.edgepkg"
    package.write_bytes(b"not read before the options are checked")
    argv = [word.replace("{pkg}", str(package)) for word in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own choices check
        code = int(exc.code or 0)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err, err
    assert len(err.splitlines()) == 1 or "usage:" in err


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_core_never_imports_the_cli() -> None:
    """edge/config.py, edge/broker.py and the rest of the core import neither edge.cli nor cloud_sync (lazily
    inside a function either: ``ast.walk`` sees every import statement)."""
    offenders = {}
    for path in sorted((ROOT / "edge").rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative.parts[1] == "cli" or relative.name == "__main__.py":
            continue  # the CLI is the composition root
        bad = {m for m in _imports(path) if m.split(".")[0] in ("cloud_sync", "converter") or m == "edge.cli"
               or m.startswith("edge.cli.")}
        if bad:
            offenders[str(relative)] = sorted(bad)
    assert offenders == {}
    assert "edge.broker" in _imports(ROOT / "edge" / "config.py")
    assert _imports(ROOT / "edge" / "cli" / "broker_options.py") >= {"edge.broker"}


def test_importing_the_config_and_the_parser_loads_neither_the_cli_nor_paho() -> None:
    code = (
        "import sys, edge.config, edge.broker\n"
        "bad = [m for m in sys.modules if m.startswith(('edge.cli', 'paho', 'cloud_sync'))]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
