"""Shared fixtures: a real mosquitto broker (tests/broker.py) and test models and images (tests/assets.py).

Every test (and every ``edge`` process a test starts) gets a private default state folder, so nothing
lands in the user's ``~/.local/state/edge``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.broker", "tests.assets", "tests.third_party"]


@pytest.fixture(autouse=True, scope="session")
def _private_default_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    previous = os.environ.get("EDGE_STATE_DIR")
    os.environ["EDGE_STATE_DIR"] = str(tmp_path_factory.mktemp("default-state"))
    yield
    if previous is None:
        os.environ.pop("EDGE_STATE_DIR", None)
    else:
        os.environ["EDGE_STATE_DIR"] = previous
