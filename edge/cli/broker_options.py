"""Broker options of every MQTT command: ``--mqtt``, ``--mqtt-version``, ``--ca``, ``--cert``, ``--key``.

``edge push-model`` names the TLS client key ``--cert-key`` (its ``--key`` is the signing key). The
commands that take ``args`` use ``broker_settings(args)``; ``edge run``, whose flags become an
``edge.settings.MqttSettings``, uses ``broker_from_settings``. The shared constants live in ``edge.settings``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from edge.settings import MQTT_VERSIONS, URL_HELP

if TYPE_CHECKING:
    from cloud_sync.connection import BrokerSettings
    from edge.settings import MqttSettings


def add_broker_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    url_help: str = URL_HELP,
    required: bool = False,
    version: bool = True,
    key_flag: str = "--key",
) -> None:
    """Add ``--mqtt`` (and ``--mqtt-version`` when ``version``) and the TLS files to ``parser``."""
    parser.add_argument("--mqtt", required=required, metavar="URL", help=url_help)
    if version:
        parser.add_argument(
            "--mqtt-version", choices=MQTT_VERSIONS, default="5", help="MQTT protocol version (default 5)"
        )
    parser.add_argument("--ca", help="CA certificate (PEM) that signed the broker's certificate (mqtts://)")
    parser.add_argument("--cert", help="client certificate (PEM) for brokers that require one")
    parser.add_argument(key_flag, help="private key (PEM) of --cert")


def broker_settings(args: argparse.Namespace, url: str | None = None) -> BrokerSettings:
    """The checked broker settings of ``args`` (``url`` instead of ``--mqtt`` when given)."""
    from cloud_sync.connection import parse_broker_url

    key: Any = args.cert_key if hasattr(args, "cert_key") else args.key
    return parse_broker_url(url or args.mqtt, ca=args.ca, cert=args.cert, key=key)


def broker_from_settings(mqtt: MqttSettings) -> BrokerSettings:
    """The checked broker settings of ``edge run``'s ``mqtt`` (errors name ``--ca``/``--cert``/``--key``)."""
    from cloud_sync.connection import parse_broker_url

    return parse_broker_url(mqtt.url, ca=mqtt.ca, cert=mqtt.cert, key=mqtt.key)
