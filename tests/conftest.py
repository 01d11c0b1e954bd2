"""Shared fixtures: a real mosquitto broker (tests/broker.py) and test models and images (tests/assets.py)."""

pytest_plugins = ["tests.broker", "tests.assets"]
