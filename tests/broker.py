"""Mosquitto broker fixture: a real broker on a free port with its own config and data folder."""
