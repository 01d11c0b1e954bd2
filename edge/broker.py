"""The broker options every MQTT part shares: one URL parser, one protocol-version check, one TLS-file rule.

``edge.config`` (the ``[mqtt]`` table), the CLI (``edge/cli/broker_options.py``: only the argparse wiring)
and ``cloud_sync`` (``MqttConnection``) all use this module, so a broker URL means the same thing in a
config file, on every command line and in the Python API. It is core: it imports nothing from
``edge.cli``, ``cloud_sync`` or paho (the paho protocol constants stay in ``cloud_sync.connection``).

A broker URL is::

    mqtt://[user[:password]@]host[:port]     plain TCP, default port 1883
    mqtts://[user[:password]@]host[:port]    TLS, default port 8883

- the scheme is case-insensitive; the host is a name, an IPv4 address or an IPv6 address in brackets
  (``mqtt://[::1]:1883``); the port is 1 to 65535; a trailing ``/`` is allowed, a path, query or
  fragment is not (MQTT over TCP has none: it is a mistake, e.g. a WebSocket URL);
- user and password are percent-decoded (``p%40ss`` is ``p@ss``). Unencoded, the user ends at the first
  ``:`` and the password at the last ``@``, so ``mqtt://u:p@ss:w@host`` is user ``u``, password
  ``p@ss:w`` (encode a ``:`` in a user name as ``%3A``);
- **a value without** ``://`` **is an error, never a guess.** ``kitchen:1884`` and ``kitchen:cam`` are not
  read as ``mqtt://kitchen:...``: the scheme is what decides between plain TCP and TLS, and guessing plain
  TCP for a broker meant to be reached over TLS would send the password in the clear (or fail later with a
  confusing handshake error). ``urllib`` reads ``kitchen:cam`` as the scheme ``kitchen`` with the path
  ``cam``, which is why the two parsers this module replaces said different unhelpful things about it; the
  error now names the value and the URL to write instead (``mqtt://kitchen:1884``; for ``kitchen:cam``,
  that ``cam`` is not a port).

The TLS files (``--ca``, ``--cert``, ``--key``; ``mqtt.ca``, ``mqtt.cert``, ``mqtt.key`` in a config file)
need an ``mqtts://`` URL, and a client certificate needs both its certificate and its key. Errors name the
option as the user wrote it (``Names``): ``--cert-key`` for ``edge push-model``, ``mqtt.key`` in a config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from edge.errors import ConfigError
from edge.settings import MQTT_VERSIONS, URL_HELP

__all__ = [
    "CLI_NAMES",
    "CONFIG_NAMES",
    "DEFAULT_PORTS",
    "MQTT_VERSIONS",
    "URL_FORM",
    "URL_HELP",
    "BrokerSettings",
    "BrokerUrlError",
    "Names",
    "check_mqtt_version",
    "check_broker_url",
    "parse_broker_url",
    "tls_problems",
]

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
URL_FORM = "mqtt://[user:pass@]host[:port] or mqtts://host[:port]"
_IPV6_FIX = "write e.g. mqtt://[::1]:1883"
_HOST_PORT = re.compile(r"^(?P<host>\[[^\]]*\]|[^:/@\[\]]+)(?::(?P<port>[^:/@]*))?$")


class BrokerUrlError(ConfigError):
    """A broker URL that cannot be used: ``problem`` says what is wrong (may be empty), ``fix`` what to do."""

    def __init__(self, url: str, problem: str = "", fix: str = "") -> None:
        self.url = url
        self.problem = problem
        self.fix = fix or f"use {URL_FORM}"
        detail = f" ({problem})" if problem else ""
        super().__init__(f"broker URL {url!r} is not valid{detail}; {self.fix}")


@dataclass(frozen=True, slots=True)
class Names:
    """How the user spelled each broker option, for the error messages."""

    url: str = "--mqtt"
    ca: str = "--ca"
    cert: str = "--cert"
    key: str = "--key"
    version: str = "--mqtt-version"


CLI_NAMES = Names()
CONFIG_NAMES = Names("mqtt.url", "mqtt.ca", "mqtt.cert", "mqtt.key", "mqtt.version")


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Where and how to connect: a parsed broker URL, the TLS files and the MQTT protocol version."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    version: str = MQTT_VERSIONS[0]

    @property
    def url(self) -> str:
        """The URL without the password (safe to log)."""
        user = f"{quote(self.username, safe='')}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class _Url:
    tls: bool
    host: str
    port: int
    username: str | None
    password: str | None


def _schemeless(url: str) -> BrokerUrlError:
    if not url.strip():
        return BrokerUrlError(url, "it is empty")
    match = _HOST_PORT.match(url.strip())
    if match is None:
        return BrokerUrlError(url, "no scheme")
    host, port = match["host"], match["port"]
    if not port:
        return BrokerUrlError(url, "no scheme", f"write mqtt://{host} (or mqtts://{host} for TLS)")
    if _is_port(port):
        return BrokerUrlError(
            url, "no scheme", f"write mqtt://{host}:{port} (or mqtts://{host}:{port} for TLS)"
        )
    return BrokerUrlError(
        url,
        f"no scheme, and {port!r} is not a port number",
        f"write mqtt://{host} (port 1883) or mqtt://{host}:PORT",
    )


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit()


def check_broker_url(url: Any) -> _Url:
    """The parts of broker URL ``url``; ``BrokerUrlError`` (a ``ConfigError``) says what is wrong with it."""
    if not isinstance(url, str):
        raise BrokerUrlError(repr(url), f"a {type(url).__name__}, not a string")
    if "://" not in url:
        raise _schemeless(url)
    try:
        parts = urlsplit(url)
    except ValueError:  # urllib's "Invalid IPv6 URL": a '[' without its ']' or the reverse
        raise BrokerUrlError(url, "an IPv6 host needs both brackets", _IPV6_FIX) from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise BrokerUrlError(url)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        extra = url[len(f"{parts.scheme}://{parts.netloc}"):]
        raise BrokerUrlError(url, f"MQTT has no path or query, remove {extra!r}")
    host_port = parts.netloc.rpartition("@")[2]
    if host_port.count(":") > 1 and "[" not in host_port:
        raise BrokerUrlError(url, "an IPv6 host needs brackets", _IPV6_FIX)
    if not parts.hostname:
        raise BrokerUrlError(url, "no host")
    port_text = host_port.rpartition("]")[2].partition(":")[2]
    if port_text == "" and host_port.endswith(":"):
        raise BrokerUrlError(url, "the port after ':' is empty")
    if port_text:
        if not _is_port(port_text):
            raise BrokerUrlError(url, f"port {port_text!r} is not a number")
        if not 1 <= int(port_text) <= 65535:
            raise BrokerUrlError(url, f"port {int(port_text)} is not from 1 to 65535")
    return _Url(
        tls=scheme == "mqtts",
        host=parts.hostname,
        port=int(port_text) if port_text else DEFAULT_PORTS[scheme],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def check_mqtt_version(value: Any, name: str = CLI_NAMES.version) -> str:
    """``"5"`` or ``"3.1.1"`` (the integer 5 of a TOML file too); ``ConfigError`` otherwise."""
    if value == 5 and not isinstance(value, bool):
        return "5"
    if isinstance(value, str) and value in MQTT_VERSIONS:
        return value
    raise ConfigError(f"{name} is {value!r}; use {' or '.join(MQTT_VERSIONS)}")


def tls_problems(
    tls: bool, url: str, *, ca: Any = None, cert: Any = None, key: Any = None, names: Names = CLI_NAMES
) -> list[str]:
    """What is wrong with the TLS files given beside broker URL ``url`` (empty: nothing)."""
    problems = []
    if not tls:
        for name, value in ((names.ca, ca), (names.cert, cert), (names.key, key)):
            if value:
                problems.append(f"{name} is set but {names.url} is {url!r}; TLS files need an mqtts:// URL")
                break
    if bool(cert) != bool(key):
        given, value, other = (names.cert, cert, names.key) if cert else (names.key, key, names.cert)
        problems.append(f"{given} is {value!r} without {other}; a client certificate needs both")
    return problems


def parse_broker_url(
    url: str,
    *,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    version: str = MQTT_VERSIONS[0],
    names: Names = CLI_NAMES,
) -> BrokerSettings:
    """The checked ``BrokerSettings`` of ``url``, its TLS files and protocol ``version``.

    Raises ``ConfigError`` (``BrokerUrlError`` for the URL itself) in one line naming the value.
    """
    parts = check_broker_url(url)
    problems = tls_problems(parts.tls, url, ca=ca, cert=cert, key=key, names=names)
    if problems:
        raise ConfigError(problems[0])
    return BrokerSettings(
        host=parts.host,
        port=parts.port,
        tls=parts.tls,
        username=parts.username,
        password=parts.password,
        ca=ca,
        cert=cert,
        key=key,
        version=check_mqtt_version(version, names.version),
    )
