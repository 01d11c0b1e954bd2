"""The demo behind ``make demo``: train, convert, report (later: serve over MQTT)."""
