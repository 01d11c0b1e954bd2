"""Fixtures for the tests against a real Home Assistant: ``ha_broker`` (the session's mosquitto) and ``hass``
(one Home Assistant per session, onboarded, with the MQTT integration on ``ha_broker``).

These tests need Home Assistant's own interpreter (its virtual environment, made by ``make test-ha`` in a
cache outside the repository): ``EDGE_HA_PYTHON=/path/to/venv/bin/python``. Without it (``make test`` runs
``pytest tests``), the modules here are not collected: ``make test-ha`` runs them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from tests.broker import Broker, _factory
from tests.homeassistant.hass import Hass, StateLog

HA_PYTHON_ENV = "EDGE_HA_PYTHON"
HA_PYTHON = os.environ.get(HA_PYTHON_ENV, "")
collect_ignore_glob = [] if HA_PYTHON else ["test_*.py"]


@pytest.fixture(scope="session")
def ha_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The session's mosquitto, shared by Home Assistant and the devices under test."""
    with _factory(tmp_path_factory.mktemp("ha-mosquitto")) as make:
        yield make()


@pytest.fixture(scope="session")
def hass(ha_broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hass]:
    """A running, onboarded Home Assistant with the MQTT integration on ``ha_broker``."""
    if not HA_PYTHON:
        pytest.fail(f"set {HA_PYTHON_ENV} to Home Assistant's python (make test-ha does)")
    ha = Hass(HA_PYTHON, tmp_path_factory.mktemp("hass"))
    try:
        ha.start()
        ha.onboard()
        ha.add_mqtt(ha_broker)
        yield ha
    except BaseException:
        print(ha.log_tail(80))
        raise
    finally:
        with contextlib.suppress(Exception):
            ha.stop()


@pytest.fixture
def hass_states(hass: Hass) -> Iterator[StateLog]:
    """Every state change of ``hass`` during one test (a new subscription: a restart ends the old one)."""
    log = StateLog(hass)
    yield log
    log.close()
