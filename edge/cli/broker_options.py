"""The argparse wiring of the broker options every MQTT command takes, defined once.

``--mqtt URL``, ``--mqtt-version 5|3.1.1``, ``--ca``, ``--cert``, ``--key`` mean the same in ``edge run``,
``edge collect``, ``edge outbox --flush``, ``edge push-model``, ``edge fleet status`` and ``edge simulate``
(``edge push-model`` names the TLS client key ``--cert-key``: its ``--key`` is the signing key). What the
values mean (the URL grammar, the TLS-file rules, the versions) is the core's: ``edge.broker``; this module
only adds the flags and hands their values to it. The commands that take ``args`` use
``broker_settings(args)``; ``edge run``, whose flags become an ``edge.settings.MqttSettings``, uses
``broker_from_settings``. Both return ``BrokerSettings`` that carry the protocol version, so a
``MqttConnection`` made from them speaks the version the user asked for.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

# The parser (edge.broker) is imported where a URL is parsed: every edge run adds these flags, few parse one.
from edge.settings import MQTT_VERSIONS, URL_HELP

if TYPE_CHECKING:
    from edge.broker import BrokerSettings
    from edge.settings import MqttSettings

PUSH_KEY_FLAG = "--cert-key"


def add_broker_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    url_help: str = URL_HELP,
    required: bool = False,
    key_flag: str = "--key",
) -> None:
    """Add ``--mqtt``, ``--mqtt-version`` and the TLS files (client key as ``key_flag``) to ``parser``."""
    parser.add_argument("--mqtt", required=required, metavar="URL", help=url_help)
    parser.add_argument(
        "--mqtt-version",
        choices=MQTT_VERSIONS,
        default=MQTT_VERSIONS[0],
        help=f"MQTT protocol version (default {MQTT_VERSIONS[0]}; 3.1.1 for brokers without MQTT 5)",
    )
    parser.add_argument("--ca", help="CA certificate (PEM) that signed the broker's certificate (mqtts://)")
    parser.add_argument("--cert", help=f"client certificate (PEM) for brokers requiring one, with {key_flag}")
    parser.add_argument(key_flag, help="private key (PEM) of --cert")


def broker_settings(args: argparse.Namespace, url: str | None = None) -> BrokerSettings:
    """The checked broker settings of ``args`` (``url`` instead of ``--mqtt`` when given)."""
    from edge.broker import CLI_NAMES, Names, parse_broker_url

    push = hasattr(args, "cert_key")
    key = args.cert_key if push else args.key
    names = Names(key=PUSH_KEY_FLAG) if push else CLI_NAMES
    return parse_broker_url(
        url or args.mqtt, ca=args.ca, cert=args.cert, key=key, version=args.mqtt_version, names=names
    )


def broker_from_settings(mqtt: MqttSettings) -> BrokerSettings:
    """The checked broker settings of ``edge run``'s ``mqtt`` (errors name ``--ca``/``--cert``/``--key``)."""
    from edge.broker import parse_broker_url

    return parse_broker_url(mqtt.url, ca=mqtt.ca, cert=mqtt.cert, key=mqtt.key, version=mqtt.version)
